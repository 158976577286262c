"""A tiny real ``cxr-triage`` artifact (contract C7) for model and serving tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from models.cxr_export import check_parity, cxr_metadata, export_onnx
from models.cxr_net import CXR_LABELS, CxrNet
from models.metadata import ImageSpec, OperatingPoint
from models.registry import StoredModel, save

__all__ = ["make_cxr_artifact", "tiny_images"]


def tiny_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Smooth blob images ``[n, 1, size, size]`` in [0, 1] (not white noise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = np.empty((n, 1, size, size), dtype=np.float32)
    for i in range(n):
        cy, cx, r = rng.uniform(0.25, 0.75), rng.uniform(0.25, 0.75), rng.uniform(0.05, 0.2)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r**2))
        out[i, 0] = 0.3 + 0.5 * blob + 0.05 * rng.standard_normal((size, size))
    return np.clip(out, 0.0, 1.0)


def make_cxr_artifact(
    tmp_path: Path,
    *,
    size: int = 64,
    name: str = "cxr-triage",
    version: str = "0.0.1",
    seed: int = 0,
) -> StoredModel:
    """Export an untrained ``resnet-small`` CxrNet at ``size`` px and save it in the store.

    Use with the ``model_store`` fixture so the store is private to the test.
    Thresholds are 0.5 with made-up sensitivity; calibration is the identity.
    """
    torch.manual_seed(seed)
    net = CxrNet("resnet-small").eval()
    onnx_path = export_onnx(net, tmp_path / f"{name}-{version}.onnx", size)
    check_parity(net, onnx_path, tiny_images(4, size, seed))
    with torch.no_grad():
        _, cam = net(torch.zeros(1, 1, size, size))
    meta = cxr_metadata(
        name=name,
        version=version,
        image=ImageSpec(size=size, normalisation="test fixture: none"),
        cam_shape=(int(cam.shape[2]), int(cam.shape[3])),
        operating_points=[
            OperatingPoint(label=label, threshold=0.5, chosen_on="test fixture")
            for label in CXR_LABELS
        ],
        calibration={label: {"scale": 1.0, "offset": 0.0} for label in CXR_LABELS},
        description="untrained test fixture",
    )
    return save(onnx_path, meta)
