"""The chest X-ray triage network: MONAI backbones that return logits and a CAM together.

:class:`CxrNet` wraps a MONAI convolutional backbone (1 input channel) and a linear
classifier written as a 1x1 convolution. One forward pass returns

* ``logits`` ``[N, L]`` for the labels in :data:`CXR_LABELS`, and
* ``cam`` ``[N, L, h, w]``: the final feature map weighted by the classifier weights
  (a class activation map, raw: higher = more evidence, no normalisation, no bias).

Because the classifier is linear and the pooling is a global mean,
``logits == cam.mean((2, 3)) + bias`` exactly, so the map always explains the score
it comes with. The map is low resolution (no in-graph upsampling: it cost ~15 % in
docs/performance.md); callers upsample it for display.

Architectures (``arch``); their measured cost and accuracy, and why the default is
``resnet-small-fine``, are in docs/performance.md ("Chest X-ray network choices"):

* ``"densenet121"``: MONAI DenseNet121 (stride 32 -> 7x7 map).
* ``"resnet18"``: MONAI ResNet18 (basic blocks 2-2-2-2, widths 64-512), 7x7 map.
* ``"resnet-small"``: ResNet18 layout with widths 16-32-64-128 and the last stage
  at stride 1 (output stride 16), so the map is 14x14 at 224 px.
* ``"resnet-small-fine"``: ``resnet-small`` plus a stride-8 lateral branch
  (``relu(upsample2x(layer4) + conv1x1(layer2))``, one feature-pyramid step): a 28x28
  map at 224 px for +0.6 % parameters. A bilinearly upsampled map peaks at one of its
  grid points, so a coarse map cannot point at a small finding such as a nodule.
"""

from __future__ import annotations

from typing import Literal

import torch
from monai.networks.nets.densenet import DenseNet
from monai.networks.nets.resnet import ResNet
from torch import nn

from models.cxr_labels import CXR_LABELS

__all__ = ["ARCHITECTURES", "CXR_LABELS", "Architecture", "CxrNet"]

Architecture = Literal["densenet121", "resnet18", "resnet-small", "resnet-small-fine"]
ARCHITECTURES: tuple[str, ...] = ("densenet121", "resnet18", "resnet-small", "resnet-small-fine")


def _densenet121_features() -> tuple[nn.Module, int]:
    net = DenseNet(spatial_dims=2, in_channels=1, out_channels=1)
    # DenseNet's features end in the last norm; its class_layers start with ReLU.
    return nn.Sequential(net.features, nn.ReLU()), 1024


def _resnet_features(
    widths: list[int], no_max_pool: bool, last_stride: int = 2
) -> tuple[nn.Sequential, int]:
    net = ResNet(
        block="basic",
        layers=[2, 2, 2, 2],
        block_inplanes=widths,
        spatial_dims=2,
        n_input_channels=1,
        conv1_t_size=7,
        conv1_t_stride=2,
        no_max_pool=no_max_pool,
        num_classes=1,
    )
    if last_stride == 1:
        # Output stride 16 instead of 32: a finer activation map for small findings.
        for module in net.layer4[0].modules():
            if isinstance(module, nn.Conv2d) and module.stride == (2, 2):
                module.stride = (1, 1)
    stem: list[nn.Module] = [net.conv1, net.bn1, net.act]
    if not no_max_pool:
        stem.append(net.maxpool)
    features = nn.Sequential(*stem, net.layer1, net.layer2, net.layer3, net.layer4)
    return features, widths[-1]


class _FineFeatures(nn.Module):
    """A stride-16 backbone plus a stride-8 lateral branch: a map twice as fine.

    ``relu(upsample2x(layer4) + conv1x1(layer2))``, as in a feature pyramid's top-down
    step: the deep features say what, the layer2 features (receptive field ~ 60 px)
    say where, at the resolution of small findings.
    """

    def __init__(self, backbone: nn.Sequential, lateral_in: int, channels: int) -> None:
        super().__init__()
        layers = list(backbone.children())
        self.to_stride8 = nn.Sequential(*layers[:-2])  # stem, layer1, layer2
        self.deep = nn.Sequential(*layers[-2:])  # layer3, layer4 (stride 16)
        self.lateral = nn.Conv2d(lateral_in, channels, kernel_size=1)
        self.act = nn.ReLU()

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        fine = self.to_stride8(image)
        deep = nn.functional.interpolate(self.deep(fine), scale_factor=2.0, mode="nearest")
        out: torch.Tensor = self.act(deep + self.lateral(fine))
        return out


class CxrNet(nn.Module):
    """Multi-label chest X-ray classifier returning ``(logits, cam)`` in one forward.

    Args:
        arch: backbone, one of :data:`ARCHITECTURES`.
        num_labels: number of output labels (5 for :data:`CXR_LABELS`).
        dropout: dropout probability on the feature map during training.
    """

    def __init__(
        self, arch: Architecture = "resnet-small", num_labels: int = 5, dropout: float = 0.0
    ) -> None:
        super().__init__()
        features: nn.Module
        if arch == "densenet121":
            features, channels = _densenet121_features()
        elif arch == "resnet18":
            features, channels = _resnet_features([64, 128, 256, 512], no_max_pool=False)
        elif arch in ("resnet-small", "resnet-small-fine"):
            widths = [16, 32, 64, 128]
            features, channels = _resnet_features(widths, no_max_pool=False, last_stride=1)
            if arch == "resnet-small-fine":
                features = _FineFeatures(features, lateral_in=widths[1], channels=channels)
        else:
            raise ValueError(f"arch {arch!r} is not one of {', '.join(ARCHITECTURES)}")
        if num_labels < 1:
            raise ValueError(f"num_labels must be >= 1, got {num_labels}")
        self.arch = arch
        self.num_labels = num_labels
        self.features = features
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        # A 1x1 convolution without bias is the linear classifier applied per position.
        self.classifier = nn.Conv2d(channels, num_labels, kernel_size=1, bias=False)
        self.bias = nn.Parameter(torch.zeros(num_labels))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Score a batch.

        Args:
            image: float32 ``[N, 1, S, S]`` preprocessed images.

        Returns:
            ``(logits [N, L], cam [N, L, h, w])``.
        """
        fmap = self.dropout(self.features(image))
        cam = self.classifier(fmap)
        logits = cam.mean(dim=(2, 3)) + self.bias
        return logits, cam
