"""Build everything the demo serves, from synthetic data only (no downloads)."""

from __future__ import annotations

from pathlib import Path

import yaml
from rich.console import Console

__all__ = ["DEMO_DIR", "DEMO_ISSUERS_FILE", "DEMO_REQUEST", "build_demo", "write_demo_request"]

DEMO_DIR = Path(".tonle")
# Allowed-issuers YAML trusting the demo EHR's token issuer (serving/demo_issuer.py).
DEMO_ISSUERS_FILE = DEMO_DIR / "demo-issuer" / "allowed-issuers.yaml"
# A complete patient-view request (synthetic patient, full prefetch) to paste into curl.
DEMO_REQUEST = DEMO_DIR / "demo-request.json"
DEMO_REQUEST_PATIENT = "demo-02"


def build_demo(console: Console) -> Path:
    """Build (or reuse) the demo models and write the serving config pinning them.

    Returns:
        Path of the serving YAML that pins the demo models.
    """
    from serving.demo_issuer import ensure_demo_issuer

    DEMO_DIR.mkdir(exist_ok=True)
    ensure_demo_issuer(DEMO_ISSUERS_FILE.parent)
    console.print(f"demo EHR token issuer: {DEMO_ISSUERS_FILE}")
    pinned: dict[str, str] = {}
    from training.ncd_demo import build_ncd_demo

    pinned.update(build_ncd_demo(console))  # cvd-risk, diabetes-risk
    from training.cxr_demo import build_cxr_demo

    pinned.update(build_cxr_demo(console, demo_dir=DEMO_DIR))  # cxr-triage
    write_demo_request(DEMO_REQUEST)
    config_path = DEMO_DIR / "serving.yaml"
    config_path.write_text(
        "# Written by `tonle demo`: the demo models, pinned.\n"
        + yaml.safe_dump(_serving_config(pinned), sort_keys=True),
        encoding="utf-8",
    )
    console.print(f"demo models: {', '.join(pinned) or 'none yet'}; config {config_path}")
    return config_path


# CDS Hooks service id -> (model name, discovery title) for the demo NCD models.
_NCD_SERVICES = {
    "ncd-cvd-risk": ("cvd-risk", "10-year heart attack and stroke risk (Tonle model + WHO chart)"),
    "ncd-diabetes-risk": ("diabetes-risk", "10-year type 2 diabetes risk (Tonle model)"),
}


def _serving_config(pinned: dict[str, str]) -> dict[str, object]:
    """The demo serving YAML: pinned models and the CDS services that use them."""
    services = {
        service_id: {"model": model, "title": title}
        for service_id, (model, title) in _NCD_SERVICES.items()
        if model in pinned
    }
    config: dict[str, object] = {
        "models": pinned,
        "ncd_services": services,
        # The demo EHR shows why a patient got no estimate (demo-07: no blood pressure).
        "no_advice_card": True,
        # The demo models are trained on synthetic data: allowed here, said on every output.
        "allow_synthetic_models": True,
    }
    if "cxr-triage" in pinned:
        # Chest X-ray serving; the demo EHR's "send the X-ray" uses DEMO_DIR/cxr-synthetic.
        config["imaging"] = {"model": "cxr-triage"}
    return config


def write_demo_request(path: Path, patient_id: str = DEMO_REQUEST_PATIENT) -> Path:
    """Write a CDS Hooks ``patient-view`` request for a demo patient, prefetch filled in
    from the service's own templates as an EHR would."""
    import json
    import uuid

    from serving.prefetch import TEMPLATES
    from serving.ui import demo

    body = {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "context": {"userId": "Practitioner/demo-clinician", "patientId": patient_id},
        "prefetch": demo.prefetch(demo.patient(patient_id), dict(TEMPLATES)),
    }
    path.write_text(json.dumps(body, indent=2), encoding="utf-8")
    return path
