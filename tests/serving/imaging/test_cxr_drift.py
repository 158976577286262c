"""Chest X-ray drift: reads count the bins of their image statistics and scores, the
scrape turns them into PSI (``tonle_cxr_feature_psi``) and the ``psi`` alert rules apply.

The tiny model's scores follow the image's mean (``cxr_fixtures``), so the reference is
computed here without the model: image statistics exactly as serving takes them, and
``sigmoid(w * mean - 3)`` per label (the artifact has no calibration: identity).
"""

from __future__ import annotations

import re
import time
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from scipy.special import expit
from starlette.routing import Route

from models.cxr_drift import image_statistics, score_values
from models.cxr_preprocess import decode_dicom, to_model_input
from models.details import FeatureBins
from models.registry import StoredModel
from serving.metrics import current_samples
from serving.monitor.alerts import (
    AlertRule,
    Monitor,
    MonitorConfig,
    derived_text,
    imaging_reference,
)
from serving.monitor.page import build_view, monitor_page
from tests.serving.imaging.conftest import AppFactory, Client, fake_runtime
from tests.serving.imaging.cxr_fixtures import LABELS, dicom_bytes, make_cxr_artifact, radiograph
from training.distribution import rows_to_matrix, training_distribution

DICOM = {"content-type": "application/dicom"}
SERVICE = "imaging-cxr"
WEIGHTS = np.array([6.0, 3.0, 3.0, 3.0, 3.0])  # the tiny model's 1x1 conv, bias -3
LIKE_TRAINING = (0.8, 1.25)  # exposure (gamma) range of the reference images
DARKER = (1.8, 2.4)


@cache
def _base() -> np.ndarray:
    return radiograph(128, 120, bright_box=False).astype(np.float64) / 4000.0


def images(n: int, gamma: tuple[float, float], offset: float = 0.0) -> list[bytes]:
    """``n`` radiographs with exposures spread evenly over ``gamma`` (no randomness)."""
    steps = (np.arange(n) + offset) / n
    values = gamma[0] + steps * (gamma[1] - gamma[0])
    return [dicom_bytes((_base() ** g * 4000).astype(np.uint16)) for g in values]


@cache
def reference() -> dict[str, FeatureBins]:
    """The drift reference of 60 like-training images, as training records it."""
    rows = []
    for data in images(60, LIKE_TRAINING):
        decoded = decode_dicom(data, target_size=64)
        x = np.asarray(to_model_input(decoded, size=64), dtype=np.float32)
        probs = expit(WEIGHTS * float(x.mean()) - 3.0)
        rows.append(image_statistics(x, decoded) | score_values(LABELS, probs.tolist()))
    names = sorted(rows[0])
    return training_distribution(rows_to_matrix(rows, names), names)


@pytest.fixture
def recorded() -> dict[str, FeatureBins] | None:
    """The artifact's drift reference (parametrize with None for an artifact without)."""
    return reference()


@pytest.fixture
def tiny_cxr(
    model_store: Path, tmp_path: Path, recorded: dict[str, FeatureBins] | None
) -> StoredModel:
    return make_cxr_artifact(tmp_path, reference=recorded)


RULE = AlertRule(name="cxr-drift", metric="psi", service=SERVICE, high=0.25, min_count=20)


class Scrape:
    """``/metrics``'s derived gauges over a window that starts now (its first snapshot
    is dated one window ago, so every later scrape counts from it)."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime
        self.monitor = Monitor(MonitorConfig(window_s=3600, alerts=[RULE]))
        start = time.monotonic() - 3600
        self.monitor.evaluate(current_samples(), {}, now=start, imaging=self.imaging)

    @property
    def imaging(self) -> dict[str, Any]:
        return imaging_reference(self.runtime)

    def gauges(self) -> dict[tuple[str, str], float]:
        """(metric, label text) -> value of every derived sample."""
        text = derived_text(self.monitor, current_samples(), {}, self.imaging)
        found = re.findall(r"^(tonle_\w+)\{(.*)\} (\S+)$", text, flags=re.M)
        return {(name, labels): float(value) for name, labels, value in found}

    def psi(self) -> dict[str, float]:
        """Feature -> PSI of the reads ``imaging-cxr`` made in the window."""
        prefix = f'service="{SERVICE}",feature="'
        return {
            labels[len(prefix) : -1]: value
            for (name, labels), value in self.gauges().items()
            if name == "tonle_cxr_feature_psi" and labels.startswith(prefix)
        }


def post_all(client: Client, batch: list[bytes]) -> None:
    for data in batch:
        response = client.post("/v1/imaging/cxr", content=data, headers=DICOM)
        assert response.status_code == 200, response.text


@pytest.fixture
def app(make_app: AppFactory) -> tuple[Client, Scrape]:
    client, state = make_app()
    return client, Scrape(fake_runtime(state))


def test_reads_like_training_stay_stable(app: tuple[Client, Scrape]) -> None:
    client, scrape = app
    post_all(client, images(30, LIKE_TRAINING, offset=0.5))
    psi = scrape.psi()
    names = set(reference())
    assert set(psi) == names  # every statistic and score of the reference
    assert {"image:mean", "image:p95", "source:aspect", "source:bits", "score:tb"} <= names
    assert max(psi.values()) < 0.1, psi
    gauges = scrape.gauges()
    assert gauges[("tonle_alert_active", 'rule="cxr-drift"')] == 0.0
    assert gauges[("tonle_alert_count", 'rule="cxr-drift"')] == 30.0


def test_darker_reads_drift_and_fire_the_alert(app: tuple[Client, Scrape]) -> None:
    client, scrape = app
    post_all(client, images(30, DARKER))
    psi = scrape.psi()
    assert psi["image:mean"] > 0.25
    assert psi["score:abnormal"] > 0.25  # the tiny model scores darker images lower
    assert psi["source:aspect"] < 0.01  # same device, same size: no drift there
    gauges = scrape.gauges()
    assert gauges[("tonle_alert_active", 'rule="cxr-drift"')] == 1.0
    assert gauges[("tonle_alert_value", 'rule="cxr-drift"')] == max(psi.values())
    # /ui/monitor: its own section, not mixed into the NCD drift rows.
    view = build_view(
        current_samples(), monitor=scrape.monitor, expected={}, site=None, imaging=scrape.imaging
    )
    assert view.drift == []
    assert dict(view.cxr_drift_by_service()[SERVICE])["image:mean"] > 0.25
    client.app.router.routes.append(Route("/ui/monitor", monitor_page))
    runtime = client.app.state.runtime
    runtime.config, runtime.ncd = SimpleNamespace(monitoring=MonitorConfig()), {}
    page = client.get("/ui/monitor")  # dev mode: the operator's view
    assert page.status_code == 200, page.text
    assert "Chest X-ray drift" in page.text
    assert ">image:mean<" in page.text
    assert ">score:tb<" in page.text


@pytest.mark.parametrize("recorded", [None])
def test_an_artifact_without_a_reference_reads_as_before(app: tuple[Client, Scrape]) -> None:
    client, scrape = app
    before = _bins_counted()
    post_all(client, images(2, DARKER))
    state = client.app.state.runtime.imaging
    assert state.analyser.reference == {}
    assert state.analyser.stored.metadata.cxr.training_distribution == {}
    assert _bins_counted() == before  # nothing counted
    assert scrape.psi() == {}
    gauges = scrape.gauges()
    assert not [key for key in gauges if key[0] == "tonle_cxr_feature_psi"]
    assert ("tonle_alert_value", 'rule="cxr-drift"') not in gauges  # nothing to compute
    assert gauges[("tonle_alert_active", 'rule="cxr-drift"')] == 0.0


def _bins_counted() -> float:
    return sum(v for _, v in current_samples().get("tonle_cxr_feature_bins_total", ()))
