"""Batch NCD risk scoring: ``tonle score MODEL INPUT -o OUTPUT``.

Models: ``who-cvd-lab`` / ``who-cvd-nonlab`` (WHO 2019 charts, with a region or
country) and trained ``ncd-risk`` artifacts from the model store (``NAME:VERSION``,
contract C3, run through ONNX Runtime). Input: the documented CSV
(:mod:`training.csv_adapter`) read in chunks, or a FHIR Bulk NDJSON folder
(:mod:`training.fhir_bulk`, built in memory first). Output: CSV, one row per input
row, in input order, with columns :data:`OUTPUT_COLUMNS`; ``reason`` says why no
risk was given (``<field>:<rule>``, e.g. ``age:out-of-range``), and ``risk`` is then
empty. Memory stays bounded by the chunk size for CSV input.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from models.ncd_lookback import LOOKBACK_DAYS
from models.who_cvd import (
    BANDS,
    percents_and_bands,
    resolve_recalibration,
    who_cvd_score_batch,
)
from training.ncd_input import InputReport, NcdInputError, iter_input, rejected_fields

__all__ = ["OUTPUT_COLUMNS", "ScoreSummary", "Scorer", "count_rows", "open_scorer", "score_file"]

OUTPUT_COLUMNS = [
    "patient_id", "model", "model_version", "model_sha256", "region_code", "country_code",
    "risk", "percent", "band", "extrapolated", "reason",
]  # fmt: skip
FloatArray = npt.NDArray[np.float64]
# risk (NaN = none), reason (None = scored), extrapolated
_Scored = tuple[npt.NDArray[np.float64], npt.NDArray[np.object_], npt.NDArray[np.bool_]]
_BAND_LABELS = np.array([label for _, label in BANDS], dtype=object)


@dataclass
class ScoreSummary:
    """What a scoring run did."""

    report: InputReport
    rows: int = 0
    scored: int = 0
    refused: int = 0
    reasons: Counter[str] = field(default_factory=Counter)  # why rows got no risk


def _bands(
    risk: npt.NDArray[np.float64],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.object_]]:
    percent, index = percents_and_bands(risk)
    band: npt.NDArray[np.object_] = _BAND_LABELS[index]
    band[np.isnan(risk)] = None
    return percent, band


@dataclass(frozen=True)
class Scorer:
    """Scores C2 feature chunks with one model; see :func:`open_scorer`."""

    name: str
    version: str
    sha256: str
    region_code: str
    country_code: str
    score: Callable[[pd.DataFrame], _Scored]  # risk, reason and extrapolated per row

    def __call__(self, table: pd.DataFrame) -> pd.DataFrame:
        """One output row per input row (see :data:`OUTPUT_COLUMNS`)."""
        risk, reason, extrapolated = self.score(table)
        percent, band = _bands(risk)
        out = pd.DataFrame({
            "patient_id": table["patient_id"].to_numpy(),
            "model": self.name, "model_version": self.version, "model_sha256": self.sha256,
            "region_code": self.region_code, "country_code": self.country_code,
            "risk": np.round(risk, 6),
            "percent": pd.array(np.where(np.isnan(risk), pd.NA, percent), dtype="Int64"),
            "band": band, "extrapolated": extrapolated.astype(int), "reason": reason,
        })  # fmt: skip
        return out[OUTPUT_COLUMNS]


def _who_scorer(
    kind: Literal["lab", "nonlab"], region: str | None, country: str | None, extrapolate: bool
) -> Scorer:
    region_code, _, country_code = resolve_recalibration(region, country)

    def score(t: pd.DataFrame) -> _Scored:
        sex = t["sex"].to_numpy(dtype=object)
        cols = {
            "age": t["age"].to_numpy(float), "smoking": t["smoking"].to_numpy(float),
            "sbp": t["sbp"].to_numpy(float),
            "total_chol": t["total_chol"].to_numpy(float) if kind == "lab" else None,
            "diabetes": t["diabetes"].to_numpy(float) if kind == "lab" else None,
            "bmi": t["bmi"].to_numpy(float) if kind == "nonlab" else None,
        }  # fmt: skip
        # One call gives the risks and every reason, "risk:saturated" included (the
        # reasons alone cannot know which extrapolated rows the equation saturates on).
        scored = who_cvd_score_batch(
            kind, sex, **cols, region=region_code, country=country_code,
            allow_extrapolation=extrapolate,
        )  # fmt: skip
        return scored.risk, scored.reason, scored.extrapolated

    return Scorer(f"who-cvd-{kind}", "2019", "", region_code, country_code or "", score)


def _trained_scorer(tag: str, threads: int) -> Scorer:
    import bentoml

    from models import registry
    from models.ncd_predictor import NcdPredictor

    name, _, version = tag.partition(":")
    try:
        stored = registry.verify(name, version or "latest")
    except bentoml.exceptions.BentoMLException as exc:  # e.g. NotFound for an unknown name
        raise registry.ArtifactError(f"model {tag}: {exc}") from exc
    predictor = NcdPredictor(stored, threads=threads)
    meta = predictor.metadata
    encodings = meta.ncd.encodings

    def score(t: pd.DataFrame) -> _Scored:
        n = len(t)
        x = np.full((n, len(meta.features)), np.nan, dtype=np.float32)
        reasons = np.full(n, None, dtype=object)
        for j, spec in enumerate(meta.features):
            if spec.name not in t:
                raw = np.full(n, np.nan)
            elif spec.name in encodings:
                codes = encodings[spec.name]
                mapped = t[spec.name].astype(object).map({k: float(v) for k, v in codes.items()})
                raw = pd.to_numeric(mapped, errors="coerce").to_numpy(dtype=float)
            else:
                raw = pd.to_numeric(t[spec.name], errors="coerce").to_numpy(dtype=float)
            missing = np.isnan(raw)
            if spec.required:
                reasons[missing & (reasons == None)] = f"{spec.name}:missing"  # noqa: E711
            low = -np.inf if spec.minimum is None else spec.minimum
            high = np.inf if spec.maximum is None else spec.maximum
            bad = ~missing & ((raw < low) | (raw > high))
            reasons[bad & (reasons == None)] = f"{spec.name}:out-of-range"  # noqa: E711
            x[:, j] = raw
        ok = reasons == None  # noqa: E711
        risk = np.full(n, np.nan)
        if ok.any():
            risk[ok] = predictor.predict_proba(x[ok]).astype(np.float64)
        return risk, reasons, np.zeros(n, dtype=bool)

    return Scorer(meta.name, meta.version, meta.sha256, "", "", score)


def open_scorer(
    model: str,
    *,
    region: str | None = None,
    country: str | None = None,
    allow_extrapolation: bool = False,
    threads: int = 1,
) -> Scorer:
    """A scorer for ``who-cvd-lab``, ``who-cvd-nonlab`` or a stored ``NAME[:VERSION]``.

    Raises:
        models.who_cvd.WhoCvdInputError: WHO model without a known region/country.
        models.registry.ArtifactError: stored model missing or failing verification.
    """
    if model in ("who-cvd-lab", "who-cvd-nonlab"):
        kind: Literal["lab", "nonlab"] = "lab" if model == "who-cvd-lab" else "nonlab"
        return _who_scorer(kind, region, country, allow_extrapolation)
    return _trained_scorer(model, threads)


def count_rows(path: Path) -> int:
    """Data rows in a CSV file (newlines minus the header), read in 1 MiB blocks."""
    lines = 0
    last = b"\n"
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            lines += block.count(b"\n")
            last = block[-1:]
    return max(lines - (1 if last == b"\n" else 0), 0)


def _mark_rejected(
    scored: pd.DataFrame, chunk: pd.DataFrame, rejected: dict[int | str, set[str]]
) -> None:
    """``<field>:missing`` -> ``<field>:rejected`` where the value was there but refused."""
    if not rejected:
        return
    keys = chunk.index + 2 if not isinstance(next(iter(rejected)), str) else chunk["patient_id"]
    reasons = scored["reason"].to_numpy(dtype=object)
    for i, key in enumerate(keys):
        fields = rejected.get(key)
        reason = reasons[i]
        if fields and isinstance(reason, str) and reason.endswith(":missing"):
            name = reason.removesuffix(":missing")
            if name in fields:
                reasons[i] = f"{name}:rejected"
    scored["reason"] = reasons


def score_file(
    scorer: Scorer,
    source: Path,
    output: Path,
    *,
    chunksize: int = 100_000,
    chol_unit: str = "mmol/L",
    index_date: date | None = None,
    lookback_days: int = LOOKBACK_DAYS,
    skip_invalid: bool = False,
    progress: Callable[[int], None] | None = None,
) -> ScoreSummary:
    """Score every row of ``source`` (CSV or FHIR Bulk folder) into the ``output`` CSV.

    Args:
        scorer: From :func:`open_scorer`.
        source: The documented CSV, or a FHIR Bulk NDJSON folder.
        output: CSV to write (written to ``<output>.part``, renamed when complete).
        chunksize: Rows per chunk (bounds memory for CSV input).
        chol_unit: Cholesterol unit for CSV rows without a ``total_chol_unit``.
        index_date: For FHIR input, the date features refer to (default: today).
        lookback_days: For FHIR input, how old a measurement may be.
        skip_invalid: Read invalid values as not recorded (reason ``<field>:rejected``)
            instead of refusing the input.
        progress: Called with the number of rows done after each chunk.

    Raises:
        training.ncd_input.NcdInputError: input problems and not ``skip_invalid``;
            nothing is written (the whole input is still read, to report every problem).
        training.fhir_bulk.FeatureTableError: the input cannot be read at all.
    """
    summary = ScoreSummary(InputReport(source))
    problems = summary.report.problems
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".part")
    try:
        with tmp.open("w", encoding="utf-8", newline="") as fh:
            header = True
            chunks = iter_input(
                source, summary.report, chunksize=chunksize, chol_unit=chol_unit,
                index_date=index_date or date.today(), lookback_days=lookback_days,
            )  # fmt: skip
            for chunk in chunks:
                if problems and not skip_invalid:
                    continue  # refused: read on only to report every problem
                scored = scorer(chunk)
                _mark_rejected(scored, chunk, rejected_fields(problems.examples))
                scored.to_csv(fh, header=header, index=False, float_format="%.6g")
                header = False
                summary.rows += len(scored)
                summary.scored += int(scored["risk"].notna().sum())
                summary.reasons.update(scored["reason"].dropna())
                if progress is not None:
                    progress(len(scored))
            if header:
                pd.DataFrame(columns=OUTPUT_COLUMNS).to_csv(fh, index=False)
        if problems and not skip_invalid:
            raise NcdInputError(summary.report)
        tmp.replace(output)
    finally:
        tmp.unlink(missing_ok=True)
    summary.refused = summary.rows - summary.scored
    return summary
