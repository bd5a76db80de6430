"""Dataset readers (one class per dataset) and the name registry behind :func:`load_dataset`.

Every reader takes ``(root, annotation=None, label_map=None, **options)`` and exposes
``.manifest`` (columns ``MANIFEST_COLUMNS``, ``attrs["issues"]``) and ``.issues``.
The bad-input rules are listed in :mod:`mer_keras.data.readers._common`. The
micro-expression readers but MMEW also take ``release="raw" | "cropped"`` (the dataset's
own face crops; :mod:`mer_keras.data.readers.micro`, ``docs/datasets.md``).
"""

from __future__ import annotations

import pandas as pd

from .macro import JAFFE, MUG, CKPlus, OuluCASIA
from .micro import CASME, CASME2, MMEW, SAMM, SMIC, SMICE, CASMESq, smic_clip, smic_subject

READERS: dict[str, type] = {
    "casme": CASME,
    "casme2": CASME2,
    "samm": SAMM,
    "smic": SMIC,
    "smic_e": SMICE,
    "mmew": MMEW,
    "casme_sq": CASMESq,
    "ckplus": CKPlus,
    "oulu_casia": OuluCASIA,
    "jaffe": JAFFE,
    "mug": MUG,
}
"""Registry name -> reader class (``casme_sq`` is CAS(ME)^2, ``smic_e`` the SMIC-E release)."""


def get_reader(name: str) -> type:
    """The reader class registered under ``name``."""
    try:
        return READERS[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; known: {sorted(READERS)}") from None


def load_dataset(name: str, root, **kw) -> pd.DataFrame:
    """Read dataset ``name`` from ``root`` and return its manifest (issues in ``attrs["issues"]``)."""
    return get_reader(name)(root, **kw).manifest


__all__ = [
    "READERS", "get_reader", "load_dataset", "smic_clip", "smic_subject",
    "CASME", "CASME2", "SAMM", "SMIC", "SMICE", "MMEW", "CASMESq", "CKPlus", "OuluCASIA", "JAFFE", "MUG",
]
