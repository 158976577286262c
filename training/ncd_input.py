"""One input path for NCD data, used by ``tonle score``, ``train``, ``evaluate`` and ``data check``.

Two layouts are read, with the same rules and the same problem report:

* a flat CSV, one row per patient, with ``*_unit`` columns (:mod:`training.csv_adapter`,
  which also reads the feature table that ``tonle train`` has always read); encoding
  and delimiter are detected;
* a folder of FHIR Bulk NDJSON (:mod:`training.fhir_bulk`), at an index date.

**Bad values refuse the input.** A value that is present but cannot be used (not a
number, a unit not accepted, outside the plausible range such as an SBP of 295, an
unreadable flag or date, sex not female/male) and a repeated patient are problems.
Any problem refuses the whole input in every command: exit code 4, every problem
counted per field and rule with the first rows or patients named, and nothing
written. ``--skip-invalid`` (the same in every command) reads such values as not
recorded instead and still prints the report; ``tonle score`` then gives the row
the reason ``<field>:rejected`` where the value was needed. Patients left out by
design (FHIR: a myocardial infarction or stroke before the index date, so not at
risk of a first one, and an unusable FHIR observation dated outside the window any
feature is read from, which the table would not use anyway) are counted as exclusions,
not problems.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd

from models.ncd_features import feature_columns
from models.ncd_lookback import LOOKBACK_DAYS
from training.fhir_bulk import FeatureIssue, FeatureTableError, ProblemLog

__all__ = [
    "InputReport",
    "NcdInputError",
    "iter_input",
    "read_input",
    "rejected_fields",
]

_EXCLUSION_FIELDS = ("cvd_event", "diabetes_event")  # FHIR: prior disease, not a problem


@dataclass
class InputReport:
    """What reading one input found: its layout, rows, problems and exclusions."""

    source: Path
    layout: str = ""
    rows: int = 0
    problems: ProblemLog = field(default_factory=ProblemLog)
    excluded: Counter[str] = field(default_factory=Counter)

    def lines(self, rules: int = 20, examples: int = 3) -> list[str]:
        """The report in plain lines: one per (field, rule) with a count and examples."""
        out = [f"{self.source}: {self.rows:,} rows read ({self.layout})"]
        total = len(self.problems)
        if not total:
            out.append("no problems found")
        else:
            out.append(f"{total:,} problems in {len(self.problems.counts)} rules:")
        for (name, rule), count in self.problems.counts.most_common(rules):
            shown = [i for i in self.problems.examples if (i.field, i.rule) == (name, rule)]
            where = "; ".join(
                f"{i.where()}" + (f" value {i.value!r}" if i.value is not None else "")
                for i in shown[:examples]
            )
            more = ", ..." if count > examples else ""
            out.append(f"  {name}: {rule}: {count:,} ({where}{more})")
        if len(self.problems.counts) > rules:
            out.append(f"  ... and {len(self.problems.counts) - rules} more rules")
        for reason, count in self.excluded.most_common():
            out.append(f"excluded (not a problem): {reason}: {count:,}")
        return out

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (``problems``: field, rule, count, examples)."""
        return {
            "source": str(self.source),
            "layout": self.layout,
            "rows": self.rows,
            "problem_count": len(self.problems),
            "problems": [
                {
                    "field": name,
                    "rule": rule,
                    "count": count,
                    "examples": [
                        i.model_dump(exclude_none=True)
                        for i in self.problems.examples
                        if (i.field, i.rule) == (name, rule)
                    ][:20],
                }
                for (name, rule), count in self.problems.counts.most_common()
            ],
            "excluded": dict(self.excluded),
        }


class NcdInputError(FeatureTableError):
    """The input is refused; ``report`` has every problem found."""

    def __init__(self, report: InputReport) -> None:
        self.report = report
        super().__init__(report.problems.examples or [_issue("data", "no problems")])


def _issue(field_name: str, rule: str) -> FeatureIssue:
    return FeatureIssue(patient_id="-", field=field_name, rule=rule)


def _in_window(issue: FeatureIssue, index_date: date, lookback_days: int) -> bool:
    """Whether the observation at fault could have been read for the feature table."""
    from datetime import timedelta

    from models.diabetes_status import LAB_LOOKBACK_DAYS

    days = lookback_days
    if issue.field in ("hba1c", "fasting_glucose"):  # also read for diabetes status
        days = max(days, LAB_LOOKBACK_DAYS)
    try:
        when = date.fromisoformat(str(issue.date)[:10])
    except ValueError:
        return True
    return index_date - timedelta(days=days) <= when <= index_date


def _fhir_chunks(
    source: Path,
    report: InputReport,
    chunksize: int,
    index_date: date | None,
    lookback_days: int,
    complete_conditions: bool,
) -> Iterator[pd.DataFrame]:
    from training.fhir_bulk import BuildReport, build_feature_table

    if index_date is None:
        raise FeatureTableError([_issue("index_date", "give --index-date for FHIR Bulk NDJSON")])
    built = BuildReport()
    table = build_feature_table(
        source, index_date=index_date, lookback_days=lookback_days,
        complete_conditions=complete_conditions, report=built,
    )  # fmt: skip
    report.layout = f"FHIR Bulk NDJSON at {index_date.isoformat()}, look-back {lookback_days} d"
    for issue in built.issues:
        if issue.field in _EXCLUSION_FIELDS:
            report.excluded[f"{issue.field}: {issue.rule}"] += 1
        elif issue.date is not None and not _in_window(issue, index_date, lookback_days):
            report.excluded[f"{issue.field}: {issue.rule}, outside the look-back (not used)"] += 1
        else:
            report.problems.add(issue)
    for start in range(0, len(table), chunksize):
        yield table.iloc[start : start + chunksize]


def iter_input(
    source: Path,
    report: InputReport,
    *,
    chunksize: int = 100_000,
    chol_unit: str = "mmol/L",
    index_date: date | None = None,
    lookback_days: int = LOOKBACK_DAYS,
    complete_conditions: bool = False,
) -> Iterator[pd.DataFrame]:
    """The input as C2 feature-table chunks; problems go to ``report`` (never raised).

    Raises:
        FeatureTableError: the input cannot be read at all (no such file, encoding,
            delimiter, required column, FHIR without an index date).
    """
    if source.is_dir():
        chunks = _fhir_chunks(
            source, report, chunksize, index_date, lookback_days, complete_conditions
        )
    elif source.is_file():
        from training.csv_adapter import read_csv_chunks, sniff

        report.layout = "CSV, " + sniff(source).describe()
        chunks = read_csv_chunks(source, report.problems, chunksize=chunksize, chol_unit=chol_unit)
    else:
        raise FeatureTableError([_issue("data", f"{source} is not a file or folder")])
    for chunk in chunks:
        report.rows += len(chunk)
        yield chunk


def read_input(
    source: Path,
    *,
    chol_unit: str = "mmol/L",
    index_date: date | None = None,
    lookback_days: int = LOOKBACK_DAYS,
    complete_conditions: bool = False,
    skip_invalid: bool = False,
) -> tuple[pd.DataFrame, InputReport]:
    """The whole input as one C2 feature table, and its report.

    Raises:
        NcdInputError: problems were found and ``skip_invalid`` is not set.
        FeatureTableError: the input cannot be read at all (see :func:`iter_input`).
    """
    report = InputReport(source)
    chunks = list(
        iter_input(
            source, report, chol_unit=chol_unit, index_date=index_date,
            lookback_days=lookback_days, complete_conditions=complete_conditions,
        )
    )  # fmt: skip
    if report.problems and not skip_invalid:
        raise NcdInputError(report)
    if not chunks:
        return pd.DataFrame(columns=feature_columns()), report
    return pd.concat(chunks, ignore_index=True), report


def rejected_fields(issues: list[FeatureIssue]) -> dict[int | str, set[str]]:
    """Fields whose value was rejected, per CSV row number (or FHIR patient id)."""
    out: dict[int | str, set[str]] = {}
    for issue in issues:
        key: int | str = issue.row if issue.row is not None else issue.patient_id
        out.setdefault(key, set()).add(issue.field.removesuffix("_unit"))
    return out
