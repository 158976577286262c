"""The X-ray reader on the chest X-ray explanation page, in headless Chromium.

A real uvicorn server runs the Tonle app with the tiny CXR model; reads are stored
with their audit rows as the imaging route stores them (the original's own values as
uint16, one map per label; or, as reads stored before format 3, an 8-bit PNG copy).
The browser opens the signed page at phone, tablet and desktop widths and drives
window/level, zoom, the heatmap and the finding selector.
Screenshots go to ``test-artifacts/xray-reader-*.png``.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from playwright.sync_api import expect
from sqlalchemy import update

from models.cxr_preprocess.display import DisplayValues
from serving.audit import schema
from serving.imaging.heatmap import HeatmapSource, display_png
from serving.imaging.results import (
    ADVISORY,
    CxrFinding,
    CxrResult,
    ModelIdentity,
    StudyRef,
)
from serving.imaging.state import ImagingState
from serving.runtime import Runtime
from serving.synthetic import DEMO_NOTE
from serving.ui import links
from tests.serving.imaging.results_fixtures import store_read
from tests.serving.ui.ui_fixtures import axe_violations

pytestmark = pytest.mark.slow

LABELS = ("abnormal", "tb", "nodule", "consolidation", "effusion")
PROBABILITIES = (0.996, 0.87, 0.004, 0.31, 0.12)
WIDTHS = (390, 1024, 1440)

# A checksum of the drawn canvas (the page's CSP forbids eval; playwright's evaluate
# runs through the devtools protocol).
CANVAS_SUM = """() => { const c = document.getElementById('reader-canvas');
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let s = 0; for (let i = 0; i < d.length; i += 4) s += d[i] * 3 + d[i + 1] * 5 + d[i + 2] * 7;
  return s; }"""
OVERFLOW = "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
# What sticks out past the viewport's right edge (the message when OVERFLOW fails).
WIDE = """() => [...document.querySelectorAll('body *')]
  .filter(el => el.getBoundingClientRect().right > document.documentElement.clientWidth + 0.5)
  .map(el => el.tagName + '#' + el.id + '.' + el.className).slice(0, 8)"""
# The red value of the canvas at a point of the image (fractions of its width, height),
# at zoom 1 without pan.
SAMPLE = """(p) => { const c = document.getElementById('reader-canvas');
  const s = Number(c.dataset.scale), iw = Number(c.dataset.imageWidth);
  const ih = Number(c.dataset.imageHeight);
  const x = (c.width - iw * s) / 2 + p[0] * iw * s, y = (c.height - ih * s) / 2 + p[1] * ih * s;
  return c.getContext('2d').getImageData(Math.round(x), Math.round(y), 1, 1).data[0]; }"""
UNLABELLED = """() => [...document.querySelectorAll('input:not([hidden]), select, button')]
  .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                && !(el.textContent || '').trim())
  .map(el => el.outerHTML.slice(0, 80))"""


def _store_read(
    state: ImagingState,
    study: StudyRef,
    advisory: str | None = None,
    *,
    values: np.ndarray | None = None,
    eight_bit: bool = False,
) -> CxrResult:
    """A read stored as the imaging route stores one: display values, a map per label.

    ``values`` (uint16) replace the default original; ``eight_bit`` stores the display
    copy as an 8-bit PNG, as format 2 did.
    """
    result_id = uuid.uuid4().hex
    findings = [
        CxrFinding(
            label=label,
            probability=p,
            threshold=0.5,
            threshold_source="model-version",
            threshold_chosen_on="validation, sensitivity >= 0.90",
            flagged=p >= 0.5,
            sensitivity=0.9,
            specificity=0.74,
        )
        for label, p in zip(LABELS, PROBABILITIES, strict=True)
    ]
    result = CxrResult(
        id=result_id,
        created=datetime.now(UTC),
        model=ModelIdentity(name="cxr-triage", version="1.0.0", sha256="ab" * 32),
        findings=findings,
        flagged=[f.label for f in findings if f.flagged],
        heatmap_label="tb",
        heatmap_url=f"/v1/imaging/results/{result_id}/heatmap.png",
        site="default",
        patient_ref="demo-05",
        study=study,
        input_sha256="cd" * 32,
        **({"advisory": advisory} if advisory else {}),
    )
    # An original of 600 x 500 (rows x columns): grey levels across the whole range,
    # so every window/level preset changes what is drawn.
    yy, xx = np.mgrid[0:600, 0:500].astype(np.float32)
    original = 0.5 + 0.45 * np.sin(xx / 37.0) * np.cos(yy / 53.0)
    cams = np.zeros((len(LABELS), 8, 8), np.float32)
    for index in range(len(LABELS)):  # each label's map peaks somewhere else
        cams[index, 1 + index, 6 - index] = 5.0
    image = np.asarray(original[::8, ::8][:64, :62], dtype=np.float32)
    if eight_bit:
        kept: dict[str, Any] = {"display": display_png(original)}
    else:
        shown = (original * 65520).astype(np.uint16) if values is None else values
        kept = {"pixels": DisplayValues(shown, center=32760.0, width=65520.0)}
    source = HeatmapSource.of(image, cams[1], labels=LABELS, cams=cams, **kept)
    store_read(state, result, tenant="demo", source=source)
    return result


def _open(
    browser: Any,
    url: str,
    runtime: Runtime,
    result: CxrResult,
    width: int,
    lang: str,
    bypass_csp: bool = False,
) -> Any:
    errors: list[str] = []
    viewport = {"width": width, "height": 900}
    page = browser.new_context(viewport=viewport, bypass_csp=bypass_csp).new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.set_default_timeout(20_000)
    page.goto(f"{url}{links.signer(runtime).sign(f'/ui/explain/cxr/{result.id}')}&lang={lang}")
    expect(page.locator("#reader-view.ready")).to_have_count(1)
    page.errors = errors
    return page


def _data(page: Any, name: str) -> str:
    value: str = page.get_attribute("#reader-canvas", f"data-{name}")
    return value


@pytest.mark.parametrize("width", WIDTHS)
def test_reader_reads_as_a_film(
    server: tuple[str, Runtime], browser: Any, artifacts_dir: Path, width: int
) -> None:
    url, runtime = server
    state = runtime.imaging
    study = StudyRef(study_date="20260314", study_time="093012.5", view="PA")
    result = _store_read(state, study)
    page = _open(browser, url, runtime, result, width, "en")
    assert page.evaluate(OVERFLOW) <= 0, page.evaluate(WIDE)
    # The full display copy, not the 224 px model input.
    assert (_data(page, "image-width"), _data(page, "image-height")) == ("500", "600")
    assert page.inner_text("#study-when") == "2026-03-14 09:30"
    assert page.inner_text("#study-view") == "PA"
    assert page.inner_text("#marker-left") == "R"
    assert "standard display" in page.inner_text("#marker-note")
    # Scores on 0-100 beside their thresholds; nothing rounds to "1" or "0".
    scores = page.locator("#cxr-scores .score-value").all_inner_texts()
    assert scores == [">99", "87", "<1", "31", "12"]
    assert set(page.locator("#cxr-scores .threshold-value").all_inner_texts()) == {"50"}
    # The heatmap opens at 40 % on the shown finding's map.
    assert _data(page, "opacity") == "0.4"
    assert page.input_value("#heatmap-opacity") == "40"
    assert _data(page, "map") == "tb"
    page.screenshot(path=f"/tmp/xray-reader-{width}-default.png", full_page=True)
    # Window/level: a preset and the sliders change the drawn pixels.
    before = page.evaluate(CANVAS_SUM)
    page.select_option("#wl-preset", "lung")
    # Presets are parts of the default window, in the stored values' own units.
    assert (_data(page, "level"), _data(page, "width")) == ("21840", "38541")
    assert int(_data(page, "values")) > 256  # more grey values than an 8-bit copy
    lung = page.evaluate(CANVAS_SUM)
    assert lung != before
    page.fill("#wl-level", "50000")
    page.dispatch_event("#wl-level", "input")
    assert page.input_value("#wl-preset") == "custom"
    assert page.evaluate(CANVAS_SUM) != lung
    page.select_option("#wl-preset", "bone")
    # The finding selector switches the map drawn.
    options = page.locator("#map-label option").all_inner_texts()
    assert len(options) == len(LABELS)
    shown = page.evaluate(CANVAS_SUM)
    page.select_option("#map-label", "nodule")
    assert _data(page, "map") == "nodule"
    assert page.evaluate(CANVAS_SUM) != shown
    page.check("#heatmap-contour")
    contour = page.evaluate(CANVAS_SUM)
    assert contour != shown
    # Zoom: buttons and keyboard change the scale; fit resets it.
    scale = float(_data(page, "scale"))
    page.click("#zoom-in")
    assert _data(page, "zoom") == "1.25"
    assert float(_data(page, "scale")) == pytest.approx(scale * 1.25)
    page.focus("#reader-view")
    page.keyboard.press("+")
    assert float(_data(page, "zoom")) == pytest.approx(1.5625)
    page.keyboard.press("ArrowLeft")
    page.screenshot(path=f"/tmp/xray-reader-{width}-zoomed.png", full_page=True)
    page.keyboard.press("0")
    assert _data(page, "zoom") == "1"
    page.uncheck("#heatmap-toggle")
    assert _data(page, "opacity") == "0"
    assert page.is_disabled("#heatmap-opacity")
    assert page.evaluate(UNLABELLED) == []
    assert page.evaluate(OVERFLOW) <= 0, page.evaluate(WIDE)
    page.screenshot(path=str(artifacts_dir / f"xray-reader-en-{width}.png"), full_page=True)
    page.context.close()
    assert page.errors == []


def test_reader_in_khmer_with_dicom_orientation_and_audited_reads(
    server: tuple[str, Runtime], browser: Any, artifacts_dir: Path
) -> None:
    url, runtime = server
    state = runtime.imaging
    study = StudyRef(study_date="20260314", view="AP", laterality="U", orientation=("R", "F"))
    result = _store_read(state, study, eight_bit=True)  # a read stored before format 3
    page = _open(browser, url, runtime, result, 1024, "km")
    assert page.get_attribute("html", "lang") == "km"
    assert page.inner_text("#marker-left") == "L"  # a flipped image, as DICOM says
    assert "DICOM" in page.inner_text("#marker-note")
    assert page.inner_text("#study-when") == "2026-03-14"
    assert page.inner_text("#study-laterality") == "U"
    # Its 8-bit copy: presets on the 0-255 scale, as it was stored.
    page.select_option("#wl-preset", "lung")
    assert (_data(page, "level"), _data(page, "width")) == ("85", "150")
    assert page.locator("#map-label option").all_inner_texts()[1] == "ជំងឺរបេង"
    # Sensitivity and specificity are words in the page's language, not "Se"/"Sp".
    assert "ភាពរសើប 0,90" in page.content()
    assert "(Se " not in page.content()
    assert page.evaluate(OVERFLOW) <= 0, page.evaluate(WIDE)
    page.screenshot(path="/tmp/xray-reader-km-1024.png", full_page=True)
    page.screenshot(path=str(artifacts_dir / "xray-reader-km-1024.png"), full_page=True)
    # Feedback on the read, as on every explanation page.
    page.check("input[name=agree][value=no]")
    page.fill("#fb-reason", "heatmap points outside the lung")
    page.click("#feedback button[type=submit]")
    expect(page.locator("#feedback button[type=submit]")).to_be_disabled()
    feedback = runtime.audit.feedback(card_uuid=result.id)  # type: ignore[union-attr]
    assert [(f.service_id, f.outcome) for f in feedback] == [("cxr-triage", "overridden")]
    page.context.close()
    assert page.errors == []
    # The page and the image it loaded are reads of the stored result, each audited.
    rows = [r for r in runtime.audit.rows() if r.input_sha256 == result.input_sha256]  # type: ignore[union-attr]
    reads = {r.service_id for r in rows if r.outcome == "read"}
    assert {"ui-explain-cxr", "ui-cxr-image"} <= reads


def test_reader_routes_refuse_unsigned_and_unknown(
    server: tuple[str, Runtime], browser: Any
) -> None:
    url, runtime = server
    result = _store_read(runtime.imaging, StudyRef())
    page = browser.new_page()
    for path in ("", "/image.png", "/heatmap.png"):
        unsigned = page.request.get(f"{url}/ui/explain/cxr/{result.id}{path}")
        assert unsigned.status == 403
    unknown = links.signer(runtime).sign(f"/ui/explain/cxr/{uuid.uuid4().hex}/image.png")
    assert page.request.get(f"{url}{unknown}").status == 404
    signed = links.signer(runtime).sign(f"/ui/explain/cxr/{result.id}/image.png")
    image = page.request.get(f"{url}{signed}")
    assert image.status == 200
    assert image.headers["content-type"] == "image/png"
    page.close()


def test_a_demo_models_read_says_so_on_its_page(server: tuple[str, Runtime], browser: Any) -> None:
    url, runtime = server
    assert runtime.imaging is not None
    real = _store_read(runtime.imaging, StudyRef())
    demo = _store_read(runtime.imaging, StudyRef(), advisory=f"{DEMO_NOTE} {ADVISORY}")
    page = browser.new_page()
    shown = {}
    for read in (real, demo):
        signed = links.signer(runtime).sign(f"/ui/explain/cxr/{read.id}")
        answer = page.request.get(f"{url}{signed}")
        assert answer.status == 200
        shown[read.id] = 'id="demo-model"' in answer.text()
    page.close()
    assert shown == {real.id: False, demo.id: True}


@pytest.mark.parametrize(("width", "lang"), [(390, "km"), (1024, "en")])
def test_window_level_works_on_more_than_8_bits(
    server: tuple[str, Runtime], browser: Any, artifacts_dir: Path, width: int, lang: str
) -> None:
    """Two grey values 100 apart in 16 bits (one 8-bit level of the full window) are
    the same grey at the default window and black and white under a narrow window:
    an 8-bit copy would have merged them for good."""
    url, runtime = server
    values = np.empty((400, 300), np.uint16)
    values[:100] = np.linspace(0, 65520, 300).astype(np.uint16)  # the full range
    values[100:, :150] = 32000
    values[100:, 150:] = 32100
    assert round(32000 * 255 / 65520) == round(32100 * 255 / 65520)  # one 8-bit level
    result = _store_read(runtime.imaging, StudyRef(study_date="20260314"), values=values)
    # CSP bypassed only to inject axe-core (the reader itself runs under the page's CSP
    # in the other tests).
    page = _open(browser, url, runtime, result, width, lang, bypass_csp=True)
    assert (_data(page, "image-width"), _data(page, "image-height")) == ("300", "400")
    page.uncheck("#heatmap-toggle")
    left, right = (0.25, 0.75), (0.75, 0.75)
    assert abs(page.evaluate(SAMPLE, left) - page.evaluate(SAMPLE, right)) <= 1
    page.fill("#wl-width", "50")
    page.dispatch_event("#wl-width", "input")
    page.fill("#wl-level", "32050")
    page.dispatch_event("#wl-level", "input")
    assert (_data(page, "level"), _data(page, "width")) == ("32050", "50")
    assert page.inner_text("#wl-level-value") == "32050"
    assert page.evaluate(SAMPLE, left) == 0
    assert page.evaluate(SAMPLE, right) == 255
    # Presets differ on these values too: lung shows both mid-grey, bone both black.
    page.select_option("#wl-preset", "lung")
    lung = page.evaluate(SAMPLE, left), page.evaluate(SAMPLE, right)
    page.select_option("#wl-preset", "bone")
    bone = page.evaluate(SAMPLE, left), page.evaluate(SAMPLE, right)
    assert lung != bone
    assert page.evaluate(OVERFLOW) <= 0, page.evaluate(WIDE)
    assert axe_violations(page) == []
    page.screenshot(path=str(artifacts_dir / f"xray-reader-values-{lang}-{width}.png"))
    page.context.close()
    assert page.errors == []
    rows = [r for r in runtime.audit.rows() if r.input_sha256 == result.input_sha256]  # type: ignore[union-attr]
    assert "ui-cxr-pixels" in {r.service_id for r in rows if r.outcome == "read"}


def test_a_read_whose_copy_retention_emptied_still_opens(
    server: tuple[str, Runtime], browser: Any, artifacts_dir: Path
) -> None:
    """After TONLE_IMAGING_PIXELS_DAYS the reader draws the analysed image with the map
    and says where the full image is; the page stays usable and accessible."""
    url, runtime = server
    result = _store_read(runtime.imaging, StudyRef(view="PA"))
    copies = schema.imaging_pixels
    emptied = update(copies).where(copies.c.result_id == result.id)
    with runtime.audit.engine.begin() as connection:  # type: ignore[union-attr]
        connection.execute(emptied.values(data=None, removed=datetime.now(UTC)))
    page = _open(browser, url, runtime, result, 390, "km", bypass_csp=True)  # for axe
    assert (_data(page, "image-width"), _data(page, "image-height")) == ("62", "64")
    notice = page.inner_text("#copy-removed")
    assert "PACS" in notice
    assert "កំណត់ដោយមន្ទីរពេទ្យ" in notice  # retention set outside TONLE_IMAGING_PIXELS_DAYS
    assert page.evaluate(OVERFLOW) <= 0, page.evaluate(WIDE)
    assert axe_violations(page) == []
    page.screenshot(path=str(artifacts_dir / "xray-reader-copy-removed-km-390.png"), full_page=True)
    page.context.close()
    assert page.errors == []
