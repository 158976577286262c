"""Helpers for serving tests: FHIR prefetch builders and a loaded NCD runtime."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from starlette.applications import Starlette

from serving.app import create_app
from serving.runtime import Runtime
from serving.settings import Settings

__all__ = [
    "build_store",
    "cds_request",
    "observation",
    "prefetch",
    "runtime_for",
    "shared_store",
]

NCD_SERVICES = {
    "ncd-cvd-risk": {"model": "cvd-risk", "title": "10-year CVD risk (WHO + Tonle model)"},
    "ncd-diabetes-risk": {"model": "diabetes-risk", "title": "10-year diabetes risk"},
}


@contextmanager
def model_store_at(home: Path) -> Iterator[Path]:
    """Point the registry at ``home`` (``BENTOML_HOME``) inside the block, then restore it."""
    old = os.environ.get("BENTOML_HOME")
    os.environ["BENTOML_HOME"] = str(home)
    try:
        yield home
    finally:
        if old is None:
            os.environ.pop("BENTOML_HOME", None)
        else:
            os.environ["BENTOML_HOME"] = old


def build_store(tmp: Path) -> Path:
    """Store the fixture CVD and diabetes models under ``tmp/bentoml``; return the home."""
    from tests.ncd_fixtures import make_ncd_artifact

    with model_store_at(tmp / "bentoml") as home:
        make_ncd_artifact(tmp, "cvd")
        make_ncd_artifact(tmp, "diabetes")
    return home


@cache
def shared_store() -> Path:
    """One fixture store per test session (building it takes seconds); removed at exit."""
    tmp = Path(tempfile.mkdtemp(prefix="tonle-ncd-store-"))
    atexit.register(shutil.rmtree, tmp, True)
    return build_store(tmp)


def write_config(tmp: Path, **overrides: Any) -> Path:
    """A serving YAML pinning the two fixture models."""
    config = {
        "models": {"cvd-risk": "1.0.0", "diabetes-risk": "1.0.0"},
        "ncd_services": NCD_SERVICES,
        **overrides,
    }
    path = tmp / "serving.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@contextmanager
def runtime_for(home: Path, tmp: Path, **settings: Any) -> Iterator[Runtime]:
    """A warmed-up runtime over the store at ``home`` (dev mode unless overridden)."""
    with model_store_at(home):
        values: dict[str, Any] = {
            "serving_config": write_config(tmp),
            "database_url": f"sqlite:///{tmp / 'audit.db'}",
            "dev": True,
            "public_url": "http://testserver",
        }
        values.update(settings)
        runtime = Runtime.load(Settings(**values))
        runtime.warm_up()
        yield runtime


def app_for(runtime: Runtime, settings: Settings | None = None) -> Starlette:
    """The service's ASGI app over ``runtime`` (its settings unless ``settings``)."""
    application = create_app(settings or runtime.settings)
    application.state.runtime = runtime
    return application


def observation(
    code: str, value: float | None, unit: str, when: date, obs_id: str, **extra: Any
) -> dict[str, Any]:
    """A final LOINC Observation with a valueQuantity (or ``extra`` fields)."""
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": obs_id,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": f"{when.isoformat()}T09:30:00Z",
    }
    if value is not None:
        resource["valueQuantity"] = {
            "value": value,
            "unit": unit,
            "system": "http://unitsofmeasure.org",
            "code": unit,
        }
    resource.update(extra)
    return resource


def _bundle(*resources: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": r} for r in resources],
    }


def prefetch(
    *,
    sex: str = "male",
    age: int = 62,
    sbp: float = 165,
    chol: float | None = 240.0,
    chol_unit: str = "mg/dL",
    hba1c: float | None = 5.6,
    bmi: float | None = 27.5,
    smoker: bool = True,
    diabetic: bool = False,
    on_metformin: bool = False,
    days_ago: int = 30,
    sbp_as_panel: bool = False,
) -> dict[str, Any]:
    """A full prefetch for one patient (values as an EHR would send them)."""
    today = datetime.now(UTC).date()
    when = today - timedelta(days=days_ago)
    born = date(today.year - age, 1, 1) if (today.month, today.day) >= (1, 1) else today
    if sbp_as_panel:
        sbp_obs = observation(
            "85354-9",
            None,
            "mm[Hg]",
            when,
            "bp1",
            component=[
                {
                    "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                    "valueQuantity": {"value": sbp, "unit": "mmHg", "code": "mm[Hg]"},
                },
                {
                    "code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
                    "valueQuantity": {"value": 85, "unit": "mmHg", "code": "mm[Hg]"},
                },
            ],
        )
    else:
        sbp_obs = observation("8480-6", sbp, "mm[Hg]", when, "sbp1")
    smoking_obs = observation(
        "72166-2",
        None,
        "",
        when,
        "smk1",
        valueCodeableConcept={
            "coding": [
                {
                    "system": "http://snomed.info/sct",
                    "code": "449868002" if smoker else "266919005",
                }
            ]
        },
    )
    conditions = []
    if diabetic:
        conditions.append(
            {
                "resourceType": "Condition",
                "id": "dm1",
                "clinicalStatus": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                            "code": "active",
                        }
                    ]
                },
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006"}]},
                "subject": {"reference": "Patient/p1"},
            }
        )
    requests = []
    if on_metformin:  # ATC A10BA02, ordered at the last visit
        requests.append(
            {
                "resourceType": "MedicationRequest",
                "id": "met1",
                "status": "active",
                "intent": "order",
                "medicationCodeableConcept": {
                    "coding": [{"system": "http://www.whocc.no/atc", "code": "A10BA02"}]
                },
                "subject": {"reference": "Patient/p1"},
                "authoredOn": when.isoformat(),
            }
        )
    return {
        "patient": {
            "resourceType": "Patient",
            "id": "p1",
            "gender": sex,
            "birthDate": born.isoformat(),
        },
        "sbp": _bundle(sbp_obs),
        "totalChol": _bundle(
            *([observation("2093-3", chol, chol_unit, when, "chol1")] if chol else [])
        ),
        "hdl": _bundle(),
        "hba1c": _bundle(*([observation("4548-4", hba1c, "%", when, "a1c1")] if hba1c else [])),
        "bmi": _bundle(*([observation("39156-5", bmi, "kg/m2", when, "bmi1")] if bmi else [])),
        "smoking": _bundle(smoking_obs),
        "fastingGlucose": _bundle(),
        "diabetes": _bundle(*conditions),
        "medicationStatements": _bundle(),
        "medicationRequests": _bundle(*requests),
    }


def cds_request(pf: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """A patient-view CDS Hooks request body."""
    body: dict[str, Any] = {
        "hook": "patient-view",
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "context": {"userId": "Practitioner/example", "patientId": "p1"},
        "prefetch": prefetch() if pf is None else pf,
    }
    body.update(overrides)
    return body
