"""Score a study's images with a pinned ``cxr-triage`` artifact.

The decode, quality gate and preprocessing are serving's (``models.cxr_preprocess``,
``models.cxr_quality``) and the model call is :class:`~models.cxr_predictor.CxrPredictor`,
so a study scored here gets the scores serving would give. An image the quality gate
refuses is a study error naming its line: serving would give no score for it either,
so the study should leave it out (or record why) rather than have it silently dropped.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from models.registry import StoredModel
from training.calibrate.study import Study, StudyError

__all__ = ["MAX_IMAGE_BYTES", "score_images"]

MAX_IMAGE_BYTES = 64 * 1024**2


def score_images(
    study: Study,
    stored: StoredModel,
    label: str,
    *,
    batch: int = 16,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """The model's probability for ``label`` on each person's image.

    Args:
        study: a study with an ``image`` column.
        stored: a verified cxr-triage artifact.
        label: the output to use as the score, e.g. ``"tb"``.
        batch: images per model call.
        progress: called with the number of images done after each batch.

    Raises:
        StudyError: an image is missing, unreadable or refused by the quality gate,
            or the model has no output ``label``.
    """
    import models.cxr_preprocess as preprocess
    from models.cxr_predictor import CxrPredictor
    from models.cxr_quality import assess

    if study.image is None:
        raise ValueError("the study has scores, not images")
    predictor = CxrPredictor(stored, threads=2)
    if label not in predictor.labels:
        raise StudyError(f"{stored.metadata.tag} has no output {label!r}: {predictor.labels}")
    column = predictor.labels.index(label)
    size = predictor.size
    scores = np.empty(study.screened)
    pending: list[np.ndarray] = []
    start = 0
    for i, path in enumerate(study.image):
        line = int(study.lines[i])
        try:
            if path.stat().st_size > MAX_IMAGE_BYTES:
                raise StudyError(f"{path.name} is larger than {MAX_IMAGE_BYTES} B", line, "image")
            decoded = preprocess.decode_image(path.read_bytes(), target_size=size)
        except OSError as exc:
            raise StudyError(f"cannot read {path}: {exc.strerror or exc}", line, "image") from None
        except preprocess.ImageError as exc:
            raise StudyError(f"{path.name}: {exc.reason}: {exc.detail}", line, "image") from None
        quality = assess(decoded, min_side=size)
        if not quality.ok:
            raise StudyError(
                f"{path.name} refused by the quality gate: {quality.reason}: {quality.detail}",
                line,
                "image",
            )
        pending.append(np.asarray(preprocess.to_model_input(decoded, size=size), np.float32))
        if len(pending) == batch or i == study.screened - 1:
            probs, _ = predictor.predict(np.ascontiguousarray(np.stack(pending)))
            scores[start : start + len(pending)] = probs[:, column]
            start += len(pending)
            pending = []
            if progress is not None:
                progress(start)
    return scores
