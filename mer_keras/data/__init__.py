"""Datasets: the manifest schema, one reader per dataset, protocol composites and synthetic twins.

``load_dataset(name, root, **kw)`` reads a registered dataset (see :data:`READERS`);
:mod:`mer_keras.data.composites` builds the papers' composite sets;
:mod:`mer_keras.data.synthetic` writes synthetic datasets in the real on-disk layouts.
"""

from .manifest import (
    ISSUE_COLUMNS,
    LABEL_IDS,
    LABELS,
    MANIFEST_COLUMNS,
    RELEASES,
    AnnotationError,
    IssueLog,
    check_release,
    concat_manifests,
    make_manifest,
    summarize,
    validate_manifest,
)
from .readers import READERS, get_reader, load_dataset
from .composites import (
    COMPOSITES,
    fold_groups,
    load_composite,
    megc2019,
    mobilevit_macro,
    mobilevit_micro,
    off_tanet_composite,
    shufflenet_composite,
)


def available_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset`."""
    return sorted(READERS)


__all__ = [
    "ISSUE_COLUMNS", "LABEL_IDS", "LABELS", "MANIFEST_COLUMNS", "RELEASES", "AnnotationError", "IssueLog",
    "check_release", "concat_manifests", "make_manifest", "summarize", "validate_manifest",
    "READERS", "get_reader", "load_dataset", "available_datasets",
    "COMPOSITES", "fold_groups", "load_composite", "megc2019", "mobilevit_macro", "mobilevit_micro",
    "off_tanet_composite", "shufflenet_composite",
]
