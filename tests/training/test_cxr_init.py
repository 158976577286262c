"""Pretrained weights the user brings, mapped onto CxrNet (locally made files only)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from torchvision.models import densenet121, resnet18

from models.cxr_net import CxrNet
from training.cxr_init import load_init_weights


def test_torchvision_densenet121_layout(tmp_path: Path) -> None:
    source = densenet121(weights=None).state_dict()  # the ImageNet checkpoint's layout
    path = tmp_path / "densenet121.pth"
    torch.save(source, path)
    net = CxrNet("densenet121")
    report = load_init_weights(net, path, origin="made in this test")
    assert report.layout == "densenet121"
    assert report.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert report.not_loaded == ["bias", "classifier.weight"]  # our head, new labels
    assert set(report.unused) == {"classifier.weight", "classifier.bias"}  # ImageNet's
    assert report.loaded == report.total - 2
    assert report.adapted == {"features.0.conv0.weight": "RGB input weights summed to 1 channel"}
    own = net.state_dict()
    torch.testing.assert_close(
        own["features.0.conv0.weight"], source["features.conv0.weight"].sum(1, keepdim=True)
    )
    torch.testing.assert_close(
        own["features.0.denseblock2.denselayer3.layers.conv1.weight"],
        source["features.denseblock2.denselayer3.conv1.weight"],
    )
    # torchvision's old checkpoint names ("norm.1") load the same.
    old = {k.replace("norm1", "norm.1").replace("conv2", "conv.2"): v for k, v in source.items()}
    torch.save(old, tmp_path / "old.pth")
    again = load_init_weights(CxrNet("densenet121"), tmp_path / "old.pth")
    assert again.loaded == report.loaded


def test_torchvision_resnet18_layout_and_refusals(tmp_path: Path) -> None:
    path = tmp_path / "resnet18.pth"
    source = resnet18(weights=None).state_dict()
    torch.save(source, path)
    net = CxrNet("resnet18")
    report = load_init_weights(net, path)
    # MONAI's shortcut convolutions have a bias that torchvision's lack: reported.
    assert report.not_loaded == [
        "bias", "classifier.weight", "features.5.0.downsample.0.bias",
        "features.6.0.downsample.0.bias", "features.7.0.downsample.0.bias",
    ]  # fmt: skip
    assert set(report.unused) == {"fc.weight", "fc.bias"}
    torch.testing.assert_close(net.state_dict()["features.7.1.conv2.weight"],
                               source["layer4.1.conv2.weight"])  # fmt: skip
    with pytest.raises(ValueError, match=r"resnet18 layout do not fit model.arch 'densenet121'"):
        load_init_weights(CxrNet("densenet121"), path)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read as tensors"):
        load_init_weights(net, tmp_path / "junk.pth")
    torch.save({"weights": [1, 2]}, tmp_path / "list.pth")
    with pytest.raises(ValueError, match="not a PyTorch state dict"):
        load_init_weights(net, tmp_path / "list.pth")
    with pytest.raises(FileNotFoundError):
        load_init_weights(net, tmp_path / "absent.pth")


def test_a_saved_tonle_model_loads_whole(tmp_path: Path) -> None:
    trained = CxrNet("resnet-small-fine")
    with torch.no_grad():
        trained.bias.fill_(0.25)
    wrapped = {"model": {f"module.{k}": v for k, v in trained.state_dict().items()}}
    torch.save(wrapped, tmp_path / "last.pt")  # a DDP checkpoint of `tonle train cxr`
    net = CxrNet("resnet-small-fine")
    report = load_init_weights(net, tmp_path / "last.pt")
    assert report.layout == "tonle"
    assert report.not_loaded == []
    assert report.unused == {}
    assert torch.equal(net.bias, trained.bias)
    with pytest.raises(ValueError, match="a Tonle model of another architecture"):
        load_init_weights(CxrNet("resnet18"), tmp_path / "last.pt")
