"""Files that ship inside the package's dependencies: the dlib landmark model and face photos.

Nothing here touches the network. ``face_recognition_models`` is located through
``importlib`` without importing it: its ``__init__`` imports ``pkg_resources``, which
current setuptools no longer provides.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

LANDMARK_MODEL_FILE = "shape_predictor_68_face_landmarks.dat"


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the package {name!r} is not installed (pip install mer-keras installs it)")
    return Path(next(iter(spec.submodule_search_locations)))


def landmark_model_path() -> Path:
    """Path of dlib's 68-point shape predictor shipped by ``face-recognition-models``."""
    path = _package_dir("face_recognition_models") / "models" / LANDMARK_MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{LANDMARK_MODEL_FILE} not found under {path.parent}")
    return path


def face_photo_paths() -> dict[str, Path]:
    """Real portrait photos that ship inside dependencies, by a short name.

    ``astronaut``: scikit-image's ``astronaut.png``; ``grace_hopper``: matplotlib's
    ``sample_data/grace_hopper.jpg``.
    """
    photos = {
        "astronaut": _package_dir("skimage") / "data" / "astronaut.png",
        "grace_hopper": _package_dir("matplotlib") / "mpl-data" / "sample_data" / "grace_hopper.jpg",
    }
    missing = [str(p) for p in photos.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"bundled face photos missing: {missing}")
    return photos
