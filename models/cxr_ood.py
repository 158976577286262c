"""The out-of-distribution gate of the chest X-ray model, in the model's own feature space.

An image is refused ("cannot assess: unlike the images this model was trained on")
when the Mahalanobis distance of its embedding (the final feature map, global-average
pooled: the vector the classifier reads) to the training images' embeddings exceeds a
threshold set on out-of-sample in-distribution distances: the validation images', and
each training image's to a gate fitted without it (Lee et al., NeurIPS 2018, on one
layer). The mean, the shrunk precision matrix and the threshold are buffers of
:class:`OodScored`, so the exported ONNX graph has a third output ``ood_score``
(squared distance / threshold; above 1 = refuse) and the gate is covered by the
artifact's sha256 like every weight. Serving reads it from the same model call
(:class:`~models.cxr_predictor.CxrPredictor`): about 2 x 128 x 128 extra
multiply-adds per image. Real radiographs (a chest PA, a knee) and real CT, MR and NM
images are refused by a model trained on synthetic ones
(tests/serving/imaging/test_real_radiographs.py, benchmarks/bench_cxr_ood.py).
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
    "cross_fitted_distances",
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
    n_threshold: int  # validation images
    folds: int = 0  # > 0: the training images' cross-fitted distances set it too

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
                f"higher) of the distances of {self.n_threshold} validation images"
                + (
                    f" and of the {self.n_fit} training images, each to a gate fitted "
                    f"without it ({self.folds}-fold cross-fitting)"
                    if self.folds
                    else ""
                )
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


def cross_fitted_distances(train: F64, folds: int) -> F64:
    """Each training embedding's squared distance to a gate fitted WITHOUT its fold.

    Out-of-sample distances, like a validation image's, but one per training image. A
    fold's gate is fitted on ``(folds - 1) / folds`` of the images, so these distances
    are if anything a little larger than a new image's to the gate fitted on all of
    them: a threshold set on them errs towards reading, not refusing.
    """
    from sklearn.covariance import LedoitWolf

    fold = np.arange(len(train)) % folds
    out = np.empty(len(train), dtype=np.float64)
    for k in range(folds):
        fitted = LedoitWolf().fit(train[fold != k])
        out[fold == k] = squared_distances(
            train[fold == k], np.asarray(fitted.location_), np.asarray(fitted.precision_)
        )
    return out


def fit_gate(train: F64, held_out: F64, quantile: float = 0.999, folds: int = 5) -> OodGate:
    """Fit the mean and a Ledoit-Wolf shrunk precision on ``train`` embeddings, and the
    threshold at the ``quantile`` of out-of-sample squared distances: those of the
    ``held_out`` embeddings, plus (``folds`` >= 2) each training embedding's distance to
    a gate fitted on the other folds (:func:`cross_fitted_distances`).

    A validation set of a few hundred images cannot show its own 99.9th percentile (the
    empirical quantile is then about its largest value, and new in-distribution images
    exceeded it 3-4 % of the time), so the threshold is the larger of the empirical
    quantile and that of a log-normal fitted to the distances. With a small validation
    set even that is loose (a 64 px model trained on 132 synthetic images, thresholded
    on 31 validation images, refused 2.7 % of 300 new ones; 0.3 % with its training
    images cross-fitted): the cross-fitted training distances add several times more.

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
    folds = folds if folds >= 2 and len(train) >= 2 * folds else 0
    if folds:
        d2 = np.concatenate([d2, cross_fitted_distances(train, folds)])
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
        folds=folds,
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
