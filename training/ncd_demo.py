"""Demo NCD models (``cvd-risk``, ``diabetes-risk``) from the synthetic cohort.

Called by :func:`training.demo.build_demo`. Both models are trained by the real
pipeline (synthetic FHIR Bulk NDJSON -> feature table -> train -> parity-checked ONNX
-> registry) on one small seeded cohort, and pinned at :data:`DEMO_VERSION`. A
version already in the store is verified and reused, so a second ``make demo`` is
instant.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from rich.console import Console

__all__ = ["DEMO_COHORT", "DEMO_SEED", "DEMO_VERSION", "build_ncd_demo"]

# 0.2.0: models carry what each missing input is scored as (training/ncd_missing.py),
# and bp_treated / diabetes follow one rule in training and serving. The 365-day
# look-back (was 730; now recorded in the metadata) leaves the demo's feature table as
# it was: every synthetic measurement is less than a year before the index date.
DEMO_VERSION = "0.2.0-demo"
DEMO_COHORT = 16_000  # enough for >= 10,000 parity rows after excluding diabetics
DEMO_SEED = 2026


def build_ncd_demo(console: Console, card_root: Path = Path(".tonle/cards")) -> dict[str, str]:
    """Build (or reuse) the demo NCD models; returns ``{name: version}`` to pin."""
    from models import registry
    from models.config import load_config
    from models.ncd_lookback import LOOKBACK_DAYS
    from training.ncd_config import NcdTrainConfig
    from training.ncd_table import load_table
    from training.ncd_train import train

    names = ("cvd-risk", "diabetes-risk")
    missing = []
    for name in names:
        try:
            registry.verify(name, DEMO_VERSION)
            console.print(f"reusing {name}:{DEMO_VERSION}")
        except Exception:  # ArtifactError, or bentoml's NotFound for an unknown name
            missing.append(name)
    if missing:
        from training.synthetic_ncd import INDEX_DATE, generate

        with tempfile.TemporaryDirectory() as tmp:
            console.print(f"demo NCD models: {DEMO_COHORT} synthetic patients (seed {DEMO_SEED})")
            folder = generate(Path(tmp) / "ndjson", DEMO_COHORT, DEMO_SEED)
            table = load_table(folder, INDEX_DATE.isoformat(), LOOKBACK_DAYS)
        for name in missing:
            cfg = load_config(Path("configs") / f"{name}.yaml", NcdTrainConfig)
            cfg = cfg.model_copy(
                update={
                    "description": cfg.description + " DEMO: trained on synthetic data only.",
                    "evaluation": cfg.evaluation.model_copy(update={"bootstrap_reps": 50}),
                }
            )
            train(
                cfg,
                table,
                version=DEMO_VERSION,
                card_root=card_root,
                lookback_days=LOOKBACK_DAYS,
                accept_worse_than_who="demo model: synthetic training data, not for clinical use",
                progress=lambda line: console.print(f"  {line}", highlight=False),
            )
    return dict.fromkeys(names, DEMO_VERSION)
