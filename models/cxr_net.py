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

Architectures (``arch``). Measured here at 224 px, 2 threads, on a quiet machine
(14:12 UTC, load 0.2; one training step = forward + backward + AdamW, batch 16):

===============  ======  ===============  ==================  ====================
arch             params  GFLOP fwd+bwd    train step, b16     6 epochs x 600 imgs
===============  ======  ===============  ==================  ====================
densenet121      6.95 M  ~16 (3x fwd)     18.6 s (1.16 s/img)  ~70 min
resnet18         11.2 M  10.3             5.5 s (0.34 s/img)   ~20 min
resnet-small     0.70 M  1.1              0.46 s (0.03 s/img)  ~2 min
===============  ======  ===============  ==================  ====================

Model call, batch 1, 2 threads, ``benchmarks/bench_cxr_model.py --arch-sweep``
(15:26 UTC, load ~2, median of 10): eager PyTorch vs ONNX Runtime, and ORT batch-8
throughput:

* densenet121: 75.9 ms vs 51.4 ms (1.5x), 23 img/s
* resnet18: 33.7 ms vs 19.4 ms (1.7x), 62 img/s
* resnet-small: 8.1 ms vs 2.5 ms (3.3x), 505 img/s

The resnet-small training step above was timed on its first layout (no max-pool,
all stages at 2x the resolution, more FLOPs than now). Only the ``resnet-small``
family trains within the demo's 10-minute budget on 2 CPU cores, and it serves 20x
faster than DenseNet121; ``configs/cxr.yaml`` uses ``resnet-small-fine`` (below), the
others stay selectable for sites with more compute. On 300 fresh synthetic
radiographs ``resnet-small-fine`` with mask supervision reached AUROC 0.996 for
"abnormal" and put the ``abnormal`` map's peak inside the finding mask for 0.948 of
positive images (``resnet-small`` without it: 0.998 and 0.348).

* ``"densenet121"``: MONAI DenseNet121, the issue's default (stride 32 -> 7x7 map).
* ``"resnet18"``: MONAI ResNet18 (basic blocks 2-2-2-2, widths 64-512), 7x7 map.
* ``"resnet-small"``: ResNet18 layout with widths 16-32-64-128 and the last stage
  at stride 1 (output stride 16), so the map is 14x14 at 224 px: a finer map for
  small findings such as nodules.
* ``"resnet-small-fine"``: ``resnet-small`` plus a stride-8 lateral branch
  (``relu(upsample2x(layer4) + conv1x1(layer2))``, one feature-pyramid step): a 28x28
  map at 224 px for +0.6 % parameters and a 1x1 convolution at 28x28. Model call
  (``bench_cxr_model.speed``, 17:40 UTC, load 1.2, two runs): ONNX Runtime batch 1,
  2 threads 1.31-1.33 ms vs 1.12-1.26 ms for ``resnet-small``; batch-8 throughput
  1030 vs 1097-1129 img/s. Training: +10 % CPU time per run (250 vs 226 user-s).

Why the finer map: a bilinearly upsampled map peaks at one of its grid points, so a
14x14 map can only put its peak on 196 fixed points of the image. On the synthetic set
(900 images, seed 7, 256 px) a nodule mask (radius 3-8 px) contains one of those
points in 21 % of single-nodule images, and any positive image's mask in 88 %: a hard
ceiling on "map peak inside the finding mask". With 28x28 the ceilings are 70 % and
95 % (measured with ``models.cxr_predictor.upsample_cam``, 16:46 UTC).
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
