"""Let idle OpenMP worker threads sleep during training (``OMP_WAIT_POLICY=PASSIVE``).

PyTorch's OpenMP workers spin while they wait for work by default. On a small,
shared machine the spinning threads compete with the ones doing the work: a 2-thread
CXR training step under load took 1.7-2.5 s with the default policy and 0.37 s with
``PASSIVE``. OpenMP reads the variable once, when its runtime is loaded (with torch,
or scikit-learn's own copy), so the CLI commands that train call
:func:`prefer_passive_openmp` before importing either.
"""

from __future__ import annotations

import logging
import os
import sys

__all__ = ["prefer_passive_openmp"]

logger = logging.getLogger(__name__)

_VARIABLE = "OMP_WAIT_POLICY"


def prefer_passive_openmp() -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless the user set a policy.

    Returns:
        True when this call set it; False when the user's value was kept.
    """
    if os.environ.get(_VARIABLE):
        return False
    os.environ[_VARIABLE] = "PASSIVE"
    if "torch" in sys.modules:  # its OpenMP runtime has already read the environment
        logger.warning("%s=PASSIVE set after torch was imported: it has no effect", _VARIABLE)
    return True
