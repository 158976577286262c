"""UI routes through the ASGI app: demo EHR plumbing, explanation pages, feedback."""

from __future__ import annotations

import html as html_lib
import re
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
from starlette.applications import Starlette

from models.metadata import MetricValue
from models.who_cvd import WhoCvdInputs, who_cvd_risk
from serving.demo_issuer import DEMO_ISSUER
from serving.fhir_in import extract
from serving.prefetch import TEMPLATES
from serving.runtime import Runtime
from serving.ui import demo, links
from tests.ncd_fixtures import who_comparison, with_details
from tests.serving.ui.ui_fixtures import demo_app, request

UI = Path(__file__).resolve().parents[3] / "serving" / "ui"


@pytest.fixture(scope="module")
def app_rt(
    ui_store_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Starlette, Runtime]]:
    with demo_app(ui_store_home, tmp_path_factory.mktemp("ui-rt")) as pair:
        yield pair


def _signed_params(link: str) -> dict[str, str]:
    query = dict(parse_qsl(link.partition("?")[2]))
    return {"exp": query["exp"], "sig": query["sig"]}


def _token(app: Starlette, path: str) -> dict[str, str]:
    r = request(app, "POST", "/ui/api/demo/token", json={"aud": f"http://testserver{path}"})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def _card_for(
    app: Starlette,
    patient_id: str,
    lang: str = "en",
    edit: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run the demo EHR's patient-view flow over HTTP; returns the CVD card.

    ``edit`` may change the prefetch before the call (e.g. a value with more digits).
    """
    found = request(app, "GET", "/cds-services", headers=_token(app, "/cds-services"))
    assert found.status_code == 200, found.text
    service = next(s for s in found.json()["services"] if s["id"] == "ncd-cvd-risk")
    pf = request(
        app,
        "POST",
        "/ui/api/demo/prefetch",
        json={"patientId": patient_id, "templates": service["prefetch"]},
    ).json()["prefetch"]
    if edit is not None:
        edit(pf)
    path = "/cds-services/ncd-cvd-risk"
    body = {
        "hook": "patient-view",
        "hookInstance": "b8a1a6f4-4a0e-4a43-9b65-0d5d3a1e5d11",
        "context": {"userId": "Practitioner/demo", "patientId": patient_id},
        "prefetch": pf,
    }
    r = request(
        app, "POST", path, json=body, headers={**_token(app, path), "Accept-Language": lang}
    )
    assert r.status_code == 200, r.text
    cards: list[dict[str, Any]] = r.json()["cards"]
    return cards[0] if cards else {}


def test_demo_fhir_answers_the_advertised_prefetch() -> None:
    today = date(2026, 11, 25)
    p = demo.patient("demo-01")
    found = extract(demo.prefetch(p, TEMPLATES, today), today)
    assert found.values["sbp"] == 165
    assert found.values["total_chol"] == pytest.approx(6.4)
    assert found.values["diabetes"] == 1
    assert found.values["smoking"] == 0
    assert found.values["age"] == 58
    assert found.dates["sbp"] == date(2026, 11, 4)
    assert found.values["dbp"] == 98
    assert found.values["bp_treated"] == 1  # amlodipine, an active MedicationStatement
    assert found.sources["bp_treated"] == "MedicationStatement/demo-01-med-0"
    no_lab = extract(demo.prefetch(demo.patient("demo-04"), TEMPLATES, today), today)
    assert "total_chol" not in no_lab.values
    assert no_lab.values["bp_treated"] == 0  # both medication searches answered, no drug
    other = demo.search(p, "Observation?patient=demo-02&code=http://loinc.org|8480-6", today)
    assert other is not None
    assert other["total"] == 0
    assert demo.search(p, "Patient/demo-02", today) is None
    wrong_system = demo.search(p, "Observation?patient=demo-01&code=http://x.org|8480-6", today)
    assert wrong_system is not None
    assert wrong_system["total"] == 0


def test_demo_flow_over_http_stores_page_feedback(app_rt: tuple[Starlette, Runtime]) -> None:
    app, runtime = app_rt
    card = _card_for(app, "demo-01")
    assert card["indicator"] in {"warning", "critical"}
    link = card["links"][0]["url"]
    assert link.startswith("http://testserver/ui/explain/")
    page = request(app, "GET", link.removeprefix("http://testserver"))
    assert page.status_code == 200
    assert "script-src 'self'" in page.headers["content-security-policy"]
    html = page.text
    assert '<html lang="en">' in html
    assert 'id="patient-cell"' in html
    assert "cvd-risk" in html
    assert "1.0.0" in html
    # The headline's WHO chart number is the outlined cell (55-59, 160-179, 6-6.9), the
    # number a clinician reads off the printed chart; the equation at the exact values
    # is shown under it, named as such.
    who = re.search(r'id="who-risk">(\d+)%', html)
    assert who is not None

    def khm_lab(age: float, sbp: float, total_chol: float) -> int:
        # The patient is a non-smoking diabetic woman; Cambodia's lab chart.
        inputs = WhoCvdInputs(
            sex="female", age=age, smoking=False, sbp=sbp, total_chol=total_chol, diabetes=True
        )
        return who_cvd_risk(inputs, "lab", region="A05GBDR_014_SEA", country="KHM").percent

    assert int(who.group(1)) == khm_lab(57.5, 170, 6.5)
    assert f"exact values: {khm_lab(58, 165, 6.4)}%</p>" in html
    # What-ifs are the equation at the target with the other exact values, and say so
    # (the headline above them is a chart cell).
    assert f"If systolic BP were 130 mmHg: WHO 2019 equation {khm_lab(58, 130, 6.4)}% (" in html
    assert "WHO risk" not in html
    card_page = request(app, "GET", "/ui/models/cvd-risk/1.0.0")
    assert card_page.status_code == 200
    assert "Automated tests only." in card_page.text  # the fixture's intended use
    assert request(app, "GET", "/ui/models/cvd-risk/9.9.9").status_code == 404

    uuid = card["uuid"]
    signed = _signed_params(link)  # the page posts its own link's exp and sig
    unsigned = request(app, "POST", "/ui/api/feedback", json={"card": uuid, "agree": True})
    assert unsigned.status_code == 403
    refused = request(
        app, "POST", "/ui/api/feedback", json={"card": uuid, "agree": False, **signed}
    )
    assert refused.status_code == 400
    assert refused.json()["error"] == "reason-required"
    other = _signed_params(links.signer(runtime).sign("/ui/explain/" + "0" * 32))
    unknown = request(
        app, "POST", "/ui/api/feedback", json={"card": "0" * 32, "agree": True, **other}
    )
    assert unknown.status_code == 404
    ok = request(
        app,
        "POST",
        "/ui/api/feedback",
        json={
            "card": uuid,
            "agree": False,
            "reason": "BP was measured once, after exertion",
            **signed,
        },
    )
    assert ok.status_code == 200, ok.text
    assert runtime.audit is not None
    stored = runtime.audit.feedback(card_uuid=uuid)  # type: ignore[attr-defined]
    assert len(stored) == 1
    assert stored[0].outcome == "overridden"
    assert stored[0].service_id == "ncd-cvd-risk"
    assert stored[0].comment == "BP was measured once, after exertion"
    assert stored[0].request_id is not None  # linked to the audited CDS request


@pytest.mark.parametrize(("lang", "chart_word"), [("en", "WHO chart"), ("km", "តារាង WHO")])
def test_card_who_chart_number_is_the_outlined_cell(
    app_rt: tuple[Starlette, Runtime], lang: str, chart_word: str
) -> None:
    """QA's demo-02 case: at Kim Dara's exact values (male 63, smoker, SBP 178, total
    cholesterol 7.1, no diabetes) the WHO 2019 equation gives 25 %; his printed chart
    cell (60-64, 160-179, >= 7) shows 23. "WHO chart" on the card and the page is the
    cell; 25 % appears only as the equation at his exact values."""
    app, _ = app_rt
    card = _card_for(app, "demo-02", lang=lang)
    exact = who_cvd_risk(
        WhoCvdInputs(sex="male", age=63, smoking=True, sbp=178, total_chol=7.1, diabetes=False),
        "lab",
        region="A05GBDR_014_SEA",
        country="KHM",
    )
    html = request(app, "GET", card["links"][0]["url"].removeprefix("http://testserver")).text
    outlined = re.search(r'id="patient-cell"[^>]*>(\d+)</td>', html)
    assert outlined is not None
    cell = int(outlined.group(1))
    assert (cell, exact.percent) == (23, 25)  # the two numbers QA saw side by side
    assert re.search(f"{chart_word}[:៖] {cell}% \\(20-<30%\\)$", card["summary"])
    assert len(card["summary"]) < 140
    headline = re.search(r'id="who-risk">(\d+)%', html)
    assert headline is not None
    assert int(headline.group(1)) == cell
    assert f"{exact.percent}%" not in card["summary"]
    exact_label = {
        "en": "WHO 2019 equation at this patient's exact values: ",
        "km": "សមីការ WHO ឆ្នាំ 2019 តាមតម្លៃជាក់លាក់របស់អ្នកជំងឺនេះ៖ ",
    }[lang]
    assert f"{exact_label}{exact.percent}%" in card["detail"]
    page_exact = re.search(r'id="who-exact">([^<]*)</p>', html)
    assert page_exact is not None
    assert html_lib.unescape(page_exact.group(1)) == f"{exact_label}{exact.percent}%"


def test_explanation_in_khmer_and_unknown_card(app_rt: tuple[Starlette, Runtime]) -> None:
    app, runtime = app_rt
    card = _card_for(app, "demo-02", lang="km")
    assert "ហានិភ័យ" in card["summary"]
    link = card["links"][0]["url"]
    assert link.endswith("&lang=km")  # the page opens in the card's language
    path = link.removeprefix("http://testserver").removesuffix("&lang=km")
    html = request(app, "GET", path, headers={"Accept-Language": "km-KH,km;q=0.9"}).text
    assert '<html lang="km">' in html
    assert "ការពន្យល់" in html
    assert " pp" not in html  # percentage points in words
    assert "ប្រសិនបើសម្ពាធឈាមស៊ីស្តូលិក 130 mmHg៖ សមីការ WHO ឆ្នាំ 2019 " in html
    assert '<html lang="en">' in request(app, "GET", f"{path}&lang=en").text
    missing = request(app, "GET", links.signer(runtime).sign("/ui/explain/not-a-card-id-at-all"))
    assert missing.status_code == 404
    assert "expired" in missing.text
    assert request(app, "GET", path.split("?")[0]).status_code == 403


def test_demo_says_why_a_patient_got_no_estimate(app_rt: tuple[Starlette, Runtime]) -> None:
    app, runtime = app_rt
    assert runtime.config.no_advice_card  # the demo turns the site option on
    card = _card_for(app, "demo-07")  # no blood pressure recorded
    assert card["indicator"] == "info"
    assert card["summary"] == (
        "No 10-year heart attack or stroke risk estimate: Systolic blood pressure not recorded"
    )
    assert card["suggestions"] == []
    km = _card_for(app, "demo-07", lang="km")
    assert "សម្ពាធឈាមស៊ីស្តូលិក មិនបានកត់ត្រា" in km["summary"]
    # Clinicians read the reason in words; the raw code stays in the audit row.
    for shown in (card, km):
        assert "insufficient-data" not in shown["summary"] + shown["detail"]
    # Below the model's age range: nothing to record, so no card (not alert noise).
    assert _card_for(app, "demo-06") == {}


def test_demo_xray_needs_imaging(app_rt: tuple[Starlette, Runtime]) -> None:
    app, _ = app_rt  # no imaging configured here (the browser tests run it for real)
    r = request(app, "POST", "/ui/api/demo/xray", json={"patientId": "demo-05"})
    assert r.status_code == 404
    assert r.json()["error"] == "no-demo-xray"
    assert request(app, "POST", "/ui/api/demo/xray", json={}).status_code == 400


def test_token_endpoint_only_signs_for_this_service(app_rt: tuple[Starlette, Runtime]) -> None:
    app, _ = app_rt
    bad = request(app, "POST", "/ui/api/demo/token", json={"aud": "http://evil.example/x"})
    assert bad.status_code == 400
    assert request(app, "POST", "/ui/api/demo/token", json={}).status_code == 400


def test_demo_pages_absent_without_demo_config(ui_store_home: Path, tmp_path: Path) -> None:
    with demo_app(ui_store_home, tmp_path, demo=False) as (app, _):
        assert request(app, "GET", "/ui/ehr").status_code == 404
        assert (
            request(
                app, "POST", "/ui/api/demo/token", json={"aud": "http://testserver/cds-services"}
            ).status_code
            == 404
        )
        assert (
            request(
                app, "POST", "/ui/api/demo/prefetch", json={"patientId": "demo-01", "templates": {}}
            ).status_code
            == 404
        )


def test_ehr_page_and_static_files(app_rt: tuple[Starlette, Runtime]) -> None:
    app, _ = app_rt
    page = request(app, "GET", "/ui/ehr", headers={"Accept-Language": "km"})
    assert page.status_code == 200
    assert '<html lang="km">' in page.text
    assert "ចាន់ សុខា" in page.text
    # The chart shows the EHR's smoking status ("former smoker"), not the model's input
    # name ("Current smoker"), which read as a contradiction.
    english = request(app, "GET", "/ui/ehr").text
    assert "Smoking status" in english
    assert "Current smoker" not in english
    for path in (
        "/ui/static/ui.css",
        "/ui/static/ehr.js",
        "/ui/static/fonts/NotoSansKhmer-Regular.ttf",
    ):
        assert request(app, "GET", path).status_code == 200, path
    assert request(app, "GET", "/ui", follow_redirects=False).headers["location"] == "/ui/ehr"


def test_smart_launch(app_rt: tuple[Starlette, Runtime], monkeypatch: pytest.MonkeyPatch) -> None:
    app, runtime = app_rt
    assert request(app, "GET", "/ui/launch").status_code == 400
    # Only a FHIR server some trusted issuer lists may launch (the check used to read a
    # setting nothing set, so every iss passed).
    untrusted = "/ui/launch?iss=https://ehr.example/fhir&launch=abc"
    assert request(app, "GET", untrusted, follow_redirects=False).status_code == 403
    issuers = runtime.cds_auth.issuers.issuers  # type: ignore[union-attr]
    trusted = issuers[DEMO_ISSUER].model_copy(
        update={"fhir_servers": ("https://ehr.example/fhir",)}
    )
    monkeypatch.setitem(issuers, DEMO_ISSUER, trusted)
    r = request(
        app,
        "GET",
        "/ui/launch?iss=https://ehr.example/fhir&launch=abc&card=6f1c2d3e-aaaa-bbbb-cccc-123456789012&lang=km",
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert r.headers["location"] == "/ui/explain/6f1c2d3e-aaaa-bbbb-cccc-123456789012?lang=km"
    # The card link's signature travels through the launch to the page, which checks it.
    r = request(
        app,
        "GET",
        "/ui/launch?iss=https://ehr.example/fhir&launch=abc&card=6f1c2d3e-aaaa-bbbb-cccc-123456789012&exp=99&sig=ab",
        follow_redirects=False,
    )
    assert r.headers["location"].endswith("?exp=99&sig=ab&lang=en")
    assert request(app, "GET", r.headers["location"]).status_code == 403


def test_pages_fetch_nothing_from_outside() -> None:
    """No CDN, no web font service: every src/href/url() in templates and CSS is local."""
    for path in [*UI.glob("templates/*.html"), UI / "static" / "ui.css"]:
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", text), path
        assert not re.search(r"url\(\s*['\"]?(https?:)?//", text), path
        assert "@import" not in text
    licence = (UI / "static" / "fonts" / "OFL.txt").read_text(encoding="utf-8")
    assert "SIL Open Font License" in licence


def test_inputs_not_recorded_are_shown_on_the_explanation_page(
    app_rt: tuple[Starlette, Runtime],
) -> None:
    """demo-04 has no cholesterol: the page says so, and what the model did about it."""
    app, _ = app_rt
    card = _card_for(app, "demo-04")
    page = request(app, "GET", card["links"][0]["url"].removeprefix("http://testserver")).text
    assert 'id="missing-note"' in page
    assert "Not recorded, filled in by the model: Total cholesterol." in page
    assert "<strong>not recorded: the model filled it in</strong>" in page
    complete = _card_for(app, "demo-01")
    full_page = request(app, "GET", complete["links"][0]["url"].removeprefix("http://testserver"))
    assert 'id="missing-note"' not in full_page.text


@pytest.mark.parametrize(
    ("patient", "lang", "listed"),
    [
        ("demo-04", "en", "male, smoker. The patient's cell"),  # non-lab chart: no diabetes axis
        ("demo-04", "km", "ប្រុស, ជក់បារី។ ក្រឡា"),
        ("demo-02", "en", "male, smoker, no diabetes. The patient's cell"),
    ],
)
def test_chart_caption_lists_the_chart_the_patient_is_on(
    app_rt: tuple[Starlette, Runtime], patient: str, lang: str, listed: str
) -> None:
    """The non-lab caption ended "male, smoker, BMI." (BMI in the diabetes slot)."""
    app, _ = app_rt
    card = _card_for(app, patient, lang=lang)
    page = request(app, "GET", card["links"][0]["url"].removeprefix("http://testserver")).text
    caption = re.search(r'id="chart-caption">([^<]*)</p>', page)
    assert caption is not None
    text = html_lib.unescape(caption.group(1))
    assert listed in text, text
    assert "BMI." not in text


def test_missing_input_without_one_value_says_what_the_model_did(
    app_rt: tuple[Starlette, Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    """demo-04 (Heng Vannak, no cholesterol) on a tree model for which no single value
    reproduces a missing cholesterol: card and page say what the model did instead of
    "the model filled it in" (the diabetes card names the value it used)."""
    app, runtime = app_rt
    predictor = runtime.ncd["ncd-cvd-risk"]
    measured = {"total_chol": {"missing_in_training": 0.0, "scored_as": None}}
    changed = with_details(
        predictor.metadata,
        missing_inputs=measured,
        who_comparison=who_comparison(),  # the model's estimate is shown
    )
    monkeypatch.setattr(predictor, "metadata", changed)
    card = _card_for(app, "demo-04")
    said = "not recorded: no single value stands in for it; the model took its commonest branch"
    assert said in card["detail"]
    page = request(app, "GET", card["links"][0]["url"].removeprefix("http://testserver")).text
    assert said in html_lib.unescape(page)


@pytest.mark.parametrize(
    ("lang", "expected"),
    [
        ("en", ["Calibration intercept: 0.021 (95% CI -0.380 to 0.255)",
                "AUROC at horizon (IPCW), WHO 2019 chart: 0.719 (95% CI 0.662 to 0.774)"]),
        ("km", ["ចំណុចប្រសព្វនៃការក្រិតតម្រូវ៖ 0,021 (CI 95% -0,380 ដល់ 0,255)",
                "AUROC នៅចុងរយៈពេល (IPCW), តារាង WHO 2019៖ 0,719"]),
    ],
)  # fmt: skip
def test_validation_metrics_are_named_in_words_with_unambiguous_intervals(
    app_rt: tuple[Starlette, Runtime],
    monkeypatch: pytest.MonkeyPatch,
    lang: str,
    expected: list[str],
) -> None:
    """The page listed 'test_calibration_intercept: 0.021 (95% CI -0.380-0.255)'."""
    app, runtime = app_rt
    predictor = runtime.ncd["ncd-cvd-risk"]
    metrics = {
        "test_calibration_intercept": MetricValue(value=0.021, ci_low=-0.380, ci_high=0.255),
        "who_test_auroc": MetricValue(value=0.719, ci_low=0.662, ci_high=0.774),
    }
    updated = predictor.metadata.model_copy(update={"metrics": metrics})
    monkeypatch.setattr(predictor, "metadata", updated)
    card = _card_for(app, "demo-02", lang=lang)
    page = request(app, "GET", card["links"][0]["url"].removeprefix("http://testserver")).text
    listed = re.findall(r"<li>([^<]*)</li>", html_lib.unescape(page))
    for line in expected:
        assert any(item.startswith(line) for item in listed), (line, listed)
    assert "test_" not in " ".join(listed)


def test_card_and_explanation_page_show_the_same_numbers(
    app_rt: tuple[Starlette, Runtime],
) -> None:
    """Cholesterol 6.95 mmol/L read 6.95 on the card but 7.0 on the page (own rounding)."""
    app, _ = app_rt

    def two_decimals(prefetch: dict[str, Any]) -> None:
        entries = prefetch["totalChol"]["entry"]
        assert entries, "no cholesterol in the demo-02 prefetch"
        for entry in entries:
            entry["resource"]["valueQuantity"]["value"] = 6.95

    card = _card_for(app, "demo-02", edit=two_decimals)
    assert "| 6.95 mmol/L |" in card["detail"], card["detail"]
    page = request(app, "GET", card["links"][0]["url"].removeprefix("http://testserver")).text
    assert "6.95 mmol/L" in page
    assert "7.0 mmol/L" not in page


def test_factor_bars_share_one_absolute_scale_and_name_their_source(
    app_rt: tuple[Starlette, Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bar's width is its points on a fixed 10-point scale (it was scaled to the
    largest factor, so a 2-point effect filled the bar); the factors say they are the
    local model's and the what-ifs that they are the WHO chart equation's."""
    app, runtime = app_rt
    predictor = runtime.ncd["ncd-cvd-risk"]
    monkeypatch.setattr(
        predictor, "metadata", with_details(predictor.metadata, who_comparison=who_comparison())
    )
    card = _card_for(app, "demo-01")
    page = request(app, "GET", card["links"][0]["url"].removeprefix("http://testserver")).text
    bars = re.findall(r'width="(\d+)" class="(?:up|down)"/></svg>\s*<span class="bar-value">'
                      r"(?:raises|lowers) risk by ([\d.]+) points", page)  # fmt: skip
    assert len(bars) > 3, bars  # every measured factor, not only the card's top 3
    assert len(card["detail"].split(" pp)")) - 1 <= 3  # the card names the largest 3
    for width, points in bars:
        assert int(width) == max(1, min(100, round(float(points) * 10))), (width, points)
    assert "Source: the local model cvd-risk" in html_lib.unescape(page)
    assert 'id="whatif-source"' in page
    assert "WHO 2019 chart equation" in page


def test_page_says_when_the_patient_is_outside_the_models_training_range(
    app_rt: tuple[Starlette, Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    """demo-01's SBP 165 above a recorded training range: no model estimate, the
    reason named; an artifact without a range says that the range is unknown."""
    app, runtime = app_rt
    predictor = runtime.ncd["ncd-cvd-risk"]
    base = with_details(predictor.metadata, who_comparison=who_comparison(), input_support=None)
    support = {"features": {"sbp": {"low": 95.0, "high": 160.0, "missing_rate": 0.0}}}
    monkeypatch.setattr(predictor, "metadata", with_details(base, input_support=support))
    card = _card_for(app, "demo-01")
    assert "The local model cannot assess" in card["detail"]
    page = request(app, "GET", card["links"][0]["url"].removeprefix("http://testserver")).text
    text = html_lib.unescape(page)
    assert 'id="support-outside"' in page
    assert 'id="ml-risk"' not in page
    assert "165 mmHg above the training range" in text
    monkeypatch.setattr(predictor, "metadata", base)
    card = _card_for(app, "demo-01")
    page = request(app, "GET", card["links"][0]["url"].removeprefix("http://testserver")).text
    assert 'id="ml-risk"' in page
    assert 'id="support-unknown"' in page


def test_a_factor_against_clinical_knowledge_is_flagged_not_hidden(
    app_rt: tuple[Starlette, Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model saying a BMI of 29.3 lowers CVD risk is shown, with a visible flag."""
    from models.ncd_predictor import Contribution

    app, runtime = app_rt
    predictor = runtime.ncd["ncd-cvd-risk"]
    monkeypatch.setattr(
        predictor, "metadata", with_details(predictor.metadata, who_comparison=who_comparison())
    )
    bmi = Contribution(feature="bmi", value=29.3, unit="kg/m2", delta_risk=-0.041, text="")
    sbp = Contribution(feature="sbp", value=165.0, unit="mm[Hg]", delta_risk=0.05, text="")
    monkeypatch.setattr(predictor, "explain", lambda row, top=3: (0.2, [bmi, sbp]))
    card = _card_for(app, "demo-01")
    page = request(app, "GET", card["links"][0]["url"].removeprefix("http://testserver")).text
    flagged = re.findall(r'<li class="unlike-clinical">\s*<span class="bar-label">([^<]*)', page)
    assert [label.strip() for label in flagged] == ["Body mass index"], flagged
    assert "Direction unlike clinical knowledge: interpret with care." in page


def test_explanation_shows_reason_code_only_behind_a_toggle(
    app_rt: tuple[Starlette, Runtime],
) -> None:
    def no_chart_inputs(prefetch: dict[str, Any]) -> None:  # neither WHO chart is usable
        prefetch["totalChol"]["entry"] = []
        prefetch["bmi"]["entry"] = []

    card = _card_for(app_rt[0], "demo-02", lang="km", edit=no_chart_inputs)
    assert "links" in card, card
    path = card["links"][0]["url"].removeprefix("http://testserver")
    html = request(app_rt[0], "GET", path).text
    who = html[html.index('id="who-risk"') :]
    sentence, toggle = who.split("</p>", 1)
    assert "សន្ទស្សន៍ម៉ាសរាងកាយ" in sentence  # the reason in words, in the page's language
    assert "bmi" not in sentence
    assert '<details class="small" id="who-reason-code">' in toggle
    assert "<code>missing:bmi</code>" in toggle


def test_monitor_subgroups_are_the_callers_tenants_only(app_rt: tuple[Starlette, Runtime]) -> None:
    from serving.audit import AuditStore

    app, runtime = app_rt
    _card_for(app, "demo-02")  # one answer for the demo EHR's tenant
    store = runtime.audit
    assert isinstance(store, AuditStore)
    tenant = store.rows()[-1].caller_tenant
    assert tenant
    _, mine = store.create_api_key(tenant, "monitor")
    _, other = store.create_api_key("another-site", "monitor")
    assert request(app, "GET", "/ui/monitor").status_code == 401
    page = request(app, "GET", "/ui/monitor", headers={"X-API-Key": mine}).text
    subgroups = page.partition("Subgroups, last 30 days")[2]
    assert "ncd-cvd-risk" in subgroups
    assert "Age: " in subgroups
    assert "Site: " not in subgroups  # a tenant sees no site breakdown
    elsewhere = request(app, "GET", "/ui/monitor", headers={"X-API-Key": other}).text
    assert "ncd-cvd-risk" not in elsewhere.partition("Subgroups, last 30 days")[2]


def test_page_feedback_is_committed_with_its_audit_row(
    app_rt: tuple[Starlette, Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The page's feedback goes through the one pipeline: its row (service
    ``ui-feedback``, outcome ``feedback``, the card's tenant and patient) is committed
    with it; when that commit fails the answer is 503 and nothing is stored."""
    app, runtime = app_rt
    assert runtime.audit is not None
    card = _card_for(app, "demo-01")
    uuid, signed = card["uuid"], _signed_params(card["links"][0]["url"])
    body = {"card": uuid, "kind": "ncd", "agree": True, "reason": "", **signed}

    async def down(row: Any) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(runtime.audit, "record_async", down)
    failed = request(app, "POST", "/ui/api/feedback", json=body)
    assert failed.status_code == 503
    monkeypatch.undo()
    assert runtime.audit.feedback(card_uuid=uuid) == []  # type: ignore[attr-defined]

    ok = request(app, "POST", "/ui/api/feedback", json=body)
    assert ok.status_code == 200, ok.text
    assert ok.json() == {"stored": True}
    rows = runtime.audit.rows(request_id=ok.headers["x-request-id"])  # type: ignore[attr-defined]
    assert [(r.service_id, r.outcome, r.caller_iss) for r in rows] == [
        ("ui-feedback", "feedback", "tonle-link")
    ]
    stored = runtime.audit.feedback(card_uuid=uuid)  # type: ignore[attr-defined]
    assert [(f.outcome, f.caller_iss) for f in stored] == [("accepted", "tonle-ui")]
    (answered,) = runtime.audit.rows(request_id=stored[0].request_id)  # type: ignore[attr-defined]
    assert (rows[0].caller_tenant, rows[0].patient_ref) == (
        answered.caller_tenant,
        answered.patient_ref,
    )
    # The page's link is the capability for that page's card only, before any look-up.
    for other in ({**body, "card": "0" * 32}, {**body, "kind": "cxr"}, {**body, "exp": "1"}):
        assert request(app, "POST", "/ui/api/feedback", json=other).status_code == 403
    assert len(runtime.audit.feedback(card_uuid="0" * 32)) == 0  # type: ignore[attr-defined]
    # Strict parsing: an unknown field or a non-boolean verdict is refused, and audited.
    for bad in ({**body, "extra": 1}, {**body, "agree": "yes"}):
        refused = request(app, "POST", "/ui/api/feedback", json=bad)
        assert refused.status_code == 400
        (row,) = runtime.audit.rows(request_id=refused.headers["x-request-id"])  # type: ignore[attr-defined]
        assert row.outcome == "refused"
