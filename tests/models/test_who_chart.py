"""The WHO chart grid and the patient's printed cell (:mod:`models.who_chart`)."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pytest

from models.who_chart import grid, patient_cell
from models.who_cvd import WhoCvdInputs, who_cvd_risk


def test_who_grid_cells_are_the_equation_at_representative_values() -> None:
    g = grid(
        "lab",
        sex="male",
        smoking=True,
        diabetes=False,
        region="A05GBDR_014_SEA",
        country="KHM",
        age=57,
        sbp=165,
        col_value=5.2,
    )
    assert g.cell == (3, 3, 2)  # 55-59, 160-179, 5-5.9
    expected = who_cvd_risk(
        WhoCvdInputs(sex="male", age=57.5, smoking=True, sbp=170, total_chol=5.5, diabetes=False),
        "lab",
        region="A05GBDR_014_SEA",
        country="KHM",
    )
    assert g.percent[3][3][2] == expected.percent
    assert g.band_index[3][3][2] == expected.band_index
    percent = np.array(g.percent)
    assert (np.diff(percent, axis=1) >= 0).all()  # risk rises with SBP
    assert (np.diff(percent, axis=0) >= 0).all()  # and with age
    outside = grid(
        "nonlab", sex="female", smoking=False, diabetes=None, region="A05GBDR_014_SEA",
        country=None, age=80, sbp=120, col_value=22,
    )  # fmt: skip
    assert outside.cell is None
    assert outside.diabetes is None


@pytest.mark.parametrize(
    ("model", "sex", "smoking", "diabetes", "age", "sbp", "col"),
    [
        ("lab", "male", True, False, 63.0, 178.0, 7.1),  # demo-02: cell 23 %, exact 25 %
        ("lab", "female", False, True, 40.0, 119.9, 4.0),  # on band edges
        ("nonlab", "female", True, None, 74.9, 180.0, 34.9),
    ],
)
def test_patient_cell_is_the_grid_cell(
    model: Literal["lab", "nonlab"],
    sex: Literal["female", "male"],
    smoking: bool,
    diabetes: bool | None,
    age: float,
    sbp: float,
    col: float,
) -> None:
    kw: dict[str, Any] = {"region": "A05GBDR_014_SEA", "country": "KHM"}
    chart = grid(model, sex=sex, smoking=smoking, diabetes=diabetes, age=age, sbp=sbp,
                 col_value=col, **kw)  # fmt: skip
    extra = {"total_chol": col, "diabetes": diabetes} if model == "lab" else {"bmi": col}
    exact = who_cvd_risk(
        WhoCvdInputs(sex=sex, age=age, smoking=smoking, sbp=sbp, **extra), model, **kw
    )
    cell = patient_cell(exact, **kw)
    assert cell is not None
    assert cell == chart.patient()
    assert chart.cell is not None
    a, s, c = chart.cell
    assert (cell.age, cell.sbp, cell.col) == (
        chart.age_labels[a],
        chart.sbp_labels[s],
        chart.col_labels[c],
    )
