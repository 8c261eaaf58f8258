"""Torch-free pieces shared by the evaluators, so the PNG-folder metrics start without importing torch."""

from __future__ import annotations

import numpy as np

LANES = 4  # sub-histograms: neighbouring pixels count into different bins, so long runs of one label
# do not serialise bincount's increments (about 1.4x faster on CPU); summed away afterwards.


def nanmean(values: np.ndarray) -> float:
    """Mean over the non-NaN entries, NaN when there are none; summed left to right like cityscapesscripts."""
    valid = [float(v) for v in np.asarray(values, dtype=np.float64).ravel() if not np.isnan(v)]
    return sum(valid) / len(valid) if valid else float("nan")
