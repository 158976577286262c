"""How old an NCD measurement may be and still be read, one fact for training and serving.

Training reads the latest measurement no more than ``lookback_days`` before the index
date (:func:`training.fhir_bulk.build_feature_table`) and records that window in the
model's metadata (``ModelMetadata.lookback_days``); serving refuses measurements older
than ``max_data_age_days`` before today. A serving window longer than the model's
look-back would score values older than any the model learned from (train/serve skew),
so serving refuses to start with one (:mod:`serving.runtime`). Kept free of imports: the
``tonle`` CLI reads it for its option defaults.
"""

from __future__ import annotations

from typing import Final

__all__ = ["LOOKBACK_DAYS"]

#: Days: training's default look-back and serving's default ``max_data_age_days``.
LOOKBACK_DAYS: Final = 365
