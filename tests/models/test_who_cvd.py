"""WHO 2019 CVD risk equations: formula, validity and the printed charts."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.who_cvd import (
    WhoCvdInputError,
    WhoCvdInputs,
    band_of_percent,
    list_countries,
    list_regions,
    percents_and_bands,
    round_percent,
    who_cvd_reasons_batch,
    who_cvd_risk,
    who_cvd_risk_batch,
    who_cvd_score_batch,
)

DATA = Path(__file__).resolve().parents[2] / "models" / "data"
SEA = "A05GBDR_014_SEA"


# --- An independent, deliberately plain re-implementation of the paper's recipe ---------
def _rows(name: str) -> list[dict[str, str]]:
    with (DATA / name).open(encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


COEF = {(r["model"], r["endpoint"], r["sex"]): r for r in _rows("who2019_cvd_coefficients.csv")}
RECAL = {
    (r["code"], r["sex"], r["model"], r["endpoint"]): r
    for r in _rows("who2019_cvd_recalibration_2017.csv")
}


def reference_risk(model: str, code: str, sex: str, age: float, smk: int, sbp: float,
                   chol: float, dm: int, bmi: float) -> float:  # fmt: skip
    survive = 1.0
    for endpoint in ("chd", "stroke"):
        c = {k: float(v) for k, v in COEF[(model, endpoint, sex)].items()
             if k not in ("model", "endpoint", "sex")}  # fmt: skip
        a, tc, sb, bm = age - 60, chol - 6, sbp - 120, bmi - 25
        lp = (c["age"] * a + c["total_chol"] * tc + c["sbp"] * sb + c["diabetes"] * dm
              + c["smoking"] * smk + c["bmi"] * bm + c["age_x_total_chol"] * a * tc
              + c["age_x_sbp"] * a * sb + c["age_x_diabetes"] * a * dm
              + c["age_x_smoking"] * a * smk + c["age_x_bmi"] * a * bm)  # fmt: skip
        p = 1 - c["baseline_survival_10y"] ** math.exp(lp)
        row = RECAL[(code, sex, model, endpoint)]
        if not row["cons"]:  # no national recalibration: the region's row
            region = next(r for (k, s, m, e), r in RECAL.items()
                          if r["level"] == "region" and r["name"] == row["gbd_region"]
                          and (s, m, e) == (sex, model, endpoint))  # fmt: skip
            row = region
        cal = 1 - math.exp(-math.exp(float(row["cons"]) + float(row["slope"])
                                     * math.log(-math.log(1 - p))))  # fmt: skip
        survive *= 1 - cal
    return 1 - survive


REGION_CODES = [code for code, _ in list_regions()]
COUNTRY_CODES = [code for code, _, _ in list_countries()]


@settings(max_examples=300, deadline=None)
@given(
    model=st.sampled_from(["lab", "nonlab"]),
    place=st.one_of(
        st.tuples(st.just("region"), st.sampled_from(REGION_CODES)),
        st.tuples(st.just("country"), st.sampled_from(COUNTRY_CODES)),
    ),
    sex=st.sampled_from(["female", "male"]),
    age=st.floats(40, 74.99),
    smk=st.integers(0, 1),
    sbp=st.floats(70, 270),
    chol=st.floats(1.5, 15),
    dm=st.integers(0, 1),
    bmi=st.floats(12, 70),
)
def test_formula_matches_plain_reimplementation(
    model: str, place: tuple[str, str], sex: str, age: float, smk: int, sbp: float,
    chol: float, dm: int, bmi: float,
) -> None:  # fmt: skip
    kind, code = place
    inputs = WhoCvdInputs(sex=sex, age=age, smoking=bool(smk), sbp=sbp,  # type: ignore[arg-type]
                          total_chol=chol, diabetes=bool(dm), bmi=bmi)  # fmt: skip
    kwargs: dict[str, Any] = {kind: code}
    got = who_cvd_risk(inputs, model, **kwargs)  # type: ignore[arg-type]
    want = reference_risk(model, code, sex, age, smk, sbp,
                          chol if model == "lab" else 6.0, dm if model == "lab" else 0,
                          bmi if model == "nonlab" else 25.0)  # fmt: skip
    assert got.risk == pytest.approx(want, rel=1e-9, abs=1e-12)
    assert 0.0 < got.risk <= 1.0  # 1.0 in float at the extreme corner, see below
    assert got.percent == math.floor(want * 100 + 0.5)
    assert not got.extrapolated
    batch = who_cvd_risk_batch(model, [sex], [age], [smk], [sbp], [chol], [dm], [bmi],  # type: ignore[arg-type]
                               **kwargs)  # fmt: skip
    assert batch[0] == pytest.approx(got.risk, rel=1e-12)


def test_extreme_corner_inside_the_charts_is_the_top_band_not_a_refusal() -> None:
    # Found by the property test above: the equation reaches 1.0 in float here, inside
    # every validity range. The highest-risk patient gets ">=30%", never "no advice".
    inputs = WhoCvdInputs(sex="male", age=74.99, smoking=True, sbp=270, total_chol=15,
                          diabetes=True)  # fmt: skip
    got = who_cvd_risk(inputs, "lab", region="A06GBDR_015_CAS")
    assert got.risk == 1.0
    assert got.band == ">=30%"
    assert not got.extrapolated
    batch = who_cvd_risk_batch("lab", ["male"], [74.99], [1], [270], [15], [1], [None],  # type: ignore[list-item]
                               region="A06GBDR_015_CAS")  # fmt: skip
    assert batch[0] == 1.0


def test_batch_matches_scalar_on_many_rows() -> None:
    rng = np.random.default_rng(1)
    n = 500
    sex = rng.choice(["female", "male"], n)
    age, sbp = rng.uniform(40, 74.9, n), rng.uniform(90, 200, n)
    chol, bmi = rng.uniform(3, 9, n), rng.uniform(17, 40, n)
    smk, dm = rng.integers(0, 2, n), rng.integers(0, 2, n)
    for model in ("lab", "nonlab"):
        batch = who_cvd_risk_batch(model, sex, age, smk, sbp, chol, dm, bmi, country="KHM")  # type: ignore[arg-type]
        for i in range(0, n, 37):
            one = who_cvd_risk(
                WhoCvdInputs(sex=sex[i], age=age[i], smoking=bool(smk[i]), sbp=sbp[i],
                             total_chol=chol[i], diabetes=bool(dm[i]), bmi=bmi[i]),
                model, country="KHM",  # type: ignore[arg-type]
            )  # fmt: skip
            assert batch[i] == pytest.approx(one.risk, rel=1e-12)


def test_regions_and_countries() -> None:
    regions = dict(list_regions())
    assert len(regions) == 21
    assert regions[SEA] == "Southeast Asia"
    countries = {c: (n, r) for c, n, r in list_countries()}
    assert countries["KHM"] == ("Cambodia", SEA)
    assert len(countries) == 195


def test_country_recalibration_differs_from_region_and_is_reported() -> None:
    x = WhoCvdInputs(sex="male", age=57, smoking=True, sbp=150, total_chol=5.5, diabetes=False)
    by_region = who_cvd_risk(x, "lab", region=SEA)
    by_country = who_cvd_risk(x, "lab", country="KHM")
    assert by_country.country_code == "KHM"
    assert by_region.country_code is None
    assert by_country.region_code == by_region.region_code == SEA
    assert by_country.risk != pytest.approx(by_region.risk, rel=1e-3)
    # Same call by region name, and a country checked against its region.
    assert who_cvd_risk(x, "lab", region="Southeast Asia").risk == by_region.risk
    with pytest.raises(WhoCvdInputError) as err:
        who_cvd_risk(x, "lab", region="A07GBDR_017_WEU", country="KHM")
    assert err.value.field == "country"


def test_country_without_national_recalibration_uses_its_region() -> None:
    x = WhoCvdInputs(sex="female", age=66, smoking=False, sbp=140, bmi=31)
    guam = who_cvd_risk(x, "nonlab", country="GUM")
    oceania = who_cvd_risk(x, "nonlab", region="Oceania")
    assert guam.country_code is None
    assert guam.region_code == "A05GBDR_020_OCE"
    assert guam.risk == oceania.risk


@pytest.mark.parametrize(
    ("field", "value", "rule_part"),
    [
        ("age", 39.9, "validity"),
        ("age", 75.0, "validity"),
        ("age", 12.0, "impossible"),
        ("sbp", 60.0, "validity"),
        ("sbp", 400.0, "impossible"),
        ("sbp", float("nan"), "finite"),
        ("total_chol", 16.0, "validity"),
        ("total_chol", 0.1, "impossible"),
        ("bmi", 80.0, "validity"),
        ("bmi", float("inf"), "finite"),
    ],
)
def test_out_of_range_refused_with_field_and_rule(field: str, value: float, rule_part: str) -> None:
    base = {"sex": "male", "age": 55.0, "smoking": False, "sbp": 130.0,
            "total_chol": 5.0, "diabetes": False, "bmi": 24.0}  # fmt: skip
    base[field] = value
    model = "nonlab" if field == "bmi" else "lab"
    with pytest.raises(WhoCvdInputError) as err:
        who_cvd_risk(WhoCvdInputs(**base), model, region=SEA)  # type: ignore[arg-type]
    assert err.value.field == field
    assert rule_part in err.value.rule
    if rule_part == "validity":  # extrapolation is allowed, and said
        res = who_cvd_risk(WhoCvdInputs(**base), model, region=SEA, allow_extrapolation=True)  # type: ignore[arg-type, arg-type]
        assert res.extrapolated
        assert res.inputs_used[field] == value  # never clipped
    else:  # impossible values are refused even when extrapolating
        with pytest.raises(WhoCvdInputError):
            who_cvd_risk(WhoCvdInputs(**base), model, region=SEA, allow_extrapolation=True)  # type: ignore[arg-type]


def test_missing_inputs_and_unknown_places_refused() -> None:
    no_chol = WhoCvdInputs(sex="male", age=55, smoking=False, sbp=130, diabetes=False)
    with pytest.raises(WhoCvdInputError) as err:
        who_cvd_risk(no_chol, "lab", region=SEA)
    assert err.value.field == "total_chol"
    with pytest.raises(WhoCvdInputError) as err:
        who_cvd_risk(no_chol, "nonlab", region=SEA)
    assert err.value.field == "bmi"
    full = WhoCvdInputs(sex="male", age=55, smoking=False, sbp=130, total_chol=5, diabetes=False)
    for kwargs, field in (({}, "region"), ({"region": "Atlantis"}, "region"),
                          ({"country": "XXX"}, "country")):  # fmt: skip
        with pytest.raises(WhoCvdInputError) as err:
            who_cvd_risk(full, "lab", **kwargs)  # type: ignore[arg-type]
        assert err.value.field == field


def test_batch_reasons_and_nan() -> None:
    reasons = who_cvd_reasons_batch(
        "lab", ["male", "female", "x", "male", "male"], [50, 80, 50, 50, 50], [0, 1, 0, 2, 0],
        [130, 130, 130, 130, np.nan], [5, 5, 5, 5, 5], [0, 0, 0, 0, 0],
    )  # fmt: skip
    assert list(reasons) == [None, "age:out-of-range", "sex:missing-or-unknown",
                             "smoking:not-0-1", "sbp:missing"]  # fmt: skip
    risk = who_cvd_risk_batch("lab", ["male", "female"], [50, 80], [0, 1], [130, 130], [5, 5],
                              [0, 0], region=SEA, invalid="nan")  # fmt: skip
    assert np.isfinite(risk[0])
    assert np.isnan(risk[1])
    with pytest.raises(WhoCvdInputError) as err:
        who_cvd_risk_batch("lab", ["male", "female"], [50, 80], [0, 1], [130, 130], [5, 5],
                           [0, 0], region=SEA)  # fmt: skip
    assert err.value.field == "age"


def test_batch_refuses_an_extrapolated_row_the_equation_saturates_on() -> None:
    """Age 18, SBP 350, cholesterol 40: possible, far outside the charts, and the
    uncalibrated risk is 1.0 in float64 (log1p(-1) divides by zero). The row is refused
    with a reason, never a silent 100 % (and no RuntimeWarning, an error under pytest)."""
    rows = (["male", "male", "female"], [18, 55, 80], [1, 0, 1], [350, 130, 200], [40, 5, 7],
            [1, 0, 1])  # fmt: skip
    risk = who_cvd_risk_batch("lab", *rows, region=SEA, allow_extrapolation=True, invalid="nan")  # type: ignore[arg-type]
    assert np.isnan(risk[0])
    assert 0.0 < risk[1] < 1.0
    assert 0.0 < risk[2] < 1.0  # extrapolated, but the equation still gives a risk
    with pytest.raises(WhoCvdInputError) as err:
        who_cvd_risk_batch("lab", *rows, region=SEA, allow_extrapolation=True)  # type: ignore[arg-type]
    assert (err.value.field, err.value.value) == ("risk", "row 0")
    assert err.value.rule == "saturated"
    with pytest.raises(WhoCvdInputError) as err:  # without extrapolation: out of range, as before
        who_cvd_risk_batch("lab", *rows, region=SEA)  # type: ignore[arg-type]
    assert (err.value.field, err.value.rule) == ("age", "out-of-range")
    scored = who_cvd_score_batch("lab", *rows, region=SEA, allow_extrapolation=True)  # type: ignore[arg-type]
    np.testing.assert_array_equal(scored.risk, risk)
    assert list(scored.reason) == ["risk:saturated", None, None]  # the reason, in one pass
    assert list(scored.extrapolated) == [False, False, True]


@pytest.mark.parametrize(
    ("risk", "percent", "band_index"),
    [(0.0449, 4, 0), (0.045, 5, 1), (0.0949, 9, 1), (0.095, 10, 2), (0.1949, 19, 2),
     (0.195, 20, 3), (0.2949, 29, 3), (0.295, 30, 4), (0.6, 60, 4)],
)  # fmt: skip
def test_rounding_half_up_and_bands(risk: float, percent: int, band_index: int) -> None:
    assert round_percent(risk) == percent
    assert band_of_percent(percent)[0] == band_index
    percents, bands = percents_and_bands(np.array([risk, np.nan]))  # the vectorised twin
    assert percents[0] == percent
    assert np.isnan(percents[1])
    assert bands.tolist() == [band_index, 0]


# --- Chart-grid properties --------------------------------------------------------------
# No transcription of printed WHO chart cells was available offline (see the report in
# the NCD-A notes): these tests check properties every printed chart has, on the chart
# grid at representative values of each band, for all 21 regions.
CHART_AGES = np.array([42.0, 47.0, 52.0, 57.0, 62.0, 67.0, 72.0])
CHART_SBP = np.array([110.0, 130.0, 150.0, 170.0, 190.0])
CHART_CHOL = np.array([3.5, 4.5, 5.5, 6.5, 7.5])


@pytest.mark.parametrize("region", REGION_CODES)
def test_chart_grid_is_monotone_in_every_region(region: str) -> None:
    age, sbp, chol, smk, dm, male = np.meshgrid(
        CHART_AGES, CHART_SBP, CHART_CHOL, [0.0, 1.0], [0.0, 1.0], [0.0, 1.0], indexing="ij"
    )
    risk = who_cvd_risk_batch(
        "lab",
        male.ravel(),
        age.ravel(),
        smk.ravel(),
        sbp.ravel(),
        chol.ravel(),
        dm.ravel(),
        region=region,
    ).reshape(age.shape)
    assert np.all((risk > 0) & (risk < 1))
    for axis in range(5):  # older, higher SBP / cholesterol, smoking, diabetes: never lower
        assert np.all(np.diff(risk, axis=axis) > 0), f"not increasing along axis {axis}"
    bmi_grid = np.array([20.0, 27.5, 32.5, 37.5])
    age2, bmi2 = np.meshgrid(CHART_AGES, bmi_grid, indexing="ij")
    nonlab = who_cvd_risk_batch(
        "nonlab",
        np.ones(age2.size),
        age2.ravel(),
        np.zeros(age2.size),
        np.full(age2.size, 150.0),
        bmi=bmi2.ravel(),
        region=region,
    ).reshape(age2.shape)
    assert np.all(np.diff(nonlab, axis=0) > 0)
    assert np.all(np.diff(nonlab, axis=1) > 0)


def test_every_country_gives_a_risk() -> None:
    for code in COUNTRY_CODES:
        for model in ("lab", "nonlab"):
            risk = who_cvd_risk_batch(
                model,
                ["female", "male"],
                [55, 55],
                [1, 1],
                [150, 150],
                [6, 6],
                [1, 1],
                [28, 28],  # type: ignore[arg-type]
                country=code,
            )
            assert np.all((risk > 0.005) & (risk < 0.9)), (code, model, risk)


def test_scalar_refuses_an_extrapolated_input_the_equation_saturates_on() -> None:
    """The single-patient path refuses the same saturated row as the batch path."""
    extreme = WhoCvdInputs(sex="male", age=18, smoking=True, sbp=350, total_chol=40, diabetes=True)
    with pytest.raises(WhoCvdInputError) as err:
        who_cvd_risk(extreme, "lab", region=SEA, allow_extrapolation=True)
    assert (err.value.field, err.value.rule) == ("risk", "saturated")
