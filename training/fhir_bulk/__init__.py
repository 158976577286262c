"""FHIR R4 Bulk Data NDJSON -> point-in-time NCD feature table (contract C2).

Reads ``Patient``, ``Observation``, ``Condition``, ``MedicationRequest`` and
``MedicationStatement`` NDJSON files (with ``Medication`` for referenced drugs; one
resource per line, files named ``<Type>.ndjson`` or ``<Type>.*.ndjson``, as a Bulk
``$export`` writes them) and builds one row per patient at an index date:

* Features: for each measured quantity, the most recent Observation dated on or
  before the index date and no more than ``lookback_days`` before it; its date goes in
  ``<name>_date``. Units are converted per docs/standards.md (:mod:`models.ncd_features`);
  nothing found means NaN, never a default.
* ``diabetes``: diabetes at the index date, by :mod:`models.diabetes_status`, the
  rule serving applies today: a diabetes Condition (SNOMED CT / ICD-10 E10-E14) that
  has started and not abated by the index date, a drug used in diabetes (ATC A10)
  whose dates cover the index date (the ``bp_treated`` date rules), or the latest
  HbA1c >= 6.5 % / fasting glucose >= 7.0 mmol/L. Statuses (clinical status, drug
  status) are as at export time and are read only where ``meta.lastUpdated`` shows
  they already held at the index date. 0 when nothing counts and the export has both
  Condition and medication files (or the caller says the diagnoses are complete);
  NaN otherwise (a normal HbA1c alone is not "no diabetes").
* ``bp_treated``: on a blood-pressure-lowering drug (ATC C02, C03, C07, C08, C09) at
  the index date, by :mod:`models.bp_treatment`, the rule serving applies today: a
  MedicationRequest or MedicationStatement whose dates cover the index date (not the
  look-back: an order counts for a year, a period until its end). Statuses are as at
  export time, so one counts only where ``meta.lastUpdated`` shows it already held at
  the index date; otherwise the dates decide (a status changed after the index date
  would leak the future). 0 when nothing counts; NaN when the export has neither
  medication file (unknown, not untreated).
* ``Encounter`` files, when present, count only as contacts (follow-up).
* Outcomes: the first MI/stroke (``cvd``) or diabetes Condition dated *after* the index
  date. Follow-up ends at the patient's last dated resource, death, or ``end_date``,
  whichever is first; no event by then is censoring. Death is censoring (no cause of
  death in these resources). Someone with the disease on or before the index date is
  not at risk: the outcome is NaN and the report says ``prior-disease``.

Problems are collected per patient, field and rule in a :class:`BuildReport`; with
``strict=True`` the first problem raises :class:`FeatureTableError`. The table itself
can be checked for leakage with :func:`check_leakage`.

Modules: :mod:`~training.fhir_bulk.ndjson` reads the files,
:mod:`~training.fhir_bulk.resources` turns each resource into rows,
:mod:`~training.fhir_bulk.table` builds the point-in-time table and
:mod:`~training.fhir_bulk.report` holds the problems found.
"""

from __future__ import annotations

from training.fhir_bulk.ndjson import iter_ndjson
from training.fhir_bulk.report import (
    BuildReport,
    FeatureIssue,
    FeatureTableError,
    ProblemLog,
)
from training.fhir_bulk.table import build_feature_table, check_leakage

__all__ = [
    "BuildReport",
    "FeatureIssue",
    "FeatureTableError",
    "ProblemLog",
    "build_feature_table",
    "check_leakage",
    "iter_ndjson",
]
