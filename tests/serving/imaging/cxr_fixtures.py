"""A tiny C7-contract CXR model and DICOM files built in code, for serving tests.

The model: ``image [N,1,S,S]`` -> average pool to ``[N,1,8,8]`` -> 1x1 conv with one
weight per label = ``cam [N,5,8,8]``; ``logits = mean(cam) + bias``. Brighter images
score higher, and the map is hottest where the image is brightest, so tests can
check polarity and localisation with a known image.
"""

from __future__ import annotations

import functools
import io
from datetime import date
from pathlib import Path

import numpy as np
import onnx
import pydicom
from onnx import TensorProto, helper, numpy_helper
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from models import registry
from models.details import CxrDetails, FeatureBins
from models.metadata import ImageSpec, ModelMetadata, OperatingPoint, OutputSpec
from models.registry import StoredModel
from tests.serving.cds_fixtures import build_store, model_store_at, write_config

LABELS = ["abnormal", "tb", "nodule", "consolidation", "effusion"]
CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"


def write_cxr_onnx(path: Path, size: int = 64, map_side: int = 8) -> Path:
    """Write the tiny CAM model for ``size`` x ``size`` inputs."""
    kernel = size // map_side
    weights = np.array([6.0, 3.0, 3.0, 3.0, 3.0], dtype=np.float32).reshape(5, 1, 1, 1)
    bias = np.array([-3.0, -3.0, -3.0, -3.0, -3.0], dtype=np.float32)
    nodes = [
        helper.make_node(
            "AveragePool",
            ["image"],
            ["pooled"],
            kernel_shape=[kernel, kernel],
            strides=[kernel, kernel],
        ),
        helper.make_node("Conv", ["pooled", "w"], ["cam"]),
        helper.make_node("ReduceMean", ["cam"], ["mean"], axes=[2, 3], keepdims=0),
        helper.make_node("Add", ["mean", "b"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny-cxr",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, size, size])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 5]),
            helper.make_tensor_value_info("cam", TensorProto.FLOAT, ["N", 5, map_side, map_side]),
        ],
        initializer=[numpy_helper.from_array(weights, "w"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def make_cxr_artifact(
    tmp_path: Path,
    size: int = 64,
    version: str = "0.1.0",
    threshold: float = 0.5,
    reference: dict[str, FeatureBins] | None = None,
) -> StoredModel:
    """Save the tiny model in the (test's private) registry with operating points and,
    when given, a drift ``reference`` (``CxrDetails.training_distribution``)."""
    onnx_path = write_cxr_onnx(tmp_path / f"tiny-cxr-{version}.onnx", size)
    metadata = ModelMetadata(
        name="cxr-triage",
        version=version,
        task="cxr-triage",
        description="tiny test model",
        image=ImageSpec(size=size, normalisation="test"),
        inputs={"image": ["N", 1, size, size]},
        outputs=[
            OutputSpec(name="logits", meaning="per-label logits", labels=LABELS),
            OutputSpec(name="cam", meaning="class activation maps", labels=LABELS),
        ],
        extra=CxrDetails(labels=LABELS, training_distribution=reference or {}),
        operating_points=[
            OperatingPoint(
                label=label,
                threshold=threshold,
                sensitivity=0.9,
                specificity=0.7,
                chosen_on="validation, sensitivity >= 0.90",
            )
            for label in LABELS
        ],
    )
    return registry.save(onnx_path, metadata)


@functools.lru_cache(maxsize=4)
def _synthetic(rows: int, cols: int) -> np.ndarray:
    from training.cxr_synthetic import render_case

    return render_case(7, 0, (rows, cols), findings=[]).image


def radiograph(rows: int = 256, cols: int = 240, bright_box: bool = True) -> np.ndarray:
    """A 12-bit synthetic frontal chest radiograph (training.cxr_synthetic, no findings).

    With ``bright_box`` a dense square sits in the upper right lung field.
    """
    image = _synthetic(rows, cols) * 4000.0
    if bright_box:
        image = image.copy()
        image[rows // 5 : rows // 3, cols * 5 // 8 : cols * 3 // 4] = 4000.0
    return image.astype(np.uint16)


def dicom_bytes(
    pixels: np.ndarray | None = None,
    *,
    modality: str = "CR",
    view: str = "PA",
    body_part: str = "CHEST",
    photometric: str = "MONOCHROME2",
    patient_id: str = "PAT-001",
    study_uid: str | None = None,
    series_uid: str | None = None,
) -> bytes:
    """A valid single-frame CR/DX DICOM file (Part 10 bytes) with synthetic attributes."""
    pixels = radiograph() if pixels is None else pixels
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CR_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = CR_STORAGE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.PatientID = patient_id
    ds.PatientName = "Synthetic^Person"
    ds.PatientSex = "F"
    ds.PatientBirthDate = "19800101"
    ds.StudyDate = date.today().strftime("%Y%m%d")
    ds.StudyTime = "101010"
    ds.AccessionNumber = "ACC1"
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.Modality = modality
    ds.BodyPartExamined = body_part
    ds.ViewPosition = view
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 12 if int(pixels.max()) < 4096 else 16
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    ds.PixelSpacing = [0.2, 0.2]
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def read(data: bytes) -> pydicom.Dataset:
    """Parse Part 10 bytes."""
    return pydicom.dcmread(io.BytesIO(data))


def served_store(tmp: Path, **config: object) -> tuple[Path, StoredModel, Path]:
    """The two NCD fixture models and a 64 px chest X-ray model stored under
    ``tmp/store``, and a serving config (in ``tmp/config``) serving all three.

    Returns:
        The store's home, the stored X-ray model and the config's path.
    """
    home = build_store(tmp / "store")
    with model_store_at(home):
        cxr = make_cxr_artifact(tmp / "store")
    # Its own folder: TonleProcess writes a plain serving.yaml into ``tmp``.
    (tmp / "config").mkdir()
    models = {"cvd-risk": "1.0.0", "diabetes-risk": "1.0.0", "cxr-triage": cxr.metadata.version}
    path = write_config(tmp / "config", models=models, imaging={"model": "cxr-triage"}, **config)
    return home, cxr, path
