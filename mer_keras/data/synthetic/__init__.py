"""Synthetic micro-expression data written in the real datasets' on-disk formats.

Public API:

* :func:`write_dataset` / :func:`write_composite` -- write a dataset (or every dataset of
  a composite) in its real layout, rendered or as a structural twin (``counts="real"``),
  raw frames and/or the dataset's cropped release (``release=``, :data:`CROPPED_RELEASES`);
* :func:`load_ground_truth` -- the sidecar table (and optionally the apex flows);
* :data:`FAULTS` -- the bad-input cases ``write_dataset(faults=...)`` can inject.

The face, motion and appearance generator lives in :mod:`.faces`, :mod:`.motion`,
:mod:`.appearance` and :mod:`.render`; it is imported only when frames are rendered.
"""

from .layouts import (
    COMPOSITES,
    CROPPED_RELEASES,
    FAULTS,
    LAYOUTS,
    load_ground_truth,
    motion_class,
    write_composite,
    write_dataset,
)

__all__ = ["COMPOSITES", "CROPPED_RELEASES", "FAULTS", "LAYOUTS", "load_ground_truth", "motion_class",
           "write_composite", "write_dataset"]
