"""Survival-aware metrics checked against brute force and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from training import ncd_metrics as m


def _cohort(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    risk = rng.normal(size=n)
    risk[: n // 8] = np.round(risk[: n // 8], 1)  # ties in risk
    t_event = rng.exponential(10 / np.exp(risk))
    t_cens = rng.uniform(0, 20, n)
    time = np.round(np.minimum(t_event, t_cens), 1)  # ties in time
    return time, t_event <= t_cens, risk


def _brute_c(time, event, risk, horizon, a_weight):
    num = den = 0.0
    for i in range(len(time)):
        if not event[i] or time[i] > horizon:
            continue
        for j in range(len(time)):
            if time[j] > time[i]:
                den += a_weight[i]
                num += a_weight[i] * ((risk[i] > risk[j]) + 0.5 * (risk[i] == risk[j]))
    return num / den


def test_concordance_matches_brute_force() -> None:
    time, event, risk = _cohort(300, 1)
    c = m.bootstrap_weights(300, 0, 0)
    harrell = m.concordance(time, event, risk, 10.0, c)[0]
    assert harrell == pytest.approx(_brute_c(time, event, risk, 10.0, np.ones(300)), abs=1e-12)
    g = m.censoring_survival(time, event)
    a = 1.0 / np.maximum(m._g_before(*g, time), m.G_FLOOR) ** 2
    uno = m.concordance(time, event, risk, 10.0, c, g)[0]
    assert uno == pytest.approx(_brute_c(time, event, risk, 10.0, a), abs=1e-9)
    assert 0.6 < harrell < 0.9
    # reversing the risk reverses concordance
    assert m.concordance(time, event, -risk, 10.0, c)[0] == pytest.approx(1 - harrell, abs=1e-12)


def test_bootstrap_columns_equal_resampled_rows() -> None:
    time, event, risk = _cohort(200, 2)
    c = m.bootstrap_weights(200, 2, 5)
    rows = np.repeat(np.arange(200), c[:, 1].astype(int))
    direct = m.concordance(time[rows], event[rows], risk[rows], 10.0, np.ones((len(rows), 1)))
    assert m.concordance(time, event, risk, 10.0, c)[1] == pytest.approx(direct[0], abs=1e-12)


def test_ipcw_labels_and_auroc() -> None:
    time, event, risk = _cohort(2000, 3)
    y, w = m.ipcw_labels(time, event, 10.0)
    censored_early = ~event & (time <= 10.0)
    assert np.all(w[censored_early] == 0)
    assert np.all(w[~censored_early] >= 1.0)
    assert set(y[w > 0]) == {0, 1}
    c = m.bootstrap_weights(2000, 0, 0)
    assert m.auroc(y, risk, w, c)[0] == pytest.approx(
        roc_auc_score(y, risk, sample_weight=w), abs=1e-12
    )


def test_ipcw_recovers_true_risk_under_heavy_censoring() -> None:
    rng = np.random.default_rng(4)
    n = 40_000
    t_event = rng.exponential(1 / 0.03, n)  # true 10-year risk 1 - exp(-0.3) = 0.259
    t_cens = rng.uniform(2, 14, n)
    time = np.minimum(t_event, t_cens)
    event = t_event <= t_cens
    y, w = m.ipcw_labels(time, event, 10.0)
    truth = 1 - np.exp(-0.3)
    assert float((w * y).sum() / w.sum()) == pytest.approx(truth, abs=0.01)
    known = w > 0
    naive = float(y[known].mean())  # dropping the censored without weights is biased
    assert naive - truth > 0.03


def test_calibration_slope_of_true_and_overfitted_risk() -> None:
    rng = np.random.default_rng(5)
    lp = rng.normal(-2, 1, 50_000)
    p = 1 / (1 + np.exp(-lp))
    y = (rng.random(50_000) < p).astype(np.int64)
    w = np.ones(50_000)
    c = np.ones((50_000, 1))
    slope, intercept = m.calibration_slope_intercept(y, p, w, c)
    assert slope[0] == pytest.approx(1.0, abs=0.05)
    assert intercept[0] == pytest.approx(0.0, abs=0.05)
    over = 1 / (1 + np.exp(-2 * lp))  # too extreme: slope about 0.5
    assert m.calibration_slope_intercept(y, over, w, c)[0][0] == pytest.approx(0.5, abs=0.05)
    assert m.ece(y, p, w, c)[0] < 0.01
    assert m.ece(y, over, w, c)[0] > 0.03
    assert m.brier(y, p, w, c)[0] < m.brier(y, over, w, c)[0]


def test_net_benefit() -> None:
    y = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 0])
    p = np.array([0.9, 0.4, 0.3, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05])
    nb, treat_all = m.net_benefit(y, p, np.ones(10), np.array([0.1, 0.35]))
    assert nb[0] == pytest.approx(2 / 10 - 1 / 10 * 0.1 / 0.9)
    assert nb[1] == pytest.approx(2 / 10)
    assert treat_all[0] == pytest.approx(0.2 - 0.8 * 0.1 / 0.9)
