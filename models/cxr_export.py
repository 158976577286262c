"""Export a :class:`~models.cxr_net.CxrNet` to a single-file ONNX graph, verified.

The graph has one input ``image`` float32 ``[N, 1, S, S]`` and two outputs, ``logits``
``[N, L]`` and ``cam`` ``[N, L, h, w]`` (contract C7). The legacy TorchScript-based
exporter (``dynamo=False``) is used on purpose: the new exporter needs ``onnxscript``
and writes weights to a separate ``.onnx.data`` file, while serving accepts only
self-contained files (docs/performance.md). Every export is compared with the PyTorch
module on real preprocessed images, for the logits AND the map.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

from models.cxr_net import CXR_LABELS, CxrNet
from models.details import CxrCalibration, CxrDetails, PlattParams
from models.details import CxrParityReport as ParityReport
from models.metadata import ImageSpec, ModelMetadata, OperatingPoint, OutputSpec

__all__ = [
    "OPSET",
    "ExportError",
    "ParityReport",
    "check_parity",
    "cxr_metadata",
    "export_onnx",
    "quantize_int8",
]

OPSET = 17
PARITY_ATOL = 1e-4


class ExportError(RuntimeError):
    """The exported graph does not reproduce the PyTorch model."""


def export_onnx(
    net: torch.nn.Module, path: Path, size: int, outputs: tuple[str, ...] = ("logits", "cam")
) -> Path:
    """Write ``net`` (in eval mode) to ``path`` as one self-contained ONNX file.

    Args:
        net: the trained network (a :class:`CxrNet`, or a module wrapping one with more
            outputs, e.g. :class:`models.cxr_ood.OodScored`); switched to eval mode.
        path: destination ``.onnx`` file.
        size: the square input side the model was trained at.
        outputs: names of the module's outputs, in order.

    Returns:
        ``path``.
    """
    net.eval()
    example = torch.zeros(1, 1, size, size, dtype=torch.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        # The legacy exporter announces its own deprecation; we choose it deliberately.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (example,),
            str(path),
            input_names=["image"],
            output_names=list(outputs),
            dynamic_axes={"image": {0: "N"}} | {name: {0: "N"} for name in outputs},
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    onnx.checker.check_model(onnx.load(str(path), load_external_data=False))
    return path


def check_parity(
    net: CxrNet, onnx_path: Path, images: np.ndarray, atol: float = PARITY_ATOL
) -> ParityReport:
    """Compare PyTorch and ONNX Runtime on ``images`` and raise if they differ.

    Args:
        net: the PyTorch network the file was exported from.
        onnx_path: the exported file.
        images: float32 ``[N, 1, S, S]`` real preprocessed images (not noise).
        atol: the largest difference allowed for the logits (absolute) and the map
            (relative to its range, see :class:`ParityReport`).

    Returns:
        The differences measured.

    Raises:
        ExportError: either output differs by more than ``atol``.
    """
    net.eval()
    batch = np.ascontiguousarray(images, dtype=np.float32)
    with torch.no_grad():
        torch_logits, torch_cam = net(torch.from_numpy(batch))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(
        str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"]
    )
    ort_logits, ort_cam = session.run(["logits", "cam"], {"image": batch})
    cam = torch_cam.numpy()
    cam_diff = np.abs(ort_cam - cam)
    cam_range = cam.max(axis=(2, 3), keepdims=True) - cam.min(axis=(2, 3), keepdims=True)
    report = ParityReport(
        n_images=int(batch.shape[0]),
        max_abs_diff_logits=float(np.max(np.abs(ort_logits - torch_logits.numpy()))),
        max_abs_diff_cam=float(np.max(cam_diff)),
        max_scaled_diff_cam=float(np.max(cam_diff / np.maximum(cam_range, 1.0))),
        atol=atol,
    )
    if not report.ok:
        raise ExportError(
            f"ONNX export differs from PyTorch: max |diff| logits "
            f"{report.max_abs_diff_logits:.2e}, cam {report.max_scaled_diff_cam:.2e} of its "
            f"range ({report.max_abs_diff_cam:.2e} absolute); allowed {atol:.0e}"
        )
    return report


def cxr_metadata(
    *,
    name: str,
    version: str,
    image: ImageSpec,
    cam_shape: tuple[int, int],
    operating_points: list[OperatingPoint],
    calibration: dict[str, dict[str, float]],
    labels: tuple[str, ...] = CXR_LABELS,
    details: CxrDetails | None = None,
    **fields: Any,
) -> ModelMetadata:
    """Metadata for a ``cxr-triage`` artifact following contract C7.

    Args:
        name: model name, e.g. ``"cxr-triage"``.
        version: semantic version.
        image: the preprocessing contract the network was trained with.
        cam_shape: ``(h, w)`` of the map at ``image.size``.
        operating_points: one per label, on calibrated probabilities.
        calibration: label -> ``{"scale": a, "offset": b}``; p = sigmoid(a * logit + b).
        labels: output columns.
        details: what else training records (split, parity, gates, ...); the
            labels, map shape, calibration and opset set here replace its own.
        **fields: any other :class:`~models.metadata.ModelMetadata` field
            (metrics, config, limitations, ...).

    Returns:
        The metadata (``sha256`` is filled in by the registry on save).
    """
    own = {
        "labels": list(labels),
        "cam_shape": (int(cam_shape[0]), int(cam_shape[1])),
        "calibration": CxrCalibration(
            method="platt",
            params={label: PlattParams.model_validate(p) for label, p in calibration.items()},
        ),
        "onnx_opset": OPSET,
    }
    extra = CxrDetails.model_validate(own) if details is None else details.model_copy(update=own)
    fields.setdefault(
        "intended_use",
        "Advisory triage of adult (15+) frontal (PA/AP) chest radiographs, CR or DX: "
        "flags images for priority human reading. Not a diagnosis.",
    )
    return ModelMetadata(
        name=name,
        version=version,
        task="cxr-triage",
        image=image,
        inputs={"image": ["N", image.channels, image.size, image.size]},
        outputs=[
            OutputSpec(
                name="logits",
                meaning="raw logits [N, L]; calibrate with extra.calibration (Platt)",
                labels=list(labels),
            ),
            OutputSpec(
                name="cam",
                meaning=(
                    f"class activation maps [N, L, {cam_shape[0]}, {cam_shape[1]}]: final "
                    "feature map weighted by the classifier, raw (higher = more evidence); "
                    "logits = mean(cam) + bias"
                ),
                labels=list(labels),
            ),
        ],
        operating_points=operating_points,
        extra=extra,
        **fields,
    )


def quantize_int8(onnx_path: Path, out_path: Path, images: np.ndarray) -> Path:
    """Static QDQ int8 copy of an exported CXR graph, calibrated on real images.

    Dynamic int8 made convolutional nets 10-50x slower here and random-noise
    calibration is meaningless (docs/performance.md), so this is static, per-channel, QDQ,
    calibrated on ``images`` (float32 ``[N, 1, S, S]`` real preprocessed inputs).
    Keep the result only if its measured AUROC drop is < 0.005 and it is faster.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class _Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._rows = iter(np.ascontiguousarray(images, dtype=np.float32))

        def get_next(self) -> dict[str, np.ndarray] | None:
            row = next(self._rows, None)
            return None if row is None else {"image": row[None]}

    prepared = out_path.with_suffix(".pre.onnx")
    quant_pre_process(str(onnx_path), str(prepared))
    quantize_static(
        str(prepared),
        str(out_path),
        _Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
    )
    prepared.unlink(missing_ok=True)
    return out_path
