"""The out-of-distribution gate of the chest X-ray model, in the model's own feature space.

An image is refused ("cannot assess: unlike the images this model was trained on")
when the Mahalanobis distance of its embedding (the final feature map, global-average
pooled: the vector the classifier reads) to the training images' embeddings exceeds a
threshold set on held-out in-distribution images (Lee et al., NeurIPS 2018, on one
layer). The mean, the shrunk precision matrix and the threshold are buffers of
:class:`OodScored`, so the exported ONNX graph has a third output ``ood_score``
(squared distance / threshold; above 1 = refuse) and the gate is covered by the
artifact's sha256 like every weight. Serving reads it from the same model call
(:class:`~models.cxr_predictor.CxrPredictor`): about 2 x 128 x 128 extra
multiply-adds per image.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch
from pydantic import BaseModel
from torch import nn

from models.cxr_net import CxrNet

__all__ = [
    "OodGate",
    "OodScored",
    "embeddings",
    "fit_gate",
    "squared_distances",
]

F64 = npt.NDArray[np.float64]


class OodGate(BaseModel):
    """A fitted gate: what is stored in the graph, and how it was chosen."""

    mean: list[float]
    precision: list[list[float]]
    threshold: float  # squared Mahalanobis distance above which an image is refused
    quantile: float
    shrinkage: float
    n_fit: int
    n_threshold: int

    def describe(self) -> dict[str, float | int | str]:
        """The gate without its matrices (for metadata and the card)."""
        return {
            "method": "Mahalanobis distance of the pooled final feature map",
            "dims": len(self.mean),
            "threshold": self.threshold,
            "quantile": self.quantile,
            "shrinkage": self.shrinkage,
            "fitted_on": f"{self.n_fit} training images",
            "threshold_on": (
                f"{self.quantile:.1%} quantile (empirical, or of a log-normal fit if "
                f"higher) of {self.n_threshold} validation images"
            ),
        }


def embeddings(net: CxrNet, images: npt.NDArray[np.float32], batch: int = 64) -> F64:
    """Eval-mode pooled final feature maps ``[N, C]`` (what the classifier reads)."""
    net.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch):
            fmap = net.features(torch.from_numpy(images[start : start + batch]))
            out.append(fmap.mean(dim=(2, 3)).double().numpy())
    return np.concatenate(out)


def squared_distances(emb: F64, mean: F64, precision: F64) -> F64:
    """Squared Mahalanobis distances of the rows of ``emb``."""
    diff = emb - mean
    return np.asarray(np.einsum("ij,jk,ik->i", diff, precision, diff), dtype=np.float64)


def fit_gate(train: F64, held_out: F64, quantile: float = 0.999) -> OodGate:
    """Fit the mean and a Ledoit-Wolf shrunk precision on ``train`` embeddings, and the
    threshold at the ``quantile`` of the squared distances of ``held_out`` ones.

    A validation set of a few hundred images cannot show its own 99.9th percentile (the
    empirical quantile is then about its largest value, and new in-distribution images
    exceeded it 3-4 % of the time), so the threshold is the larger of the empirical
    quantile and that of a log-normal fitted to the held-out distances.

    Raises:
        ValueError: fewer than 2 training or 1 held-out embedding.
    """
    from scipy.stats import norm
    from sklearn.covariance import LedoitWolf

    if len(train) < 2 or len(held_out) < 1:
        raise ValueError(
            f"the OOD gate needs >= 2 training and >= 1 validation images, "
            f"got {len(train)} and {len(held_out)}"
        )
    fitted = LedoitWolf().fit(train)
    mean = np.asarray(fitted.location_, dtype=np.float64)
    precision = np.asarray(fitted.precision_, dtype=np.float64)
    d2 = squared_distances(held_out, mean, precision)
    log_d2 = np.log(np.maximum(d2, 1e-12))
    spread = float(np.std(log_d2, ddof=1)) if len(d2) > 1 else 0.0
    tail = float(np.exp(np.mean(log_d2) + float(norm.ppf(quantile)) * spread))
    threshold = max(float(np.quantile(d2, quantile, method="higher")), tail)
    return OodGate(
        mean=mean.tolist(),
        precision=precision.tolist(),
        threshold=max(threshold, 1e-12),
        quantile=quantile,
        shrinkage=float(fitted.shrinkage_),
        n_fit=len(train),
        n_threshold=len(held_out),
    )


class OodScored(nn.Module):
    """``CxrNet`` whose forward also returns ``ood_score`` (squared distance / threshold).

    ``logits`` and ``cam`` are computed exactly as :meth:`CxrNet.forward` computes them
    in eval mode, from the same feature map.
    """

    mean: torch.Tensor
    precision: torch.Tensor
    threshold: torch.Tensor

    def __init__(self, net: CxrNet, gate: OodGate) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(gate.mean, dtype=torch.float32))
        self.register_buffer("precision", torch.tensor(gate.precision, dtype=torch.float32))
        self.register_buffer("threshold", torch.tensor(gate.threshold, dtype=torch.float32))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(logits [N, L], cam [N, L, h, w], ood_score [N])``."""
        fmap = self.net.features(image)
        cam = self.net.classifier(fmap)
        logits = cam.mean(dim=(2, 3)) + self.net.bias
        diff = fmap.mean(dim=(2, 3)) - self.mean
        score = ((diff @ self.precision) * diff).sum(dim=1) / self.threshold
        return logits, cam, score
