"""``POST /v1/imaging/cxr`` and the result routes, over HTTP through the ASGI app."""

from __future__ import annotations

import io
from datetime import date
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from fhir.resources.R4B.bundle import Bundle
from PIL import Image

from tests.serving.imaging.conftest import AppFactory, LockableAudit
from tests.serving.imaging.cxr_fixtures import dicom_bytes, radiograph
from tests.serving.imaging.results_fixtures import stored_ids
from training.cxr_synthetic_dicom import jpeg2000_lossless

DICOM = {"content-type": "application/dicom"}


def test_dicom_in_scores_thresholds_identity_heatmap(
    make_app: AppFactory, audit: LockableAudit
) -> None:
    client, state = make_app()
    data = dicom_bytes(patient_id="pat-001a", study_uid="1.2.826.0.1.7", series_uid="1.2.826.0.1.8")
    response = client.post("/v1/imaging/cxr", content=data, headers=DICOM)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["assessable"] is True
    # The identity comes from the header, identifiers exactly as stored.
    assert body["patient_ref"] == "pat-001a"
    study = body["study"]
    assert (study["study_uid"], study["series_uid"]) == ("1.2.826.0.1.7", "1.2.826.0.1.8")
    assert study["accession"] == "ACC1"
    assert study["study_date"] == date.today().strftime("%Y%m%d")
    assert study["sop_instance_uid"]
    assert body["model"] == {
        "name": "cxr-triage",
        "version": "0.1.0",
        "sha256": state.analyser.stored.metadata.sha256,
    }
    assert [f["label"] for f in body["findings"]] == state.analyser.labels
    for finding in body["findings"]:
        assert 0.0 <= finding["probability"] <= 1.0
        assert finding["threshold"] == 0.5
        assert finding["threshold_source"] == "model-version"
        assert "validation, sensitivity >= 0.90" in finding["threshold_chosen_on"]
        assert finding["flagged"] == (finding["probability"] >= 0.5)
    assert body["heatmap_url"].startswith("https://tonle.test/v1/imaging/results/")
    assert "unverified" in body["advisory"].lower()
    timings = body["timings"]
    assert timings["total_ms"] >= timings["model_ms"] > 0
    # The decode's CPU on the analysing thread: spent, and no more than its wall time.
    assert 0 < timings["decode_cpu_ms"] <= timings["decode_ms"]
    assert timings["model_batch"] == 1  # one client: a model call of its own
    assert timings["store_ms"] > 0  # the commit of the read with its row, timed after it
    # The overlay is served and is an RGB PNG of the model input size.
    png = client.get(body["heatmap_url"].removeprefix("https://tonle.test"))
    assert png.status_code == 200
    assert png.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(png.content)).size == (64, 64)
    # The plain image is the display copy of the original (240 x 256), not the model input.
    plain = Image.open(io.BytesIO(state.store.image(body["id"])))
    assert plain.mode == "L"
    assert plain.size == (240, 256)
    maps = state.store.source(body["id"]).maps()
    assert list(maps) == state.analyser.labels  # one map per label, for the reader
    # One audit row, committed before the answer, naming the model and the input hash;
    # opening the heatmap is a read of the stored result, audited too.
    row, heatmap_read = audit.rows()
    assert row.outcome == "advice"
    assert row.request_id == body["request_id"]
    assert row.model_sha256 == state.analyser.stored.metadata.sha256
    assert row.input_sha256 == body["input_sha256"]
    assert (heatmap_read.outcome, heatmap_read.service_id) == ("read", "imaging-heatmap")
    assert heatmap_read.input_sha256 == body["input_sha256"]


def test_heatmap_is_hot_where_the_image_is_bright(make_app: AppFactory) -> None:
    # The tiny model's map is the pooled image: orientation and polarity end to end.
    client, _ = make_app()
    with_box = client.post("/v1/imaging/cxr", content=dicom_bytes(), headers=DICOM).json()
    png = client.get(with_box["heatmap_url"].removeprefix("https://tonle.test")).content
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)
    redness = rgb[..., 0] - rgb[..., 2]
    row, col = np.unravel_index(int(np.argmax(redness)), redness.shape)
    # The box is in the upper right of the image (rows 1/8-1/3, columns 5/8-7/8).
    assert row < 32
    assert col > 32


def test_monochrome1_reads_like_monochrome2(make_app: AppFactory) -> None:
    client, _ = make_app()
    pixels = radiograph()
    mono2 = client.post("/v1/imaging/cxr", content=dicom_bytes(pixels), headers=DICOM).json()
    inverted = (4095 - pixels).astype(np.uint16)
    mono1 = client.post(
        "/v1/imaging/cxr",
        content=dicom_bytes(inverted, photometric="MONOCHROME1"),
        headers=DICOM,
    ).json()
    for a, b in zip(mono2["findings"], mono1["findings"], strict=True):
        assert a["probability"] == pytest.approx(b["probability"], abs=0.02)


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"view": "LL"}, "lateral-view"),
        ({"modality": "CT"}, "not-cr-dx"),
        ({"body_part": "KNEE"}, "not-chest"),
    ],
)
def test_out_of_scope_images_are_refused_with_a_reason(
    make_app: AppFactory, audit: LockableAudit, kwargs: dict[str, str], reason: str
) -> None:
    client, _ = make_app()
    response = client.post("/v1/imaging/cxr", content=dicom_bytes(**kwargs), headers=DICOM)
    assert response.status_code == 422
    assert response.json()["assessable"] is False
    assert response.json()["reason"] == reason
    assert [r.outcome for r in audit.rows()] == ["no-advice"]
    assert audit.rows()[0].reason == reason


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"not a dicom file at all", "application/dicom", 422),
        (b"\x00" * 200, "application/dicom", 422),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "image/png", 422),
        (b"GIF89a", "image/gif", 415),
        (b"", "application/dicom", 422),
    ],
)
def test_bad_bytes_get_a_4xx_reason_never_a_5xx(
    make_app: AppFactory, body: bytes, content_type: str, status: int
) -> None:
    client, _ = make_app()
    response = client.post("/v1/imaging/cxr", content=body, headers={"content-type": content_type})
    assert response.status_code == status
    assert response.json()["reason"]


def test_truncated_dicom_is_refused(make_app: AppFactory) -> None:
    client, _ = make_app()
    data = dicom_bytes()
    for cut in (132, len(data) // 2, len(data) - 7):
        response = client.post("/v1/imaging/cxr", content=data[:cut], headers=DICOM)
        assert 400 <= response.status_code < 500, (cut, response.text)


def test_oversize_body_is_413(make_app: AppFactory) -> None:
    client, _ = make_app(max_body_bytes=1000)
    response = client.post("/v1/imaging/cxr", content=dicom_bytes(), headers=DICOM)
    assert response.status_code == 413
    assert response.json()["reason"] == "too-large"


def test_no_advice_without_a_committed_audit_row(
    make_app: AppFactory, audit: LockableAudit
) -> None:
    client, state = make_app()
    audit.fail = True
    response = client.post("/v1/imaging/cxr", content=dicom_bytes(), headers=DICOM)
    assert response.status_code == 503
    assert "findings" not in response.json()
    # The unaudited read is not kept: no card or page can show it later.
    audit.fail = False
    assert state.store.for_patient("PAT-001", tenant=None) == []
    assert stored_ids(audit) == []
    assert audit.count() == 0


def test_patient_parameter_is_validated(make_app: AppFactory, audit: LockableAudit) -> None:
    client, _ = make_app()
    for bad in ("../x", "a" * 65, "Patient/1", ""):
        response = client.post(
            "/v1/imaging/cxr", params={"patient": bad}, content=dicom_bytes(), headers=DICOM
        )
        assert response.status_code == 400
        assert response.json()["reason"] == "invalid-patient"
    assert {r.outcome for r in audit.rows()} == {"no-advice"}


def test_callers_without_credentials_are_refused(
    make_app: AppFactory, audit: LockableAudit
) -> None:
    client, _ = make_app(dev=False)
    response = client.post("/v1/imaging/cxr", content=dicom_bytes(), headers=DICOM)
    assert (response.status_code, response.content) == (401, b'{"error":"unauthorized"}')
    # Counted, not given a durable audit row (anyone can send them), like every route.
    assert audit.rows() == []


class _KeyStoreDown:
    def authenticate(self, header_value: str | None) -> None:
        from serving.auth import AuthUnavailable

        raise AuthUnavailable("key store down")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/imaging/cxr"),
        ("GET", "/v1/imaging/results/0123456789abcdef0123456789abcdef"),
        ("GET", "/v1/imaging/studies?patient=P1"),
    ],
)
def test_key_store_down_is_503_not_401(
    make_app: AppFactory, audit: LockableAudit, method: str, path: str
) -> None:
    """One place decides 401 vs 503 for every route: a key store that cannot be reached
    is not the caller's fault (the imaging routes answered 401 here before)."""
    client, _ = make_app(dev=False, authenticator=_KeyStoreDown())
    response = client.request(
        method, path, content=dicom_bytes() if method == "POST" else None, headers=DICOM
    )
    assert (response.status_code, response.json()) == (503, {"error": "auth-unavailable"})
    assert audit.rows() == []


def test_imaging_not_loaded_is_503_for_callers_only(
    make_app: AppFactory, audit: LockableAudit
) -> None:
    """Authentication comes first on every route: a caller without credentials learns
    nothing (401, no row); an authenticated one gets 503, audited as an error."""
    client, state = make_app(dev=False, authenticator=_OneKey())
    state.warmed = False
    refused = client.post("/v1/imaging/cxr", content=dicom_bytes(), headers=DICOM)
    assert refused.status_code == 401
    assert audit.rows() == []
    answer = client.post("/v1/imaging/cxr", content=dicom_bytes(), headers=DICOM | _KEY)
    assert (answer.status_code, answer.json()["error"]) == (503, "imaging-unavailable")
    (row,) = audit.rows()
    assert (row.outcome, row.reason, row.caller_tenant) == ("error", "imaging-unavailable", "t1")


class _OneKey:
    def authenticate(self, key: str | None) -> Any:
        from serving.auth import AuthError

        if key != "good-key":
            raise AuthError("unknown key")
        return SimpleNamespace(iss="api-key", sub="k1", tenant="t1")


_KEY = {"x-api-key": "good-key"}


def test_result_and_fhir_routes(make_app: AppFactory) -> None:
    client, _ = make_app()
    body = client.post(
        "/v1/imaging/cxr?patient=Patient-9", content=dicom_bytes(), headers=DICOM
    ).json()
    stored = client.get(f"/v1/imaging/results/{body['id']}").json()
    assert stored["findings"] == body["findings"]
    assert stored["patient_ref"] == "Patient-9"
    fhir = client.get(f"/v1/imaging/results/{body['id']}/fhir")
    assert fhir.headers["content-type"].startswith("application/fhir+json")
    bundle = Bundle.model_validate_json(fhir.content)
    assert bundle.type == "collection"
    assert client.get("/v1/imaging/results/" + "0" * 32).status_code == 404
    assert client.get("/v1/imaging/results/..%2F..%2Fetc").status_code == 404


class _BrokenRunner:
    def __init__(self, mode: str) -> None:
        self.mode = mode

    def predict(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.mode == "raise":
            raise RuntimeError("onnxruntime failed")
        n = len(batch)
        return np.full((n, 5), np.nan, np.float32), np.zeros((n, 5, 8, 8), np.float32)


@pytest.mark.parametrize("mode", ["raise", "nan"])
@pytest.mark.parametrize("batching", [True, False])
def test_model_failure_is_no_advice_with_a_reason(
    make_app: AppFactory, audit: LockableAudit, mode: str, batching: bool
) -> None:
    client, state = make_app(adaptive_batching=batching)
    state.analyser.runner = _BrokenRunner(mode)
    if state.infer is not None:
        state.infer.runner = state.analyser.runner  # type: ignore[attr-defined]
    response = client.post("/v1/imaging/cxr", content=dicom_bytes(), headers=DICOM)
    assert response.status_code == 503
    assert response.json()["reason"] == "model-error"
    assert "findings" not in response.json()
    assert [(r.outcome, r.reason) for r in audit.rows()] == [("error", "model-error")]


class _OutOfDistributionRunner:
    """A CxrPredictor whose out-of-distribution gate refuses every image (all NaN)."""

    def predict(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = len(batch)
        return np.full((n, 5), np.nan), np.full((n, 5, 8, 8), np.nan, np.float32)


@pytest.mark.parametrize("batching", [True, False])
def test_the_models_ood_gate_refuses_before_any_score(
    make_app: AppFactory, audit: LockableAudit, batching: bool
) -> None:
    client, state = make_app(adaptive_batching=batching)
    state.analyser.runner = _OutOfDistributionRunner()
    if state.infer is not None:
        state.infer.runner = state.analyser.runner  # type: ignore[attr-defined]
    response = client.post("/v1/imaging/cxr", content=dicom_bytes(), headers=DICOM)
    assert response.status_code == 422
    body = response.json()
    assert body["reason"] == "out-of-distribution"
    assert body["detail"] == "cannot assess: unlike the images this model was trained on"
    assert "findings" not in body
    assert [(r.outcome, r.reason) for r in audit.rows()] == [("no-advice", "out-of-distribution")]


def test_jpeg2000_dicom_reads_like_the_uncompressed_one(make_app: AppFactory) -> None:
    client, _ = make_app()
    raw = dicom_bytes(radiograph())
    plain = client.post("/v1/imaging/cxr", content=raw, headers=DICOM).json()
    j2k = client.post("/v1/imaging/cxr", content=jpeg2000_lossless(raw), headers=DICOM)
    assert j2k.status_code == 200, j2k.text
    for a, b in zip(plain["findings"], j2k.json()["findings"], strict=True):
        assert a["probability"] == pytest.approx(b["probability"], abs=0.02)


def test_outcomes_are_counted_for_metrics(make_app: AppFactory, audit: LockableAudit) -> None:
    from prometheus_client import REGISTRY

    def count(outcome: str, reason: str) -> float:
        if outcome == "refused":  # refused callers: counted by route, no audit row
            labels = {"route": "/v1/imaging/cxr", "reason": reason}
            return REGISTRY.get_sample_value("tonle_refused_callers_total", labels) or 0.0
        labels = {"service": "imaging-cxr", "outcome": outcome, "reason": reason}
        return REGISTRY.get_sample_value("tonle_outcomes_total", labels) or 0.0

    before = (
        count("advice", ""),
        count("refused", "no-authenticator"),
        count("error", "audit-unavailable"),
    )
    client, _ = make_app()
    assert client.post("/v1/imaging/cxr", content=dicom_bytes(), headers=DICOM).status_code == 200
    audit.fail = True
    assert client.post("/v1/imaging/cxr", content=dicom_bytes(), headers=DICOM).status_code == 503
    audit.fail = False
    refused, _ = make_app(dev=False)
    assert refused.post("/v1/imaging/cxr", content=dicom_bytes(), headers=DICOM).status_code == 401
    after = (
        count("advice", ""),
        count("refused", "no-authenticator"),
        count("error", "audit-unavailable"),
    )
    assert [b - a for a, b in zip(before, after, strict=True)] == [1.0, 1.0, 1.0]


def test_heatmap_shows_the_likeliest_flagged_finding(make_app: AppFactory) -> None:
    from tests.serving.imaging.results_fixtures import make_finding as finding

    _, state = make_app()
    # TB 0.89 over its 0.78 threshold beats a nodule at 0.11 over a low 0.03 threshold
    # (the demo's thresholds), though the nodule's ratio to its threshold is higher.
    findings = [finding("abnormal", 0.95, 0.5), finding("tb", 0.89, 0.78)]
    findings += [finding("nodule", 0.11, 0.03), finding("effusion", 0.6, 0.8)]
    assert state.analyser._heatmap_label(findings) == "tb"
    assert state.analyser._heatmap_label(findings[:1]) == "abnormal"
