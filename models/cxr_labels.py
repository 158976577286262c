"""The chest X-ray labels, in the order of the CXR network's ``logits`` columns.

One definition for the network (:mod:`models.cxr_net`), the dataset adapters
(:mod:`training.cxr_datasets`) and serving's fallback for an artifact that names no
labels (:mod:`serving.imaging.analysis`); it imports nothing, so serving can use it
without torch.
"""

from __future__ import annotations

__all__ = ["CXR_LABELS"]

CXR_LABELS: tuple[str, ...] = ("abnormal", "tb", "nodule", "consolidation", "effusion")
