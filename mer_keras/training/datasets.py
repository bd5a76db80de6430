"""In-memory datasets for leave-one-subject-out (LOSO) training.

:class:`LOSODataset` holds one sample per labelled clip: the network input ``x``, the
MEGC2019 label id ``y`` (0 negative, 1 positive, 2 surprise; ``mer_keras.data.LABELS``),
and, per sample, the LOSO group ``subjects``, the source ``datasets`` and the clip id
``clips``. Three constructors cover the ways data reach training:

* :meth:`LOSODataset.from_arrays` -- arrays already in memory;
* :meth:`LOSODataset.from_cache` -- a cache written by ``mer-keras prepare``
  (:class:`mer_keras.preprocess.cache.PreparedCache`), with the input each paper uses;
* :meth:`LOSODataset.from_megc_folders` -- the ``{subject}/u_train|u_test/{label}/*.png``
  folders that public MEGC2019 baselines (STSTNet and its followers) exchange.

Subjects are LOSO groups and are unique across source datasets: a cache gives
``"{dataset}/{subject}"`` (:func:`mer_keras.data.composites.fold_groups`), so CASME's and
CASME II's ``sub01`` are two folds, as in the Off-TANet protocol where folds are
(dataset, subject) pairs (datasets.md: 49 folds; 68 for MEGC2019).
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from mer_keras.data.composites import fold_groups
from mer_keras.data.manifest import LABELS
from mer_keras.preprocess.changes import frame_changes

INPUT_KINDS = ("flow_stack", "flow_image", "apex", "onset_apex", "frames", "frame_changes")
"""What :meth:`LOSODataset.from_cache` can build, per clip (``S`` = the cache's size):

* ``"flow_stack"``: ``S x S x 3`` float32 ``(u, v, strain)`` -- the float input of
  Off-TANet / ARFNet / STSTNet-style networks (pixels of flow, strain as cached);
* ``"flow_image"``: ``S x S x 3`` uint8, the cached flow image ``(u, v, third)``;
* ``"apex"``: ``S x S x 1`` uint8 grey apex frame;
* ``"onset_apex"``: ``S x S x 2`` uint8 grey ``(onset, apex)``;
* ``"frames"``: per clip a ``T x S x S x 1`` uint8 stack of the aligned frames onset..apex
  (needs a cache prepared with ``keep="onset_to_apex"``, e.g. the ``shufflenet`` preset);
  the dataset is then a *sequence* dataset, see :meth:`LOSODataset.expand_frames`;
* ``"frame_changes"``: the same stacks as changes since the onset,
  :func:`mer_keras.preprocess.changes.frame_changes` (uint8 around 128; a sequence dataset).
"""

SEQUENCE_INPUTS = ("frames", "frame_changes")
"""Input kinds whose samples are per-clip frame stacks (sequence datasets)."""

MEGC_LABEL_FOLDERS = {"0": 0, "1": 1, "2": 2}
"""Label folders of the MEGC2019 exchange layout (official ids: 0 negative, 1 positive, 2 surprise)."""

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


class FolderLayoutError(ValueError):
    """A MEGC-style folder tree does not have the documented layout or its splits disagree."""


def _str_array(values, n: int, name: str) -> np.ndarray:
    arr = np.asarray([str(v) for v in values], dtype=object)
    if arr.shape != (n,):
        raise ValueError(f"{name} has {arr.shape[0] if arr.ndim else 0} entries, expected {n} (one per sample)")
    return arr


def _sequence_array(items) -> np.ndarray:
    """An object array of per-clip arrays (never broadcast into one block by numpy)."""
    out = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        out[i] = np.asarray(item)
    return out


def _check_values(a: np.ndarray, where: str) -> None:
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise ValueError(f"{where}: x must be a float or integer array (float32 or uint8), got dtype {a.dtype}")
    if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
        bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
        raise ValueError(f"{where}: x holds {bad} NaN or infinite value(s)")


@dataclass(frozen=True, eq=False)
class LOSODataset:
    """Samples with labels and LOSO groups; validated at construction.

    Attributes:
        x: ``N x H x W x C`` array (float32 or uint8), or, for a *sequence* dataset, a
            length-``N`` object array whose items are ``T_i x H x W x C`` arrays (one
            variable-length frame stack per clip; same ``H x W x C`` for all).
        y: ``N`` integer label ids in ``0 .. len(class_names) - 1``.
        subjects: ``N`` LOSO groups (str), unique across source datasets
            (``"casme2/sub01"``); one fold per distinct value.
        datasets: ``N`` source dataset names (str); a subject belongs to exactly one.
        clips: ``N`` clip ids (str); ``(subject, clip)`` is unique.
        class_names: names of the label ids, default MEGC2019's
            ``("negative", "positive", "surprise")``.

    Guarantees (checked in ``__post_init__``, ``ValueError`` naming the breach): equal
    lengths, at least one sample, labels in range, no NaN/inf in float inputs, a
    consistent sample shape, each subject in one dataset, no duplicated
    ``(subject, clip)``. The arrays are stored as given (no copy).
    """

    x: np.ndarray
    y: np.ndarray
    subjects: np.ndarray
    datasets: np.ndarray
    clips: np.ndarray
    class_names: tuple[str, ...] = LABELS

    def __post_init__(self) -> None:
        x = self.x
        if not isinstance(x, np.ndarray):
            raise TypeError(f"x must be a numpy array, got {type(x).__name__}; use LOSODataset.from_arrays")
        n = len(x)
        if n == 0:
            raise ValueError("a LOSODataset needs at least one sample")
        if x.dtype == object:
            shapes = set()
            for i, item in enumerate(x):
                if not isinstance(item, np.ndarray) or item.ndim != 4 or len(item) == 0:
                    shape = getattr(item, "shape", None)
                    raise ValueError(f"sequence sample {i}: expected a non-empty T x H x W x C array, got shape {shape}")
                _check_values(item, f"sequence sample {i}")
                shapes.add((item.shape[1:], item.dtype))
            if len(shapes) != 1:
                raise ValueError(f"sequence samples differ in frame shape or dtype: {sorted(map(str, shapes))[:4]}")
        else:
            if x.ndim != 4:
                raise ValueError(f"x must be N x H x W x C, got shape {x.shape}")
            _check_values(x, "x")
        y = np.asarray(self.y)
        if y.shape != (n,):
            raise ValueError(f"y has shape {y.shape}, expected ({n},) (one label per sample)")
        if not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"y must hold integer label ids, got dtype {y.dtype}")
        k = len(self.class_names)
        bad = (y < 0) | (y >= k)
        if bad.any():
            raise ValueError(f"labels must be in 0..{k - 1} ({', '.join(self.class_names)}); "
                             f"got {sorted(set(y[bad].tolist()))[:5]} at sample(s) {np.flatnonzero(bad)[:5].tolist()}")
        subjects = _str_array(self.subjects, n, "subjects")
        datasets = _str_array(self.datasets, n, "datasets")
        clips = _str_array(self.clips, n, "clips")
        if any(s == "" for s in subjects):
            raise ValueError("subjects must be non-empty strings")
        owners: dict[str, set] = defaultdict(set)
        for s, d in zip(subjects, datasets):
            owners[s].add(d)
        shared = {s: sorted(d) for s, d in owners.items() if len(d) > 1}
        if shared:
            s, d = next(iter(sorted(shared.items())))
            raise ValueError(f"subject {s!r} appears in datasets {d}: subjects must be unique across datasets "
                             f"(prefix them with the dataset, e.g. '{d[0]}/{s}') or the LOSO folds would merge them")
        dup = pd.Series(list(zip(subjects, clips))).duplicated()
        if dup.any():
            i = int(np.flatnonzero(dup.to_numpy())[0])
            raise ValueError(f"duplicate sample: subject {subjects[i]!r} clip {clips[i]!r} occurs more than once")
        object.__setattr__(self, "y", y.astype(np.int64, copy=False))
        object.__setattr__(self, "subjects", subjects)
        object.__setattr__(self, "datasets", datasets)
        object.__setattr__(self, "clips", clips)
        object.__setattr__(self, "class_names", tuple(self.class_names))

    # ------------------------------------------------------------------ constructors

    @classmethod
    def from_arrays(cls, x, y, subjects, datasets=None, clips=None, class_names: Sequence[str] = LABELS) -> "LOSODataset":
        """Dataset from in-memory arrays.

        ``x``: ``N x H x W x C`` (``N x H x W`` gets a channel axis; a list of images is
        stacked), float inputs other than float32 are cast to float32; or a list of
        ``T_i x H x W x C`` frame stacks (a sequence dataset). ``y``: integer ids (integral floats are accepted).
        ``datasets`` defaults to the part of each subject before ``/`` when every
        subject has one (``"casme2/sub01"`` -> ``"casme2"``), else ``"data"``.
        ``clips`` defaults to the sample position (``"0"``, ``"1"``, ...).
        """
        if isinstance(x, (list, tuple)) and all(np.ndim(item) == 4 for item in x):
            x = _sequence_array(x)
        else:
            x = np.asarray(x)
            if x.ndim == 3:
                x = x[..., None]
            if np.issubdtype(x.dtype, np.floating) and x.dtype != np.float32:
                x = x.astype(np.float32)
        n = len(x)
        y = np.asarray(y)
        if np.issubdtype(y.dtype, np.floating):
            if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
                raise ValueError("y must hold integer label ids; got non-integral or NaN values")
            y = y.astype(np.int64)
        subjects = [str(s) for s in subjects]
        if datasets is None:
            datasets = [s.split("/", 1)[0] for s in subjects] if all("/" in s for s in subjects) else ["data"] * len(subjects)
        if clips is None:
            clips = [str(i) for i in range(n)]
        return cls(x=x, y=y, subjects=np.asarray(subjects, dtype=object), datasets=np.asarray(list(datasets), dtype=object),
                   clips=np.asarray(list(clips), dtype=object), class_names=tuple(class_names))

    @classmethod
    def from_cache(
        cls,
        path_or_cache,
        input: str = "flow_stack",
        *,
        sources: Sequence[str] | None = None,
        progress: bool = False,
    ) -> "LOSODataset":
        """Dataset of the labelled clips (``label_id >= 0``) of a prepared cache, in manifest order.

        ``input`` is one of :data:`INPUT_KINDS`. ``sources`` keeps only those source
        datasets. Clip files are read one at a time and only the arrays the input needs
        are decompressed; ``progress=True`` shows a bar. Subjects are
        ``"{dataset}/{subject}"`` (:func:`~mer_keras.data.composites.fold_groups`), clips
        the manifest's clip ids. Raises ``ValueError`` for an unknown input, for
        ``"frames"`` on a cache without frame stacks, for a flow or onset input on an
        apex-only cache (``compute_flow=False``), or when no labelled clip remains.
        """
        from mer_keras.preprocess.cache import PreparedCache
        from tqdm.auto import tqdm

        if input not in INPUT_KINDS:
            raise ValueError(f"input must be one of {INPUT_KINDS}, got {input!r}")
        cache = path_or_cache if isinstance(path_or_cache, PreparedCache) else PreparedCache(path_or_cache)
        if input in SEQUENCE_INPUTS and cache.config.keep != "onset_to_apex":
            raise ValueError(f"{cache.path} holds no frame stacks (prepared with keep={cache.config.keep!r}); "
                             f"prepare it with keep='onset_to_apex' (e.g. the 'shufflenet' preset) for input={input!r}")
        if input in ("flow_stack", "flow_image", "onset_apex") and not cache.config.compute_flow:
            raise ValueError(f"{cache.path} holds apex frames only (prepared without flow, e.g. with the "
                             f"'mobilevit_apex' preset) but input={input!r} needs "
                             f"{'the onset frame' if input == 'onset_apex' else 'optical flow'}; prepare the data "
                             "with a flow preset ('off_tanet', 'ststnet', 'shufflenet' or 'mobilevit'), or pick a "
                             "recipe whose input is 'apex'")
        table = cache.manifest
        table = table[table["label_id"] >= 0]
        if sources is not None:
            unknown = set(sources) - set(cache.manifest["dataset"])
            if unknown:
                raise ValueError(f"sources {sorted(unknown)} are not in {cache.path} (has {sorted(set(cache.manifest['dataset']))})")
            table = table[table["dataset"].isin(list(sources))]
        table = table.reset_index(drop=True)
        if table.empty:
            raise ValueError(f"{cache.path} has no labelled clips" + (f" from {list(sources)}" if sources else ""))
        needed = {"flow_stack": ("flow", "strain"), "flow_image": ("flow_image",), "apex": ("apex",),
                  "onset_apex": ("onset", "apex"), "frames": ("frames",), "frame_changes": ("frames",)}[input]
        samples = []
        for file in tqdm(table["file"], desc=f"load {input}", unit="clip", disable=not progress):
            with np.load(cache.path / file) as z:
                arrays = {k: z[k] for k in needed}
            samples.append(_input_from_arrays(input, arrays))
        x = _sequence_array(samples) if input in SEQUENCE_INPUTS else np.stack(samples)
        return cls(x=x, y=table["label_id"].to_numpy(np.int64), subjects=fold_groups(table).to_numpy(object),
                   datasets=table["dataset"].astype(str).to_numpy(object), clips=table["clip"].astype(str).to_numpy(object))

    @classmethod
    def from_megc_folders(
        cls,
        root,
        *,
        channel_order: str = "rgb",
        verify: bool = True,
        dataset_of=None,
        return_files: bool = False,
    ):
        """Dataset from the MEGC2019 LOSO folder exchange layout, with its splits checked.

        Layout: ``root/{subject}/u_test/{label}/*.png`` holds that subject's clips and
        ``root/{subject}/u_train/{label}/*.png`` everyone else's (copies), label folders
        ``0``/``1``/``2``; images are ``28 x 28`` ``(u, v, strain)`` flow images in the
        baselines that use this layout. The dataset is the union of the ``u_test``
        folders: every clip once, ``subject`` = the subject folder name, ``clip`` = the
        file stem, sorted by subject, label, file name.

        With ``verify`` (default), every ``u_train`` must be exactly the union of the
        *other* subjects' ``u_test`` images, compared as multisets of (label, hash of
        the decoded pixels): a train folder holding one of its own subject's test
        images raises :class:`~mer_keras.training.folds.LeakageError` naming the
        subject; a missing or unknown image (or one under another label) raises
        :class:`FolderLayoutError` naming the subject.

        Channel order: images are read with ``cv2.imread`` (BGR) and, by default
        (``channel_order="rgb"``), converted to RGB, so channel 0 is the image's red
        plane (``u`` in the usual ``(u, v, strain)`` -> RGB encoding). The published
        STSTNet code feeds ``cv2.imread`` output unchanged; pass ``"bgr"`` to reproduce
        that order (e.g. for its released weights). ``x`` is uint8.

        ``dataset_of(subject_folder) -> str`` names each subject's source dataset;
        the default :func:`megc_source` recognises the MEGC2019 folder names
        (``sub01`` CASME II, ``s01`` SMIC-HS, ``006`` SAMM). With ``return_files`` the
        result is ``(dataset, files)`` where ``files`` is a table of every image read
        (``subject, split, label, path, hash``).
        """
        import cv2

        if channel_order not in ("rgb", "bgr"):
            raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
        dataset_of = dataset_of or megc_source
        root = Path(root)
        if not root.is_dir():
            raise FolderLayoutError(f"{root} is not a folder")
        subjects = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not subjects:
            raise FolderLayoutError(f"{root} has no subject folders")

        rows, images = [], {}
        for subject in subjects:
            splits = ("u_test", "u_train") if verify else ("u_test",)
            for split in splits:
                split_dir = root / subject / split
                if not split_dir.is_dir():
                    raise FolderLayoutError(f"subject {subject!r}: missing folder {split_dir.relative_to(root)}")
                for label_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
                    if label_dir.name not in MEGC_LABEL_FOLDERS:
                        raise FolderLayoutError(f"subject {subject!r}: label folder {label_dir.relative_to(root)} "
                                                f"is not one of {sorted(MEGC_LABEL_FOLDERS)}")
                    for path in sorted(label_dir.iterdir()):
                        if path.suffix.lower() not in IMAGE_SUFFIXES:
                            continue
                        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
                        if bgr is None:
                            raise FolderLayoutError(f"subject {subject!r}: cannot read image {path.relative_to(root)}")
                        image = bgr if channel_order == "bgr" else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                        digest = hashlib.sha256(np.ascontiguousarray(bgr).tobytes() + str(bgr.shape).encode()).hexdigest()
                        rows.append(dict(subject=subject, split=split, label=MEGC_LABEL_FOLDERS[label_dir.name],
                                         clip=path.stem, path=str(path), hash=digest))
                        if split == "u_test":
                            images[len(rows) - 1] = image
        files = pd.DataFrame(rows, columns=["subject", "split", "label", "clip", "path", "hash"])
        test = files[files["split"] == "u_test"]
        empty = sorted(set(subjects) - set(test["subject"]))
        if empty:
            raise FolderLayoutError(f"subject(s) {empty} have no u_test images")
        if verify:
            _verify_megc_splits(files, subjects)
        shapes = {images[i].shape for i in test.index}
        if len(shapes) != 1:
            raise FolderLayoutError(f"u_test images differ in size: {sorted(shapes)}")
        dataset = cls(
            x=np.stack([images[i] for i in test.index]),
            y=test["label"].to_numpy(np.int64),
            subjects=test["subject"].to_numpy(object),
            datasets=np.asarray([dataset_of(s) for s in test["subject"]], dtype=object),
            clips=test["clip"].to_numpy(object),
        )
        return (dataset, files.reset_index(drop=True)) if return_files else dataset

    # ------------------------------------------------------------------ access

    def __len__(self) -> int:
        return len(self.x)

    @property
    def is_sequence(self) -> bool:
        """True when each sample is a variable-length frame stack (``input="frames"``)."""
        return self.x.dtype == object

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """``(H, W, C)`` of one sample (of one frame, for a sequence dataset)."""
        return tuple(self.x[0].shape[1:]) if self.is_sequence else tuple(self.x.shape[1:])

    def subject_list(self) -> list[str]:
        """The distinct subjects, sorted: the LOSO folds in their canonical order."""
        return sorted(set(self.subjects.tolist()))

    def subset(self, idx) -> "LOSODataset":
        """The samples at positions ``idx`` (integer indices or a boolean mask), in that order."""
        idx = np.asarray(idx)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise ValueError(f"boolean mask has shape {idx.shape}, expected ({len(self)},)")
            idx = np.flatnonzero(idx)
        idx = idx.astype(np.int64, copy=False)
        return LOSODataset(x=self.x[idx], y=self.y[idx], subjects=self.subjects[idx], datasets=self.datasets[idx],
                           clips=self.clips[idx], class_names=self.class_names)

    def class_counts(self) -> pd.Series:
        """Samples per class, indexed by class name (every class listed, zeros included)."""
        counts = np.bincount(self.y, minlength=self.n_classes)
        return pd.Series(counts, index=list(self.class_names), name="samples")

    def summary(self) -> pd.DataFrame:
        """Samples per source dataset and class, total and subject count, plus an ``all`` row (datasets.md tables)."""
        frame = pd.DataFrame({"dataset": self.datasets, "label": np.asarray(self.class_names, dtype=object)[self.y],
                              "subject": self.subjects})
        counts = pd.crosstab(frame["dataset"], frame["label"]).reindex(columns=list(self.class_names), fill_value=0)
        counts["total"] = counts.sum(axis=1)
        counts["subjects"] = frame.groupby("dataset")["subject"].nunique()
        counts.loc["all"] = [*counts[list(self.class_names)].sum(), len(frame), frame["subject"].nunique()]
        counts.columns.name = None
        return counts.astype("int64")

    def expand_frames(self, index=None) -> tuple[np.ndarray, np.ndarray]:
        """Per-frame samples of a sequence dataset: ``(x_frames, frame_to_clip)``.

        ``x_frames`` is ``F x H x W x C`` (the frame stacks of the clips at ``index``,
        default all, concatenated in that order); ``frame_to_clip[f]`` is the dataset
        position of the clip frame ``f`` came from. Frame labels and subjects are
        ``y[frame_to_clip]`` and ``subjects[frame_to_clip]``. The ShuffleNetV2 recipe
        trains on frames and scores a clip by the mean of its frames' scores
        (:func:`clip_scores`).
        """
        if not self.is_sequence:
            raise ValueError("expand_frames needs a sequence dataset (from_cache(..., input='frames'))")
        idx = np.arange(len(self)) if index is None else np.asarray(index, dtype=np.int64)
        if idx.size == 0:
            return np.empty((0, *self.sample_shape), dtype=self.x[0].dtype), np.empty(0, np.int64)
        stacks = [self.x[i] for i in idx]
        frame_to_clip = np.repeat(idx, [len(s) for s in stacks])
        return np.concatenate(stacks), frame_to_clip


def clip_scores(frame_scores, frame_to_clip) -> tuple[np.ndarray, np.ndarray]:
    """Mean of the frame scores of each clip: ``(clip_index, scores)``, clips in ascending position.

    ``frame_scores`` is ``F x K``, ``frame_to_clip`` the mapping of
    :meth:`LOSODataset.expand_frames`. A clip's score is the unweighted mean over its
    frames (the ShuffleNetV2 paper's clip decision).
    """
    scores = np.asarray(frame_scores, dtype=np.float64)
    owner = np.asarray(frame_to_clip, dtype=np.int64)
    if scores.ndim != 2 or scores.shape[0] != owner.shape[0]:
        raise ValueError(f"frame_scores must be F x K with F = len(frame_to_clip) = {owner.shape[0]}, got {scores.shape}")
    clips, inverse = np.unique(owner, return_inverse=True)
    sums = np.zeros((len(clips), scores.shape[1]))
    np.add.at(sums, inverse, scores)
    return clips, sums / np.bincount(inverse)[:, None]


TENSOR_ALIGNMENT = 64
"""Byte alignment TensorFlow needs to use a host buffer without copying it (Eigen's maximum)."""


def aligned_empty(shape, dtype) -> np.ndarray:
    """An uninitialised C-contiguous array whose data start at a multiple of :data:`TENSOR_ALIGNMENT` bytes.

    numpy's own allocations are only 16-byte aligned;
    :func:`~mer_keras.training.backends.tensorflow.to_tensor` shares an aligned array with
    TensorFlow instead of copying it.
    """
    dtype = np.dtype(dtype)
    shape = tuple(int(v) for v in shape)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + TENSOR_ALIGNMENT, dtype=np.uint8)
    start = -raw.ctypes.data % TENSOR_ALIGNMENT
    return raw[start: start + nbytes].view(dtype).reshape(shape)


def megc_source(subject: str) -> str:
    """Source dataset of a MEGC2019 subject folder name: ``sub01`` -> ``casme2``, ``s01`` -> ``smic``, ``006`` -> ``samm``.

    Any other name gives ``"megc2019"``.
    """
    if re.fullmatch(r"sub\d+", subject):
        return "casme2"
    if re.fullmatch(r"s\d+", subject):
        return "smic"
    if re.fullmatch(r"\d+", subject):
        return "samm"
    return "megc2019"


def _input_from_arrays(kind: str, arrays: dict) -> np.ndarray:
    """One clip's network input from its cached arrays (see :data:`INPUT_KINDS`)."""
    if kind == "flow_stack":
        return np.concatenate([arrays["flow"].astype(np.float32), arrays["strain"].astype(np.float32)[..., None]], axis=-1)
    if kind == "flow_image":
        return np.asarray(arrays["flow_image"])
    if kind == "apex":
        return np.asarray(arrays["apex"])[..., None]
    if kind == "onset_apex":
        return np.stack([arrays["onset"], arrays["apex"]], axis=-1)
    if kind == "frame_changes":
        return frame_changes(np.asarray(arrays["frames"]))[..., None]
    return np.asarray(arrays["frames"])[..., None]


def _verify_megc_splits(files: pd.DataFrame, subjects: list[str]) -> None:
    """Each subject's ``u_train`` == union of the other subjects' ``u_test`` (multisets of (label, hash))."""
    from .folds import LeakageError

    test = files[files["split"] == "u_test"]
    owner: dict[str, set] = defaultdict(set)  # image hash -> subjects whose u_test holds it
    for s, h in zip(test["subject"], test["hash"]):
        owner[h].add(s)
    per_subject = {s: Counter(zip(g["label"], g["hash"])) for s, g in test.groupby("subject")}
    everyone = sum(per_subject.values(), Counter())
    for subject in subjects:
        train = files[(files["subject"] == subject) & (files["split"] == "u_train")]
        own_hashes = {h for _, h in per_subject.get(subject, {})}
        leaked = train[train["hash"].isin(own_hashes)]
        if len(leaked):
            names = [Path(p).name for p in leaked["path"][:3]]
            raise LeakageError(f"subject {subject!r}: u_train holds {len(leaked)} image(s) of the same subject's "
                               f"u_test (the left-out subject leaks into training), e.g. {names}")
        expected = everyone - per_subject.get(subject, Counter())
        found = Counter(zip(train["label"], train["hash"]))
        missing, extra = expected - found, found - expected
        if extra:
            (label, h), _ = next(iter(sorted(extra.items())))
            row = train[(train["hash"] == h)].iloc[0]
            if h not in owner:
                why = "is in no subject's u_test"
            elif (label, h) not in everyone:
                why = f"is under label {label} here but under another label in u_test"
            else:
                why = "is there more often than in the other subjects' u_test"
            raise FolderLayoutError(f"subject {subject!r}: u_train holds {sum(extra.values())} unexpected image(s), "
                                    f"e.g. {Path(row['path']).name} which {why}")
        if missing:
            (label, h), _ = next(iter(sorted(missing.items())))
            source = test[test["hash"] == h].iloc[0]
            raise FolderLayoutError(f"subject {subject!r}: u_train misses {sum(missing.values())} image(s) of other "
                                    f"subjects' u_test, e.g. {Path(source['path']).name} of subject "
                                    f"{source['subject']!r} (label {label})")
