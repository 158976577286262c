"""The CXR out-of-distribution gate: what it refuses, and what it costs.

Trains a model with the real pipeline (``tonle train cxr`` code, synthetic radiographs,
the gate fitted on its training split and thresholded on its validation split), then
scores, with the exported ONNX artifact, images NOT used to fit or set the gate:

* in distribution: a fresh synthetic set (another seed) and the held-out test split;
* out of scope, from the same fresh images: inverted, upside down, rotated 90 degrees
  (a stand-in for a lateral view: there is no lateral renderer), cropped to a
  quarter, a third of the width (a narrow crop), uniform noise, blank grey;
* real DICOM images from other modalities and body parts that ship in pydicom's test
  data (CT, MR, US, NM, secondary capture), through the same preprocessing.

Prints the refused share of each (targets: <= 2 % in distribution, >= 95 % out of
scope) and the added time per image: ONNX Runtime batch 1, the same network exported
with and without the gate, median of interleaved runs.

Usage:
    .venv/bin/python benchmarks/bench_cxr_ood.py [--n 600] [--epochs 8] [--size 128]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import yaml

from models.config import load_config
from models.cxr_export import export_onnx
from models.cxr_predictor import CxrPredictor, refused
from models.cxr_preprocess import decode_dicom, to_model_input
from models.registry import ONNX_FILE
from training.cxr_data import load_cxr_data, patient_split
from training.cxr_synthetic import generate
from training.cxr_train import CxrTrainConfig, train_cxr

PYDICOM_FILES = (
    "CT_small.dcm", "MR_small.dcm", "examples_overlay.dcm", "examples_palette.dcm",
    "examples_jpeg2k.dcm", "JPEG2000.dcm", "J2K_pixelrep_mismatch.dcm", "693_J2KI.dcm",
    "image_dfl.dcm", "SC_rgb_jpeg.dcm", "examples_ybr_color.dcm",
)  # fmt: skip


def _pydicom_images(size: int) -> tuple[np.ndarray, list[str]]:
    from pydicom.data import get_testdata_file

    out, names = [], []
    for name in PYDICOM_FILES:
        path = get_testdata_file(name, download=False)
        if path is None:
            continue
        try:
            decoded = decode_dicom(Path(str(path)).read_bytes(), target_size=size)
        except Exception as exc:  # the decoder refuses it: it never reaches the model
            print(f"  {name}: refused by the decoder ({type(exc).__name__})")
            continue
        out.append(np.asarray(to_model_input(decoded, size=size), dtype=np.float32))
        names.append(name)
    return np.stack(out), names


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


def main() -> None:
    """Train, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=600, help="training set images")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--size", type=int, default=128, help="model input side")
    parser.add_argument("--fresh", type=int, default=300, help="fresh in-distribution images")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ood-bench-") as tmp:
        root = Path(tmp)
        labels = generate(root / "train", args.n, seed=7, size=256)
        raw = yaml.safe_load(Path("configs/cxr.yaml").read_text(encoding="utf-8"))
        raw["data"] = {"labels_csv": str(labels), "split": [0.6, 0.2, 0.2]}
        raw["model"]["image_size"] = args.size
        raw["train"]["epochs"] = args.epochs
        raw["gates"] = {"min_known_positives": 1, "min_auroc": 0.0, "min_sensitivity": 0.0,
                        "min_specificity": 0.0}  # fmt: skip
        raw["output"] |= {"version": "0.0.1-ood", "checkpoint_dir": str(root / "ckpt"),
                          "bootstrap_reps": 0}  # fmt: skip
        (root / "cfg.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
        import os

        os.environ["BENTOML_HOME"] = str(root / "store")
        start = time.perf_counter()
        stored = train_cxr(load_config(root / "cfg.yaml", CxrTrainConfig))
        assert stored is not None
        print(f"trained {stored.metadata.tag} in {time.perf_counter() - start:.0f} s; gate:")
        print(" ", stored.metadata.cxr.ood)
        predictor = CxrPredictor(stored, threads=2)

        data = load_cxr_data(labels, args.size)
        split = patient_split(data.table, (0.6, 0.2, 0.2), 0)
        test = data.images[split.test]
        fresh = load_cxr_data(generate(root / "fresh", args.fresh, seed=12345, size=256), args.size)
        x = fresh.images
        rng = np.random.default_rng(0)
        s = args.size
        crop = np.stack([to_model_input_array(img[0, : s // 2, : s // 2], s) for img in x])
        narrow = np.stack([to_model_input_array(img[0, :, s // 3 : 2 * s // 3], s) for img in x])
        real, names = _pydicom_images(s)
        cases = {
            "in distribution: held-out test split": test,
            "in distribution: fresh synthetic (new seed)": x,
            "inverted": 1.0 - x,
            "upside down": x[:, :, ::-1, :],
            "rotated 90 degrees": np.rot90(x, axes=(2, 3)),
            "cropped to the top-left quarter": crop,
            "cropped to the middle third": narrow,
            "uniform noise": rng.random(x.shape, dtype=np.float32),
            "blank grey": np.full_like(x[:20], 0.5),
            f"real DICOM, other modalities ({len(names)})": real,
        }
        out_of_scope = []
        for name, images in cases.items():
            score = _scores(predictor, images)
            rate = float(refused(score).mean())
            if not name.startswith("in distribution"):
                out_of_scope.append((rate, len(images)))
            low, high = np.quantile(score, [0.01, 0.99])
            print(
                f"{name:48s} n={len(images):4d}  refused {rate:6.1%}  "
                f"score 1st-99th percentile {low:8.2f} - {high:8.2f}"
            )
        pooled = sum(r * n for r, n in out_of_scope) / sum(n for _, n in out_of_scope)
        print(f"{'out of scope, pooled':48s}          refused {pooled:6.1%}")
        per_file = refused(predictor.raw_with_ood(real)[2])
        print("  real files refused:", dict(zip(names, per_file.tolist(), strict=True)))

        import torch

        from models.cxr_net import CxrNet

        net = CxrNet(raw["model"]["arch"], num_labels=5)
        net.load_state_dict(torch.load(root / "ckpt" / "last.pt", weights_only=True)["model"])
        plain = export_onnx(net, root / "plain.onnx", s)
        gated = stored.path / ONNX_FILE
        one = np.ascontiguousarray(x[:1])
        a, b = [], []
        for _ in range(3):  # interleaved, to share the machine's load
            a.append(_latency(plain, ["logits", "cam"], one))
            b.append(_latency(gated, ["logits", "cam", "ood_score"], one))
        print(
            f"model call, batch 1, 1 thread, median: without gate {min(a):.3f} ms, with "
            f"gate {min(b):.3f} ms, added {min(b) - min(a):+.3f} ms per image"
        )


def to_model_input_array(pixels: np.ndarray, size: int) -> np.ndarray:
    """A crop of a model input, resized back to the model input (area resize)."""
    from models.cxr_preprocess import area_resize

    return np.asarray(area_resize(pixels.astype(np.float32), (size, size)))[None]


if __name__ == "__main__":
    main()
