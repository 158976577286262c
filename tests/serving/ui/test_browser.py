"""The pages in real headless Chromium (Debian ``chromium``), end to end, both languages.

A real uvicorn server runs the Tonle app with real JWT auth trusting the demo issuer,
the fixture CVD model and a SQLite audit store. The browser follows the demo flow:
select a patient, cards appear, override one, open the explanation, send feedback;
the test then reads the feedback back from the audit store. Screenshots go to
``test-artifacts/ui-*.png``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from serving.runtime import Runtime

pytestmark = pytest.mark.slow

DESKTOP = {"width": 1366, "height": 768}
TABLET = {"width": 768, "height": 1024}

# Form controls and buttons without an accessible name (label, aria-label or text).
UNLABELLED = """() => [...document.querySelectorAll('input, select, textarea, button')]
  .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                && !(el.textContent || '').trim())
  .map(el => el.outerHTML.slice(0, 80))"""


def _page(browser: Any, viewport: dict[str, int], errors: list[str]) -> Any:
    page = browser.new_page(viewport=viewport)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on(
        "console",
        lambda msg: errors.append(msg.text) if msg.type == "error" else None,
    )
    page.set_default_timeout(20_000)
    return page


@pytest.mark.parametrize("lang", ["en", "km"])
def test_demo_flow_end_to_end(
    server: tuple[str, Runtime], browser: Any, artifacts_dir: Path, lang: str
) -> None:
    url, runtime = server
    errors: list[str] = []
    page = _page(browser, DESKTOP, errors)
    page.goto(f"{url}/ui/ehr?lang={lang}")
    assert page.get_attribute("html", "lang") == lang
    # Keyboard: the first Tab reaches the skip link; patients are real buttons.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"
    page.focus("button[data-patient=demo-02]")
    page.keyboard.press("Enter")
    card = page.wait_for_selector("article.card")
    assert card is not None
    assert page.get_attribute("button[data-patient=demo-02]", "aria-pressed") == "true"
    summary = page.inner_text("article.card h3.summary")
    assert ("risk" in summary) if lang == "en" else ("ហានិភ័យ" in summary)
    assert "card-critical" in (card.get_attribute("class") or "")
    page.click("article.card button.override")  # reveal the override form too
    assert page.evaluate(UNLABELLED) == []
    page.click("article.card button.override")
    page.click("#raw summary")
    assert '"hook": "patient-view"' in page.inner_text("#raw-request")
    assert "Bearer" in page.inner_text("#raw-request")
    page.screenshot(path=str(artifacts_dir / f"ui-ehr-{lang}-1366.png"), full_page=True)

    # Override the card with a coded reason: real CDS Hooks feedback, JWT-authenticated.
    card_id = card.get_attribute("data-card")
    page.click("article.card button.override")
    page.select_option("article.card select", "already-managed")
    page.click("article.card form.override-form button[type=submit]")
    expect(page.locator("article.card .feedback-status")).to_have_text(re.compile(r"\S"))
    assert runtime.audit is not None
    stored = runtime.audit.feedback(card_uuid=card_id)  # type: ignore[attr-defined]
    assert [f.outcome for f in stored] == ["overridden"]
    assert stored[0].override_reason.code == "already-managed"
    assert stored[0].caller_iss == "https://demo-ehr.tonle.example"

    # Open the explanation from the card's link, agree from the page.
    href = page.get_attribute("article.card a.card-link", "href")
    assert href is not None
    page.goto(href)
    assert page.get_attribute("html", "lang") == lang
    page.wait_for_selector("#patient-cell")
    assert page.inner_text("#model-version") == "1.0.0"
    # The bundled Khmer font is what renders Khmer text.
    if lang == "km":
        page.evaluate("document.fonts.ready")
        assert page.evaluate("document.fonts.check('16px \"Tonle Khmer\"', 'ហានិភ័យ')")
        assert page.evaluate(
            "[...document.fonts].some(f => f.family.includes('Tonle Khmer') && "
            "f.status === 'loaded')"
        )
    assert page.evaluate(UNLABELLED) == []
    page.screenshot(path=str(artifacts_dir / f"ui-explain-ncd-{lang}-1366.png"), full_page=True)
    page.check("input[name=agree][value=yes]")
    page.fill("#fb-reason", "fits the clinical picture")
    page.click("#feedback button[type=submit]")
    expect(page.locator("#fb-status")).to_have_text(re.compile(r"\S"))
    assert page.is_disabled("#feedback button[type=submit]")
    stored = runtime.audit.feedback(card_uuid=card_id)  # type: ignore[attr-defined]
    assert [f.outcome for f in stored] == ["overridden", "accepted"]
    assert stored[1].comment == "fits the clinical picture"
    assert stored[1].caller_iss == "tonle-ui"

    # The same pages on a tablet.
    tablet = _page(browser, TABLET, errors)
    tablet.goto(href)
    tablet.wait_for_selector("#patient-cell")
    width = tablet.evaluate("document.documentElement.scrollWidth")
    assert width <= TABLET["width"], f"page scrolls sideways on a tablet: {width}px"
    tablet.screenshot(path=str(artifacts_dir / f"ui-explain-ncd-{lang}-tablet.png"))
    tablet.goto(f"{url}/ui/ehr?lang={lang}")
    tablet.click("button[data-patient=demo-01]")
    tablet.wait_for_selector("article.card")
    assert tablet.evaluate("document.documentElement.scrollWidth") <= TABLET["width"]
    tablet.screenshot(path=str(artifacts_dir / f"ui-ehr-{lang}-tablet.png"))
    tablet.close()

    # No blood pressure recorded: an info card says why there is no estimate, and has
    # nothing to accept or override.
    page.goto(f"{url}/ui/ehr?lang={lang}")
    page.click("button[data-patient=demo-07]")
    info = page.wait_for_selector("article.card-info")
    assert info is not None
    assert "%" not in (info.inner_text() or "")
    assert page.locator("article.card-info button").count() == 0
    page.screenshot(path=str(artifacts_dir / f"ui-ehr-{lang}-no-advice.png"), full_page=True)
    page.close()
    assert not [e for e in errors if "favicon" not in e], errors


def test_demo_xray_reaches_the_ehr(
    server: tuple[str, Runtime], browser: Any, artifacts_dir: Path
) -> None:
    """The demo PACS sends demo-05's X-ray; patient-view then returns the cxr-triage card."""
    url, runtime = server
    errors: list[str] = []
    page = _page(browser, DESKTOP, errors)
    page.goto(f"{url}/ui/ehr?lang=km")
    page.click("button[data-patient=demo-05]")
    expect(page.locator("#chart-imaging")).to_be_visible()
    page.wait_for_selector("article.card")
    before = page.locator("article.card").count()
    page.click("#send-xray")
    expect(page.locator("article.card")).to_have_count(before + 1)
    assert "cxr-triage" in page.inner_text("#cards")  # the card's source label
    page.screenshot(path=str(artifacts_dir / "ui-ehr-xray-km-1366.png"), full_page=True)
    # Stored for the demo EHR's tenant, whose cxr-triage call found it.
    stored = runtime.imaging.store.for_patient("demo-05", tenant="demo")
    assert len(stored) == 1
    link = page.locator("article.card a.card-link[href*='/ui/explain/cxr/']")
    href = link.get_attribute("href")
    assert href is not None
    assert href.split("?")[0] == f"{url}/ui/explain/cxr/{stored[0].id}"
    page.goto(href)
    assert page.get_attribute("html", "lang") == "km"
    expect(page.locator("#cxr-scores tbody tr")).to_have_count(len(stored[0].findings))
    page.close()
    assert not [e for e in errors if "favicon" not in e], errors
