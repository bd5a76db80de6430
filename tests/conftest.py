"""Shared fixtures: small synthetic datasets written once per test session."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Saved timings are reused whatever the load: the suite runs in parallel workers; the load rule has its own tests.
os.environ.setdefault("MER_KERAS_QUIET_OTHER_CORES", "inf")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def megc_tiny(tmp_path_factory):
    """A tiny synthetic MEGC2019-style composite (2 subjects x 2 clips per dataset), real layouts, both releases."""
    from mer_keras.data.synthetic import write_composite

    root = tmp_path_factory.mktemp("megc_tiny")
    roots = write_composite("megc2019", root, subjects_per_dataset=2, clips_per_subject=2, n_frames=9, seed=3,
                            release="both")
    return root, roots


@pytest.fixture(scope="session")
def megc_tiny_manifest(megc_tiny):
    from mer_keras.data import megc2019

    _, roots = megc_tiny
    return megc2019(casme2=roots["casme2"], samm=roots["samm"], smic=roots["smic"])


@pytest.fixture(scope="session")
def megc_tiny_cropped(megc_tiny):
    """The tiny composite read from its cropped releases (the input of the ``off_tanet`` and ``ststnet`` presets)."""
    from mer_keras.data import megc2019

    _, roots = megc_tiny
    return megc2019(casme2=roots["casme2"], samm=roots["samm"], smic=roots["smic"], release="cropped")


@pytest.fixture(scope="session")
def shufflenet_cache_48(megc_tiny_manifest, tmp_path_factory):
    """The tiny composite prepared with the ``shufflenet`` preset at 48 px (aligned frames, masks, TV-L1 flow)."""
    from mer_keras.preprocess.cache import prepare
    from mer_keras.preprocess.pipeline import PreprocessConfig

    out = tmp_path_factory.mktemp("shufflenet_cache_48")
    manifest = megc_tiny_manifest[megc_tiny_manifest["label_id"] >= 0]
    prepare(manifest, out, PreprocessConfig.preset("shufflenet", size=48), workers=1, progress=False)
    return out
