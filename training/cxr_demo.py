"""Demo chest X-ray model (``cxr-triage``) from the synthetic radiographs of training.cxr_synthetic.

Called by :func:`training.demo.build_demo`. It runs the real pipeline (synthetic
DICOM -> ``models.cxr_preprocess`` -> train -> calibrate -> operating points ->
parity-checked ONNX -> evaluation -> registry) with ``configs/cxr.yaml`` and pins
:data:`DEMO_VERSION`. A version already in the store is verified and reused.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

__all__ = ["DEMO_VERSION", "build_cxr_demo"]

# 0.2.0: mask-supervised 28x28 maps, smoothed Platt, bounded OPs.
# 0.3.0: each finding's map supervised with its own mask (per-finding synthetic masks).
DEMO_VERSION = "0.4.0-demo"
DEMO_NAME = "cxr-triage"


def build_cxr_demo(
    console: Console,
    config: Path = Path("configs/cxr.yaml"),
    demo_dir: Path = Path(".tonle"),
) -> dict[str, str]:
    """Build (or reuse) the demo CXR model; returns ``{name: version}`` to pin."""
    from models import registry

    try:
        registry.verify(DEMO_NAME, DEMO_VERSION)
    except Exception as exc:  # ArtifactError, or bentoml's NotFound for an unknown name
        console.print(f"no usable {DEMO_NAME}:{DEMO_VERSION} ({type(exc).__name__}); building it")
    else:
        console.print(f"reusing {DEMO_NAME}:{DEMO_VERSION}")
        return {DEMO_NAME: DEMO_VERSION}
    from models.config import load_config
    from training.cxr_cli import train_with_progress
    from training.cxr_datasets import FINDING_MASKS_CSV
    from training.cxr_synthetic import generate
    from training.cxr_train import CxrTrainConfig

    cfg = load_config(config, CxrTrainConfig)
    labels_csv = demo_dir / "cxr-synthetic" / "labels.csv"
    cfg = cfg.model_copy(
        update={
            "data": cfg.data.model_copy(update={"labels_csv": labels_csv}),
            "output": cfg.output.model_copy(
                update={
                    "name": DEMO_NAME,
                    "version": DEMO_VERSION,
                    # Per version: resuming another version's finished checkpoint would
                    # skip training and register its weights under this version.
                    "checkpoint_dir": demo_dir / "checkpoints" / f"cxr-demo-{DEMO_VERSION}",
                    "bootstrap_reps": 200,
                }
            ),
        }
    )
    synthetic = cfg.data.synthetic
    if synthetic is not None and labels_csv.exists():
        rows = sum(1 for _ in labels_csv.open(encoding="utf-8")) - 1
        if rows != synthetic.n or not (labels_csv.parent / FINDING_MASKS_CSV).exists():
            # Written by an earlier version (fewer images, or before the generator wrote
            # per-finding masks): the same seed gives the same images, plus the rest.
            console.print(
                f"{labels_csv.parent}: regenerating {synthetic.n} images with their masks"
            )
            generate(labels_csv.parent, synthetic.n, synthetic.seed, size=synthetic.size)
    console.print(f"demo CXR model: training {DEMO_NAME}:{DEMO_VERSION} on synthetic radiographs")
    stored = train_with_progress(cfg, resume=True)
    if stored is None:
        raise RuntimeError("CXR demo training returned no artifact")
    return {DEMO_NAME: DEMO_VERSION}
