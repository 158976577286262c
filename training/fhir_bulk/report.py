"""What the feature-table builder found: every problem, per patient, field and rule."""

from __future__ import annotations

from collections import Counter

from pydantic import BaseModel

__all__ = ["BuildReport", "FeatureIssue", "FeatureTableError", "IssueCollector", "ProblemLog"]


class FeatureIssue(BaseModel):
    """One problem found in the input, for one patient and field."""

    patient_id: str
    field: str
    rule: str
    value: str | None = None
    row: int | None = None  # CSV input: spreadsheet row number (the header is row 1)
    date: str | None = None  # FHIR input: the day of the observation at fault

    def where(self) -> str:
        """``row 5, patient p4`` (CSV) or ``patient p4`` (FHIR, with the day when known)."""
        row = f"row {self.row}, " if self.row is not None else ""
        day = f" on {self.date}" if self.date is not None else ""
        return f"{row}patient {self.patient_id}{day}"


class FeatureTableError(ValueError):
    """Input that cannot give a trustworthy feature table (strict mode, or leakage)."""

    def __init__(self, issues: list[FeatureIssue]) -> None:
        self.issues = issues
        first = issues[0]
        more = f" (and {len(issues) - 1} more)" if len(issues) > 1 else ""
        super().__init__(
            f"{first.where()}: {first.field}: {first.rule}"
            + (f" (value {first.value})" if first.value is not None else "")
            + more
        )


class BuildReport(BaseModel):
    """What the builder found: counts and every problem, per patient and field."""

    patients: int = 0
    observations: int = 0
    conditions: int = 0
    medication_requests: int = 0
    medication_statements: int = 0
    issues: list[FeatureIssue] = []

    def counts(self) -> dict[str, int]:
        """Number of issues per ``field:rule``."""
        return dict(Counter(f"{i.field}:{i.rule}" for i in self.issues))


class IssueCollector:
    """Collects problems as they are found; with ``strict``, raises at the first one."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.issues: list[FeatureIssue] = []

    def add(
        self, patient_id: str, field: str, rule: str, value: object = None, date: str | None = None
    ) -> None:
        """Record one problem (or raise it as :class:`FeatureTableError` when strict)."""
        issue = FeatureIssue(
            patient_id=patient_id,
            field=field,
            rule=rule,
            value=None if value is None else str(value),
            date=date,
        )
        if self.strict:
            raise FeatureTableError([issue])
        self.issues.append(issue)


class ProblemLog:
    """Every input problem counted per (field, rule); the first ``limit`` kept in full.

    Bounded, so a million bad rows cost a counter, not a million objects.
    """

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self.counts: Counter[tuple[str, str]] = Counter()
        self.examples: list[FeatureIssue] = []

    def add(self, issue: FeatureIssue) -> None:
        """Count one problem (and keep it while under the limit)."""
        self.counts[(issue.field, issue.rule)] += 1
        if len(self.examples) < self.limit:
            self.examples.append(issue)

    def __len__(self) -> int:
        return sum(self.counts.values())
