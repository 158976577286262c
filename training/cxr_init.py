"""Start ``tonle train cxr`` from pretrained weights the user brings (a local file; nothing
is downloaded).

:func:`load_init_weights` reads a PyTorch state dict (``torch.load(...,
weights_only=True)``: tensors only, no code runs) and maps it onto
:class:`~models.cxr_net.CxrNet`:

* a Tonle checkpoint or saved CxrNet (``features.*``, ``classifier.weight``, ``bias``;
  also inside ``{"model": ...}`` or ``{"state_dict": ...}``, ``module.`` prefixes of
  DDP stripped);
* torchvision's DenseNet121 layout (the ImageNet checkpoint's key names, including the
  old ``norm.1`` spelling) or a MONAI DenseNet121's, onto ``arch: densenet121``;
* torchvision's ResNet18 layout (or MONAI's ResNet), onto ``arch: resnet18``.

A first convolution with 3 input channels (RGB ImageNet weights) is summed over them
for our 1-channel input (a grey image fed as R = G = B gives the same activations).
Tensors whose name or shape has no counterpart are not loaded: the ImageNet
1000-class classifier never is, since our labels differ. :class:`InitReport` says what
loaded, what was adapted and what was not, and goes into the model card with the
file's sha256 and the origin the user gives.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from pydantic import BaseModel

from models.cxr_net import CxrNet

__all__ = ["InitReport", "load_init_weights", "map_state"]


class InitReport(BaseModel):
    """What a pretrained weights file gave the network."""

    file: str
    sha256: str
    origin: str
    layout: str  # "tonle", "densenet121", "resnet18"
    loaded: int  # network tensors set from the file
    total: int  # network tensors
    adapted: dict[str, str]  # network tensor -> how it was adapted
    unused: dict[str, str]  # file tensor -> why it was not loaded
    not_loaded: list[str]  # network tensors left at their initial values

    def summary(self) -> str:
        """One line for logs and the model card."""
        return (
            f"{self.loaded} of {self.total} tensors loaded from {self.file} "
            f"({self.layout} layout, sha256 {self.sha256[:16]}); {len(self.adapted)} "
            f"adapted, {len(self.unused)} in the file not used, {len(self.not_loaded)} "
            "of the network's left at their initial values"
        )


_OLD_DENSE = re.compile(r"(norm|relu|conv)\.([12])")  # torchvision's pre-0.3 names
_DENSE_LAYER = re.compile(r"(denselayer\d+)\.(?!layers\.)")


def _from_densenet(key: str) -> str | None:
    if not key.startswith("features."):
        return None  # classifier / class_layers: ImageNet's 1000 classes, not ours
    key = _OLD_DENSE.sub(r"\1\2", key)
    key = _DENSE_LAYER.sub(r"\1.layers.", key)  # MONAI nests each layer's modules
    return "features.0." + key.removeprefix("features.")


_RESNET_STEM = {"conv1": 0, "bn1": 1}  # features: conv1, bn1, act, maxpool, layer1-4


def _from_resnet(key: str) -> str | None:
    head, _, rest = key.partition(".")
    if head in _RESNET_STEM:
        return f"features.{_RESNET_STEM[head]}.{rest}"
    match = re.fullmatch(r"layer([1-4])", head)
    if match:
        return f"features.{3 + int(match.group(1))}.{rest}"
    return None  # fc: ImageNet's classifier


def _unwrap(raw: object) -> dict[str, torch.Tensor]:
    state = raw
    if isinstance(state, Mapping):
        for key in ("model", "state_dict"):
            if isinstance(state.get(key), Mapping):
                state = state[key]
                break
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise ValueError("not a PyTorch state dict (a mapping of names to tensors)")
    return {str(k).removeprefix("module."): v for k, v in state.items()}


def _layout(state: Mapping[str, torch.Tensor]) -> str:
    keys = list(state)
    if any(k.startswith("features.") for k in keys) and "bias" in state:
        return "tonle"
    if any("denseblock" in k for k in keys):
        return "densenet121"
    if any(k.startswith("layer1.") for k in keys):
        return "resnet18"
    return "unknown"


def map_state(
    net: CxrNet, state: Mapping[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], str, dict[str, str], dict[str, str]]:
    """Map ``state`` onto ``net``'s parameter names and shapes.

    Returns:
        ``(tensors to load, layout, adapted, unused)``.

    Raises:
        ValueError: the layout is not recognised, or does not fit ``net.arch``.
    """
    layout = _layout(state)
    if layout == "unknown":
        raise ValueError(
            "weights in an unrecognised layout: expected a Tonle CxrNet state dict or "
            "torchvision / MONAI DenseNet121 or ResNet18 key names"
        )
    rename = {"tonle": lambda k: k, "densenet121": _from_densenet, "resnet18": _from_resnet}
    if layout != "tonle" and layout != net.arch:
        raise ValueError(f"weights in the {layout} layout do not fit model.arch {net.arch!r}")
    own = net.state_dict()
    if layout == "tonle":
        differ = [k for k, v in state.items() if k not in own or own[k].shape != v.shape]
        differ += sorted(set(own) - set(state))
        if differ:
            raise ValueError(
                f"a Tonle model of another architecture than model.arch {net.arch!r} "
                f"({len(differ)} tensor(s) differ, e.g. {differ[0]})"
            )
    out: dict[str, torch.Tensor] = {}
    adapted: dict[str, str] = {}
    unused: dict[str, str] = {}
    for key, tensor in state.items():
        target = rename[layout](key)
        if target is None or target not in own:
            unused[key] = "no counterpart in the network (e.g. ImageNet's classifier)"
            continue
        want = tuple(own[target].shape)
        if tuple(tensor.shape) == want:
            out[target] = tensor
        elif (
            tensor.ndim == 4
            and tensor.shape[1] == 3
            and want == (tensor.shape[0], 1, *tensor.shape[2:])
        ):
            out[target] = tensor.sum(dim=1, keepdim=True)
            adapted[target] = "RGB input weights summed to 1 channel"
        else:
            unused[key] = f"shape {tuple(tensor.shape)} does not fit {want}"
    return out, layout, adapted, unused


def load_init_weights(net: CxrNet, path: Path, origin: str = "") -> InitReport:
    """Load ``path`` into ``net`` where it fits; report what did and did not.

    Args:
        net: the network (its initial values stay where nothing fits).
        path: a local state dict file.
        origin: where the file came from (recorded in the model card).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: not a state dict, an unrecognised layout, or nothing fits.
    """
    if not path.is_file():
        raise FileNotFoundError(f"init weights {path} do not exist")
    data = path.read_bytes()
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and unsafe-type errors all mean: not weights
        raise ValueError(f"init weights {path}: cannot read as tensors: {exc}") from exc
    try:
        state = _unwrap(raw)
        tensors, layout, adapted, unused = map_state(net, state)
    except ValueError as exc:
        raise ValueError(f"init weights {path}: {exc}") from exc
    if not tensors:
        raise ValueError(f"init weights {path}: no tensor fits model.arch {net.arch!r}")
    net.load_state_dict(tensors, strict=False)
    own = net.state_dict()
    return InitReport(
        file=path.name,
        sha256=hashlib.sha256(data).hexdigest(),
        origin=origin,
        layout=layout,
        loaded=len(tensors),
        total=len(own),
        adapted=adapted,
        unused=unused,
        not_loaded=sorted(k for k in own if k not in tensors),
    )
