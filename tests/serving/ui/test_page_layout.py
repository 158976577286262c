"""Every page at 390, 1024 and 1440 px, in English and Khmer, in real headless Chromium.

No page scrolls sideways, axe-core finds nothing of moderate impact or above, radios sit
beside their labels, the cards come into view after a tap on a phone, one advisory line
per page, the card's data table folded away, no slanted Khmer, one number format per
language, and a model card with figures, a wide table and underscores in codes.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect
from pydantic import SecretStr

from serving.runtime import Runtime
from tests.serving.ui.ui_fixtures import axe_violations

pytestmark = pytest.mark.slow

WIDTHS = (390, 1024, 1440)
LANGS = ("en", "km")
ADVISORY = {
    "en": "Advisory only: decision support",
    "km": "សម្រាប់ជាយោបល់ប៉ុណ្ណោះ",
}


def _png(width: int, height: int) -> bytes:
    """A small grey PNG (a stand-in for a calibration plot)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    raw = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


# The parts of a model card written by training/ncd_card.py that broke the page: figures,
# the nine-column input table, a site code with underscores.
CARD = """# Model card: cvd-risk 1.0.0

Trained on sites A05GBDR_014_SEA and B11_002.

## Input features

| feature | meaning | unit | valid range | LOINC | required | missing in training \
| a missing value is scored as | explanation reference |
|---|---|---|---|---|---|---|---|---|
| `sbp_mean_of_last_three_visits` | systolic blood pressure, mean of the last three \
| mm[Hg] | 60-300 | 8480-6 | yes | 0.0 % | refused: no advice | 130 |

![calibration](calibration.png)

![decision curve](decision_curve.png)

![escape](../../../etc/passwd.png)
"""


@pytest.fixture(scope="module")
def card_figures(server: tuple[str, Runtime]) -> Iterator[Path]:
    """The fixture model's card replaced by ``CARD``, with one real and one linked figure."""
    _, runtime = server
    stored = next(s for s in runtime.models.values() if s.metadata.name == "cvd-risk")
    card_dir: Path = stored.card_dir
    md = card_dir / "model-card.md"
    before = md.read_text(encoding="utf-8") if md.exists() else None
    md.write_text(CARD, encoding="utf-8")
    (card_dir / "calibration.png").write_bytes(_png(600, 300))
    outside = card_dir.parent / "outside.png"
    outside.write_bytes(_png(10, 10))
    (card_dir / "decision_curve.png").symlink_to(outside)
    yield card_dir
    (card_dir / "decision_curve.png").unlink()
    (card_dir / "calibration.png").unlink()
    outside.unlink()
    if before is None:
        md.unlink()
    else:
        md.write_text(before, encoding="utf-8")


# Each radio / checkbox with its label text: beside it (to the left, vertically centred).
RADIO_OFFSETS = """() => [...document.querySelectorAll(
    'label input[type=radio], label input[type=checkbox]')]
  .filter(i => i.offsetParent !== null)
  .map(i => {
    const text = [...i.parentElement.childNodes]
      .find(n => n.nodeType === 3 && n.textContent.trim());
    const range = document.createRange(); range.selectNodeContents(text);
    const t = range.getClientRects()[0], r = i.getBoundingClientRect();
    const mid = (b) => (b.top + b.bottom) / 2;
    return {dy: Math.abs(mid(r) - mid(t)), gap: t.left - r.right, h: t.height};
  })"""

# Elements whose own text is Khmer and which are set in an italic (synthesised) face.
KHMER_ITALIC = """() => [...document.querySelectorAll('body *')]
  .filter(el => [...el.childNodes]
    .some(n => n.nodeType === 3 && /[\\u1780-\\u17ff]/.test(n.textContent)))
  .filter(el => getComputedStyle(el).fontStyle !== 'normal')
  .map(el => el.tagName + ': ' + el.textContent.slice(0, 40))"""


def _pages(url: str, runtime: Runtime, page: Any, lang: str) -> Iterator[str]:
    """Open every page in turn (the EHR with cards first); yield each page's name."""
    page.goto(f"{url}/ui/ehr?lang={lang}")
    page.click("button[data-patient=demo-02]")
    page.wait_for_selector("article.card")
    yield "ehr"
    href = page.get_attribute("article.card a.card-link", "href")
    page.goto(href)
    page.wait_for_selector("#patient-cell")
    yield "explain-ncd"
    page.goto(f"{url}/ui/models/cvd-risk/1.0.0?lang={lang}")
    page.wait_for_selector("#card-text .md")
    yield "model-card"
    page.goto(f"{url}/ui/models/none/0?lang={lang}")
    yield "message"
    page.goto(f"{url}/?lang={lang}")
    yield "home"
    # The operators' monitoring page (the metrics token), with the cards made above.
    token = "layout-metrics-token".ljust(40, "m")
    runtime.settings = runtime.settings.model_copy(update={"metrics_token": SecretStr(token)})
    page.set_extra_http_headers({"Authorization": f"Bearer {token}"})
    page.goto(f"{url}/ui/monitor?lang={lang}")
    page.wait_for_selector("table.data")
    yield "monitor"


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("width", WIDTHS)
def test_every_page_fits_and_passes_axe(
    server: tuple[str, Runtime],
    browser: Any,
    card_figures: Path,
    artifacts_dir: Path,
    lang: str,
    width: int,
) -> None:
    url, runtime = server
    context = browser.new_context(viewport={"width": width, "height": 800}, bypass_csp=True)
    page = context.new_page()
    page.set_default_timeout(20_000)
    problems: list[str] = []
    for name in _pages(url, runtime, page, lang):
        overflow = page.evaluate("document.scrollingElement.scrollWidth - innerWidth")
        if overflow > 0:
            problems.append(f"{name}: scrolls sideways by {overflow}px")
        problems += [f"{name}: axe {v}" for v in axe_violations(page)]
        for r in page.evaluate(RADIO_OFFSETS):
            if r["dy"] > r["h"] / 2 or r["gap"] < 0:
                problems.append(f"{name}: a radio is not beside its label {r}")
        if lang == "km":
            problems += [f"{name}: Khmer in italics: {e}" for e in page.evaluate(KHMER_ITALIC)]
        page.screenshot(path=str(artifacts_dir / f"ui-{name}-{lang}-{width}.png"), full_page=True)
    context.close()
    assert problems == [], "\n".join(problems)


def test_tapping_a_patient_on_a_phone_brings_the_cards_into_view(
    server: tuple[str, Runtime], browser: Any
) -> None:
    url, _ = server
    page = browser.new_page(viewport={"width": 390, "height": 800})
    page.goto(f"{url}/ui/ehr?lang=km")
    page.click("button[data-patient=demo-02]")
    page.wait_for_selector("article.card")
    top = page.evaluate("document.querySelector('article.card').getBoundingClientRect().top")
    assert 0 <= top < 800, f"the first card starts {top}px down"
    page.close()


def test_one_advisory_line_and_the_card_controls(server: tuple[str, Runtime], browser: Any) -> None:
    url, _ = server
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    for lang in LANGS:
        page.goto(f"{url}/ui/ehr?lang={lang}")
        page.click("button[data-patient=demo-02]")
        page.wait_for_selector("article.card")
        body = page.inner_text("body")
        assert body.count(ADVISORY[lang]) == 1, lang
        # The card's "data used" table is folded away, behind its own title.
        details = page.locator("article.card details.data-used")
        assert details.count() >= 1
        assert not details.first.evaluate("d => d.open")
        assert not details.first.locator("table").is_visible()
        # Override: no reason chosen for the clinician, a labelled comment, Escape closes.
        page.click("article.card button.override")
        select = page.locator("article.card select")
        assert select.evaluate("s => s.value") == ""
        assert select.evaluate("s => !s.checkValidity()")
        comment = page.locator("article.card form.override-form input[type=text]")
        assert comment.evaluate("c => c.labels.length") == 1
        page.keyboard.press("Escape")
        assert page.locator("article.card form.override-form").is_hidden()
        assert page.evaluate("document.activeElement.className") == "override"
        # The focus ring is at least 3:1 against white.
        color = page.evaluate("getComputedStyle(document.activeElement).outlineColor")
        assert _contrast(color, "rgb(255, 255, 255)") >= 3.0, color
    page.close()


def _contrast(a: str, b: str) -> float:
    def lum(css: str) -> float:
        rgb = [int(x) / 255 for x in re.findall(r"\d+", css)[:3]]
        lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]

    hi, lo = sorted((lum(a), lum(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_model_card_figures_and_codes(
    server: tuple[str, Runtime], browser: Any, card_figures: Path
) -> None:
    url, _ = server
    page = browser.new_page(viewport={"width": 1024, "height": 900})
    page.goto(f"{url}/ui/models/cvd-risk/1.0.0?lang=en")
    page.wait_for_selector("#card-text .md")
    page.wait_for_load_state("load")
    text = page.inner_text("#card-text")
    assert "!calibration" not in text
    assert "!decision curve" not in text
    assert "A05GBDR_014_SEA" in text
    assert "B11_002" in text
    assert page.locator("#card-text em").count() == 0
    # The real figure is served from the card's directory; the symlink and the path not.
    assert (
        page.evaluate("document.querySelector('#card-text img[alt=calibration]').naturalWidth")
        == 600
    )
    # The refused figure is named, not shown as a broken image.
    expect(page.locator("#card-text img[alt='decision curve']")).to_have_count(0)
    assert "[decision curve]" in page.inner_text("#card-text")
    # A wide table scrolls in its own keyboard-reachable box, not the page.
    assert page.locator("#card-text .table-scroll").get_attribute("tabindex") == "0"
    assert page.locator("#card-text img[alt=escape]").count() == 0
    base = f"{url}/ui/models/cvd-risk/1.0.0/figures/"
    assert page.request.get(base + "calibration.png").status == 200
    assert page.request.get(base + "decision_curve.png").status == 404  # a symlink
    assert page.request.get(base + "..%2Foutside.png").status == 404
    assert page.request.get(base + "model-card.md").status == 404
    # In Khmer the card's section headings are Khmer; what the engineer wrote stays.
    page.goto(f"{url}/ui/models/cvd-risk/1.0.0?lang=km")
    page.wait_for_selector("#card-text .md")
    text = page.inner_text("#card-text")
    assert "ទិន្នន័យបញ្ចូល" in text
    assert "កាតព័ត៌មានម៉ូដែល៖ cvd-risk 1.0.0" in text
    assert "Input features" not in text
    assert "Model card" not in text
    assert "A05GBDR_014_SEA" in text
    page.close()


def test_khmer_numbers_use_one_decimal_separator(server: tuple[str, Runtime], browser: Any) -> None:
    url, _ = server
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.goto(f"{url}/ui/ehr?lang=km")
    page.click("button[data-patient=demo-02]")
    page.wait_for_selector("article.card")
    page.goto(page.get_attribute("article.card a.card-link", "href") or "")
    page.wait_for_selector("#patient-cell")
    text = page.inner_text("main")
    assert re.search(r"\d,\d", text)  # Khmer values: decimal comma ("7,1 mmol/L")
    grid = page.inner_text(".grids")
    assert not re.search(r"\d\.\d", grid), grid  # and the chart's ranges too ("4-4,9")
    assert "SBP" not in grid
    # The WHO region is named in Khmer (Cambodia's region).
    assert "អាស៊ីអាគ្នេយ៍" in text
    assert "Southeast Asia" not in text
    # Cambodia's national recalibration by the country's Khmer name, not "KHM".
    assert page.inner_text("#who-country") == "កម្ពុជា"
    assert "KHM" not in text
    assert "TC" not in grid
    page.close()
