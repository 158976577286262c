"""The CXR out-of-distribution gate: what it refuses, and what it costs.

Trains a model with the real pipeline (``tonle train cxr`` code, synthetic radiographs,
the gate fitted on its training split and thresholded on its validation split), then
scores, with the exported ONNX artifact, images NOT used to fit or set the gate:

* in distribution: a fresh synthetic set (another seed) and the held-out test split;
* out of scope, from the same fresh images: inverted, upside down, rotated 90 degrees
  (a stand-in for a lateral view: there is no lateral renderer), cropped to a
  quarter, a third of the width (a narrow crop), uniform noise, blank grey, a
  scanned-film look (blur, grain and a frame), burned-in text and a metal marker;
* REAL images (:data:`REAL_FILES`): the real radiographs of the ``pydicom-data``
  package (a CR chest PA, a CR knee/leg AP; installed by the dev extras) and the
  CT / MR / US / NM images of pydicom's own test data, plus any DICOM or PNG files
  given with ``--real``. Each is decoded like serving decodes it and reported twice:
  what serving answers (the quality gate of ``models.cxr_quality`` first, which reads
  the DICOM header, then the model's gate), and what the model's gate says of the
  pixels alone (as if the header were wrong or the image came as a PNG).

Prints the refused share of each (targets: <= 2 % in distribution, >= 95 % out of
scope, every real image) and the added time per image: ONNX Runtime batch 1, the same
network exported with and without the gate, median of interleaved runs.

Usage:
    .venv/bin/python benchmarks/bench_cxr_ood.py [--n 600] [--epochs 8] [--size 128]
        [--store DIR] [--real FILE_OR_DIR ...]

``--store DIR`` keeps the trained model and its data in DIR and reuses them next time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import onnxruntime as ort
import yaml

from models.config import load_config
from models.cxr_export import export_onnx
from models.cxr_predictor import CxrPredictor, refused
from models.cxr_preprocess import area_resize, decode_image, to_model_input
from models.cxr_quality import assess
from models.registry import ONNX_FILE, StoredModel
from training.cxr_data import load_cxr_data, patient_split
from training.cxr_synthetic import generate
from training.cxr_train import CxrTrainConfig, train_cxr

# Real images found by pydicom.data.get_testdata_file (pydicom's wheel, then the
# pydicom-data package): name -> what it is. A missing file is reported and skipped.
REAL_FILES = {
    "RG1_UNCI.dcm": "CR chest PA (pydicom-data)",
    "RG1_J2KI.dcm": "CR chest PA, JPEG 2000 lossy (pydicom-data)",
    "RG3_UNCI.dcm": "CR knee/leg AP (pydicom-data)",
    "RG3_J2KI.dcm": "CR knee/leg AP, JPEG 2000 lossy (pydicom-data)",
    "MR2_UNCI.dcm": "MR shoulder (pydicom-data)",
    "693_UNCI.dcm": "CT (pydicom-data)",
    "JPEG-LL.dcm": "NM whole-body bone scan (pydicom-data)",
    "CT_small.dcm": "CT (pydicom)",
    "MR_small.dcm": "MR (pydicom)",
    "examples_overlay.dcm": "MR abdomen (pydicom)",
    "J2K_pixelrep_mismatch.dcm": "CT head (pydicom)",
    "693_J2KI.dcm": "CT (pydicom)",
    "JPEG2000.dcm": "NM whole-body bone scan (pydicom)",
    "examples_palette.dcm": "US, palette colour (pydicom)",
    "examples_ybr_color.dcm": "US, colour (pydicom)",
}
CHEST = ("RG1_UNCI.dcm", "RG1_J2KI.dcm")


class RealImage(NamedTuple):
    """One real image: its model input and what serving's quality gate said."""

    name: str
    what: str
    pixels: np.ndarray | None  # [1, S, S], None when the decoder refused it
    quality: str  # "passes" or the quality gate's (or the decoder's) reason


def real_paths(extra: list[Path]) -> list[tuple[str, str, Path]]:
    """``(name, description, path)`` of the real images that are here."""
    from pydicom.data import get_testdata_file

    out = []
    for name, what in REAL_FILES.items():
        found = get_testdata_file(name, download=False)
        if found is None:
            print(f"  {name} ({what}): not installed, skipped")
        else:
            out.append((name, what, Path(str(found))))
    for path in extra:
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        out += [(p.name, "given with --real", p) for p in files]
    return out


def load_real(paths: list[tuple[str, str, Path]], size: int) -> list[RealImage]:
    """Decode each file as serving does (model input size), and run the quality gate."""
    out = []
    for name, what, path in paths:
        try:
            decoded = decode_image(path.read_bytes(), target_size=size)
        except ValueError as exc:  # ImageError: refused before the model
            out.append(RealImage(name, what, None, f"decoder: {getattr(exc, 'reason', exc)}"))
            continue
        verdict = assess(decoded)
        quality = "passes" if verdict.ok else f"quality gate: {verdict.reason}"
        pixels = None
        if decoded.pixels.ndim == 2:
            pixels = np.asarray(to_model_input(decoded, size=size), dtype=np.float32)
        out.append(RealImage(name, what, pixels, quality))
    return out


def out_of_scope(x: np.ndarray, size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Out-of-scope versions of in-distribution model inputs ``[N, 1, S, S]``."""
    rng = np.random.default_rng(seed)
    s = size

    def resized(crops: list[np.ndarray]) -> np.ndarray:
        return np.stack(
            [np.asarray(area_resize(c.astype(np.float32), (s, s)))[None] for c in crops]
        )

    yy, xx = np.mgrid[0:s, 0:s]
    film = []  # a photographed / scanned film: soft, grainy, darker frame, light fall-off
    for img in x[:, 0]:
        soft = np.asarray(area_resize(area_resize(img, (s // 4, s // 4)), (s, s)))
        vignette = 1.0 - 0.5 * (((yy - s / 2) ** 2 + (xx - s / 2) ** 2) / (s / 2) ** 2)
        page = 0.15 + 0.7 * soft * vignette + rng.normal(0, 0.06, (s, s))
        edge = s // 10  # the film's frame
        page[:edge], page[-edge:], page[:, :edge], page[:, -edge:] = 0.9, 0.9, 0.9, 0.9
        film.append(np.clip(page, 0, 1)[None])
    marked = x.copy()  # burned-in text block and a metal marker (artefacts)
    marked[:, :, s // 20 : s // 5, s // 20 : s // 2] = 1.0
    marked[:, :, s // 2 - s // 12 : s // 2 + s // 12, s // 2 - s // 12 : s // 2 + s // 12] = 1.0
    return {
        "inverted": 1.0 - x,
        "upside down": x[:, :, ::-1, :],
        "rotated 90 degrees": np.rot90(x, axes=(2, 3)),
        "cropped to the top-left quarter": resized([i[0, : s // 2, : s // 2] for i in x]),
        "cropped to the middle third": resized([i[0, :, s // 3 : 2 * s // 3] for i in x]),
        "uniform noise": rng.random(x.shape, dtype=np.float32),
        "blank grey": np.full_like(x[:20], 0.5),
        "scanned film look": np.stack(film).astype(np.float32),
        "burned-in text and marker": marked,
    }


def train(root: Path, n: int, epochs: int, size: int) -> tuple[StoredModel, Path]:
    """Train (or reuse) the benchmark's model in ``root``; ``(artifact, labels.csv)``."""
    from models import registry

    os.environ["BENTOML_HOME"] = str(root / "store")
    labels = root / "train" / "labels.csv"
    version = "0.0.1-ood"
    try:
        stored = registry.verify("cxr-triage", version)
    except Exception:  # not trained yet (or damaged): train it
        pass
    else:
        assert stored.metadata.image is not None
        if stored.metadata.image.size != size:
            raise SystemExit(f"{root} holds a {stored.metadata.image.size} px model")
        print(f"reusing {stored.metadata.tag} from {root}")
        return stored, labels
    if not labels.exists():
        labels = generate(root / "train", n, seed=7, size=256)
    raw = yaml.safe_load(Path("configs/cxr.yaml").read_text(encoding="utf-8"))
    raw["data"] = {"labels_csv": str(labels), "split": [0.6, 0.2, 0.2]}
    raw["model"]["image_size"] = size
    raw["train"]["epochs"] = epochs
    raw["gates"] = {"min_known_positives": 1, "min_auroc": 0.0, "min_sensitivity": 0.0,
                    "min_specificity": 0.0}  # fmt: skip
    raw["output"] |= {"version": version, "checkpoint_dir": str(root / "ckpt"),
                      "bootstrap_reps": 0}  # fmt: skip
    (root / "cfg.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
    start = time.perf_counter()
    # resume: a finished checkpoint in --store is packaged again, not retrained.
    trained = train_cxr(load_config(root / "cfg.yaml", CxrTrainConfig), resume=True)
    assert trained is not None
    print(f"trained {trained.metadata.tag} in {time.perf_counter() - start:.0f} s")
    return trained, labels


def _scores(predictor: CxrPredictor, images: np.ndarray) -> np.ndarray:
    _, _, score = predictor.raw_with_ood(np.ascontiguousarray(images, dtype=np.float32))
    return np.asarray(score)


def _latency(path: Path, outputs: list[str], image: np.ndarray) -> float:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for _ in range(20):
        session.run(outputs, {"image": image})
    times = []
    for _ in range(300):
        start = time.perf_counter()
        session.run(outputs, {"image": image})
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def _report_real(predictor: CxrPredictor, real: list[RealImage]) -> list[tuple[float, int]]:
    """Print each real image's verdicts; ``(refused share, n)`` of the pixels-alone rows."""
    print("real images: serving's answer (quality gate, then the model's gate) / model gate on")
    print("the pixels alone (score > 1 = refused)")
    scored = [(r.name, r.pixels) for r in real if r.pixels is not None]
    by_name: dict[str, float] = {}
    if scored:
        scores = _scores(predictor, np.stack([pixels for _, pixels in scored]))
        by_name = {name: float(s) for (name, _), s in zip(scored, scores, strict=True)}
    for r in real:
        score = by_name.get(r.name)
        if r.quality != "passes":
            serving = f"refused ({r.quality})"
        else:
            serving = "refused (out-of-distribution)" if score is not None and score > 1 else "READ"
        alone = "n/a (not greyscale)" if score is None else f"score {score:9.2f}"
        print(f"  {r.name:28s} {r.what:44s} serving: {serving:40s} model gate: {alone}")
    rows = []
    for label, names in (
        ("real chest radiographs", [n for n in by_name if n in CHEST]),
        ("real other images", [n for n in by_name if n not in CHEST]),
    ):
        if names:
            rate = float(refused(np.array([by_name[n] for n in names])).mean())
            name = f"{label}, model gate on pixels alone"
            print(f"{name:48s} n={len(names):4d}  refused {rate:6.1%}")
            rows.append((rate, len(names)))
    return rows


def main() -> None:
    """Train, measure, print."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, default=600, help="training set images")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--size", type=int, default=128, help="model input side")
    parser.add_argument("--fresh", type=int, default=300, help="fresh in-distribution images")
    parser.add_argument("--store", type=Path, help="keep (and reuse) the model and data here")
    parser.add_argument("--real", type=Path, nargs="*", default=[], help="more real images")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ood-bench-") as tmp:
        root = args.store or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        stored, labels = train(root, args.n, args.epochs, args.size)
        print("gate:", stored.metadata.cxr.ood)
        predictor = CxrPredictor(stored, threads=2)
        s = args.size

        data = load_cxr_data(labels, s)
        split = patient_split(data.table, (0.6, 0.2, 0.2), 0)
        fresh_csv = root / f"fresh{args.fresh}" / "labels.csv"
        if not fresh_csv.exists():
            fresh_csv = generate(fresh_csv.parent, args.fresh, seed=12345, size=256)
        x = load_cxr_data(fresh_csv, s).images
        cases = {
            "in distribution: held-out test split": data.images[split.test],
            "in distribution: fresh synthetic (new seed)": x,
            **out_of_scope(x, s),
        }
        scope = []
        for name, images in cases.items():
            score = _scores(predictor, images)
            rate = float(refused(score).mean())
            if not name.startswith("in distribution"):
                scope.append((rate, len(images)))
            low, high = np.quantile(score, [0.01, 0.99])
            print(
                f"{name:48s} n={len(images):4d}  refused {rate:6.1%}  "
                f"score 1st-99th percentile {low:8.2f} - {high:8.2f}"
            )
        pooled = sum(r * n for r, n in scope) / sum(n for _, n in scope)
        print(f"{'out of scope (transforms), pooled':48s}          refused {pooled:6.1%}")
        _report_real(predictor, load_real(real_paths(args.real), s))

        import torch

        from models.cxr_net import CxrNet

        net = CxrNet(load_config(root / "cfg.yaml", CxrTrainConfig).model.arch)
        net.load_state_dict(torch.load(root / "ckpt" / "last.pt", weights_only=True)["model"])
        plain = export_onnx(net, Path(tmp) / "plain.onnx", s)
        gated = stored.path / ONNX_FILE
        one = np.ascontiguousarray(x[:1])
        a, b = [], []
        for _ in range(3):  # interleaved, to share the machine's load
            a.append(_latency(plain, ["logits", "cam"], one))
            b.append(_latency(gated, ["logits", "cam", "ood_score"], one))
        print(
            f"model call, batch 1, 1 thread, median: without gate {min(a):.3f} ms, with "
            f"gate {min(b):.3f} ms, added {min(b) - min(a):+.3f} ms per image "
            f"(load average {Path('/proc/loadavg').read_text().split()[0]})"
        )


if __name__ == "__main__":
    main()
