"""CxrNet: shapes, the logits/CAM identity, and ONNX export parity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.cxr_export import ExportError, check_parity, export_onnx
from models.cxr_net import CxrNet
from models.registry import check_onnx_graph
from tests.cxr_fixtures import tiny_images


@pytest.mark.parametrize(
    ("arch", "size", "cam_side"),
    [
        ("resnet-small", 64, 4),
        ("resnet-small", 224, 14),
        ("resnet-small-fine", 64, 8),
        ("resnet-small-fine", 224, 28),
        ("resnet18", 64, 2),
        ("densenet121", 32, 1),
    ],
)
def test_shapes_and_cam_explains_logits(arch: str, size: int, cam_side: int) -> None:
    torch.manual_seed(0)
    net = CxrNet(arch).eval()  # type: ignore[arg-type]
    with torch.no_grad():
        net.bias.copy_(torch.tensor([0.1, -0.2, 0.3, 0.0, -1.0]))
        logits, cam = net(torch.from_numpy(tiny_images(2, size)))
    assert logits.shape == (2, 5)
    assert cam.shape == (2, 5, cam_side, cam_side)
    torch.testing.assert_close(logits, cam.mean(dim=(2, 3)) + net.bias, atol=1e-5, rtol=0)


def test_cam_localises_what_the_classifier_sees() -> None:
    # A classifier that only reads one feature channel makes the map follow that channel.
    torch.manual_seed(0)
    net = CxrNet("resnet-small").eval()
    x = torch.from_numpy(tiny_images(1, 64))
    with torch.no_grad():
        fmap = net.features(x)
        net.classifier.weight.zero_()
        net.classifier.weight[0, 3] = 1.0
        _, cam = net(x)
    torch.testing.assert_close(cam[0, 0], fmap[0, 3])


def test_unknown_arch_is_refused() -> None:
    with pytest.raises(ValueError, match="resnet-small"):
        CxrNet("vgg")  # type: ignore[arg-type]


@pytest.mark.parametrize("arch", ["resnet-small", "resnet-small-fine"])
def test_onnx_export_parity_and_single_file(tmp_path: Path, arch: str) -> None:
    torch.manual_seed(1)
    net = CxrNet(arch)  # type: ignore[arg-type]
    path = export_onnx(net, tmp_path / "m.onnx", 64)
    check_onnx_graph(path)  # self-contained, no custom ops
    assert list(tmp_path.iterdir()) == [path]
    report = check_parity(net, path, tiny_images(3, 64, seed=2))
    assert report.ok
    assert report.max_abs_diff_logits <= 1e-4
    assert report.max_scaled_diff_cam <= 1e-4
    assert report.max_abs_diff_cam <= 1e-4  # an untrained net's map is small
    assert report.n_images == 3


def test_parity_failure_is_raised(tmp_path: Path) -> None:
    torch.manual_seed(1)
    net = CxrNet("resnet-small")
    path = export_onnx(net, tmp_path / "m.onnx", 64)
    with torch.no_grad():
        net.bias.add_(0.01)  # the module now differs from the file
    with pytest.raises(ExportError, match="logits"):
        check_parity(net, path, tiny_images(2, 64))
    assert np.isfinite(tiny_images(1, 64)).all()


def test_map_parity_is_judged_on_the_scale_the_heatmap_is_shown_at() -> None:
    from models.cxr_export import ParityReport

    def report(absolute: float, scaled: float, logits: float = 1e-5) -> ParityReport:
        return ParityReport(
            n_images=16,
            max_abs_diff_logits=logits,
            max_abs_diff_cam=absolute,
            max_scaled_diff_cam=scaled,
            atol=1e-4,
        )

    # Measured on the demo model: float32 noise on maps spanning -31 to 127.
    assert report(1.3e-4, 3.7e-6).ok
    assert not report(1.3e-4, 2e-4).ok  # the map itself differs
    assert not report(1e-6, 1e-6, logits=2e-4).ok


def test_static_int8_variant_runs_and_stays_close(tmp_path: Path) -> None:
    import onnx
    import onnxruntime as ort

    from models.cxr_export import quantize_int8

    torch.manual_seed(3)
    net = CxrNet("resnet-small").eval()
    fp32 = export_onnx(net, tmp_path / "m.onnx", 64)
    images = tiny_images(8, 64, seed=4)
    int8 = quantize_int8(fp32, tmp_path / "m-int8.onnx", images)
    check_onnx_graph(int8)
    ops = {node.op_type for node in onnx.load(str(int8)).graph.node}
    assert "QuantizeLinear" in ops
    a = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(str(int8), providers=["CPUExecutionProvider"])
    la = a.run(["logits"], {"image": images})[0]
    lb = b.run(["logits"], {"image": images})[0]
    assert np.abs(la - lb).max() < 0.1 * (np.abs(la).max() + 1e-3) + 0.05
