"""The ``mer-keras`` command line: a thin layer over the library.

Every subcommand has ``--help``. One error boundary (:func:`main`, :func:`describe_error`;
issue 22) turns every user-caused error into one ``mer-keras: error: ...`` line on stderr
that names the file or argument and says how to fix it, with a non-zero exit code (2 for a
bad argument, 1 for bad input or a failed write, 130 for Ctrl-C); ``--debug`` shows the
traceback instead. Numeric options are checked by their argparse ``type=`` (:func:`_count`,
:func:`_real`); output paths are checked writable before any work (:func:`check_writable`).
Unexpected exceptions (bugs) keep their traceback. TensorFlow's start-up log is kept off
stderr (:mod:`mer_keras.quiet`) unless ``TF_CPP_MIN_LOG_LEVEL`` is set or ``--debug`` is given.
"""

from __future__ import annotations

import argparse
import errno
import inspect
import logging
import math
import os
import sys
import tempfile
from pathlib import Path

from mer_keras.quiet import quiet_tensorflow


class CLIError(Exception):
    """An error the user can fix; printed as one line."""


class _Parser(argparse.ArgumentParser):
    """``argparse`` whose errors are the one ``mer-keras: error: ...`` line of every other failure.

    Python's ``ArgumentParser.error`` prints the usage block and ``PROG: error: ...``; here
    the usage is replaced by a pointer to ``--help`` so that every user error reads alike.
    """

    def error(self, message):
        self.exit(2, f"mer-keras: error: {message} (see `{self.prog} --help`)\n")


# ----------------------------------------------------------------------------- numeric options


def _count(minimum: int, what: str = "a whole number", maximum: int | None = None):
    """An argparse ``type=``: an integer in ``[minimum, maximum]``; the message says what to pass instead."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum or (maximum is not None and value > maximum):
            bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
            raise argparse.ArgumentTypeError(f"takes {what} {bound}, got {text!r}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def _real(minimum: float, maximum: float = math.inf, *, open_low: bool = False, what: str = "a number"):
    """An argparse ``type=``: a finite float in ``[minimum, maximum]`` (``(minimum, maximum]`` with ``open_low``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        low_ok = value > minimum if open_low else value >= minimum
        if not (math.isfinite(value) and low_ok and value <= maximum):
            if maximum == math.inf:
                bound = f"{'>' if open_low else '>='} {minimum:g}"
            else:
                bound = f"in {'(' if open_low else '['}{minimum:g}, {maximum:g}]"
            raise argparse.ArgumentTypeError(f"takes {what} {bound}, got {text!r}")
        return value

    parse.__name__ = "number"
    return parse


def _folds_or_auto(text: str):
    """``--vectorise-folds``: a count >= 1 or ``auto``."""
    if text == "auto":
        return text
    try:
        return _count(1)(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"takes a fold count >= 1 or 'auto', got {text!r}") from None


SEED = _count(0, "a seed", 2**32 - 1)
"""Seeds: numpy and Keras take non-negative 32-bit seeds."""
CROP_SIZE = _count(8, "a size in pixels", 2048)
"""Crop sizes: the bounds of :class:`~mer_keras.preprocess.pipeline.PreprocessConfig`."""


# ----------------------------------------------------------------------------- output folders

_OS_HINTS = {
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOSPC: "the disk is full; free some space or choose a folder on another disk",
    errno.EDQUOT: "the disk quota is exceeded; free some space or choose a folder on another disk",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "it is a folder, not a file",
}


def _os_reason(exc: OSError) -> str:
    """``exc``'s reason in words, without Python's ``[Errno N]`` prefix."""
    return _OS_HINTS.get(exc.errno) or exc.strerror or str(exc)


WRITE_PROBE_PREFIX = ".mer-keras-write-test-"
"""Name prefix of :func:`check_writable`'s probe file (a killed command may leave one behind)."""


def check_writable(path, option: str, *, folder: bool = True) -> None:
    """Raise :class:`CLIError` unless ``path`` can be written, before any work is done.

    ``folder``: ``path`` is (or will be) a folder; otherwise a file. The check walks up to
    the nearest existing folder (every existing part must be a folder) and writes, syncs
    and removes a small probe file there, so a read-only file system, a missing
    permission, a path under a regular file and a full disk all fail here, not after the
    work (issue 22: ``fit-final`` used to fail only after training).
    """
    path = Path(path)
    if path.exists() and path.is_dir() != folder:
        kind = "a folder" if folder else "a file"
        raise CLIError(f"{option} {path} is not {kind}; choose {kind} path for {option}")
    probe_dir = path if folder else path.parent
    while not probe_dir.exists() and probe_dir != probe_dir.parent:
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise CLIError(f"{option} {path}: {probe_dir} is a file, not a folder; choose an {option} that is not "
                       "under a file")
    try:
        with tempfile.NamedTemporaryFile(dir=probe_dir, prefix=WRITE_PROBE_PREFIX) as probe:
            probe.write(b"\0" * 4096)
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as exc:
        raise CLIError(f"{option} {path}: cannot write in {probe_dir} ({_os_reason(exc)}); choose a writable "
                       f"folder for {option}") from exc


# ----------------------------------------------------------------------------- the error boundary

def _one_line(text) -> str:
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())


def describe_error(exc: BaseException, args) -> tuple[str, int] | None:
    """``(message, exit code)`` of a user-caused error, or None for a bug (shown with its traceback).

    The one error boundary of the command line (issue 22): every message names the file or
    the argument and says how to fix it.
    """
    out = getattr(args, "out", None)
    if isinstance(exc, CLIError):
        return str(exc), 2
    folds = sys.modules.get("mer_keras.training.folds")
    if folds is not None and isinstance(exc, folds.LeakageError):
        where = f"--data {args.data}: " if getattr(args, "data", None) else ""
        return (f"{where}{exc}; no subject may be on both sides of a split (in a MEGC2019 folder tree each "
                "subject's u_train holds only the other subjects' u_test images): fix the folders and rerun"), 1
    if isinstance(exc, OSError) and exc.errno is None:  # raised with a message of ours (FileExistsError, ...)
        return str(exc), 1
    if isinstance(exc, OSError):
        reason = _os_reason(exc)
        if exc.filename:
            name = os.fsdecode(exc.filename)
            if exc.errno == errno.ENOENT:
                return f"{name} does not exist", 1
            where = name
        else:
            where = f"writing --out {out}" if out else f"mer-keras {args.command}"
        fix = "; choose a writable folder for --out" if out and exc.errno in (
            errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR) else ""
        return f"{where}: {reason}{fix}", 1
    if isinstance(exc, (FileNotFoundError, ValueError, KeyError, RuntimeError)):
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        return str(message), 1
    return None


def _composite_parts(fn) -> list[str]:
    """A composite builder's source-dataset arguments: its keyword parameters that default to None."""
    return [
        p.name
        for p in inspect.signature(fn).parameters.values()
        if p.kind is p.POSITIONAL_OR_KEYWORD and p.default is None
    ]


def _parse_roots(pairs: list[str]) -> dict[str, Path]:
    roots = {}
    for pair in pairs or []:
        name, sep, path = pair.partition("=")
        if not sep or not name or not path:
            raise CLIError(f"--root takes NAME=PATH (e.g. casme2=/data/CASME2), got {pair!r}")
        roots[name] = Path(path)
    return roots


def load_manifest(args, release: str = "raw"):
    """The manifest selected by --dataset/--composite, --root and --data-dir, read from ``release``'s frames."""
    from mer_keras.data import COMPOSITES, load_dataset
    from mer_keras.data.composites import MACRO_COMPOSITES

    roots = _parse_roots(args.root)
    if bool(args.dataset) == bool(args.composite):
        raise CLIError("give exactly one of --dataset NAME or --composite NAME")
    for path in roots.values():
        if not path.exists():
            raise CLIError(f"dataset root {path} does not exist")
    if args.dataset:
        root = roots.get(args.dataset) or (Path(args.data_dir) / args.dataset if args.data_dir else None)
        if root is None and len(roots) == 1:
            root = next(iter(roots.values()))
        if root is None or not Path(root).exists():
            raise CLIError(f"no root for {args.dataset}: pass --root {args.dataset}=PATH or --data-dir")
        return load_dataset(args.dataset, root, **({"release": release} if release != "raw" else {}))
    if release != "raw" and args.composite in MACRO_COMPOSITES:
        raise CLIError(f"{args.composite} is a macro-expression composite without a cropped release; prepare it "
                       "with --source aligned or an aligned preset (mobilevit_apex)")
    fn = COMPOSITES[args.composite]
    names = _composite_parts(fn)
    kwargs = {}
    for name in names:
        if name in roots:
            kwargs[name] = roots[name]
        elif args.data_dir and (Path(args.data_dir) / name).is_dir():
            kwargs[name] = Path(args.data_dir) / name
    unknown = set(roots) - set(names)
    if unknown:
        raise CLIError(f"{args.composite} has no part {sorted(unknown)}; its parts are {names}")
    if not kwargs:
        raise CLIError(f"no dataset roots for {args.composite}: pass --root NAME=PATH for some of {names}")
    if release != "raw":
        kwargs["release"] = release
    return fn(**kwargs)


def _add_source_args(p: argparse.ArgumentParser, composites) -> None:
    src = p.add_argument_group("data source (licensed data on your disk, or a synthetic twin)")
    src.add_argument("--dataset", help="one dataset: casme, casme2, samm, smic, mmew, casme_sq, ckplus, oulu_casia, "
                     "jaffe, mug")
    src.add_argument("--composite", choices=sorted(composites), help="a composite protocol set")
    src.add_argument("--root", action="append", metavar="NAME=PATH", help="a dataset's root folder (repeatable)")
    src.add_argument("--data-dir", help="folder holding one sub-folder per dataset, named as above (as `synth` writes)")


def cmd_synth(args) -> int:
    from mer_keras.data import COMPOSITES, synthetic

    out = Path(args.out)
    check_writable(out, "--out")
    kwargs = dict(seed=args.seed, photos=args.photos, n_frames=args.frames, release=args.release or "both")
    if args.release is None and args.name not in COMPOSITES and args.name not in synthetic.CROPPED_RELEASES:
        kwargs["release"] = "raw"  # the default: both releases where the dataset has two
    if args.counts:
        kwargs["counts"] = args.counts
    if args.identity_variety:
        kwargs["identity_variety"] = True
    if args.name in COMPOSITES:
        roots = synthetic.write_composite(
            args.name, out, subjects_per_dataset=args.subjects, clips_per_subject=args.clips, **kwargs
        )
        for part, root in roots.items():
            print(f"{part}: {root}")
        print(f"next: mer-keras prepare --composite {args.name} --data-dir {out} --out CACHE_DIR")
    else:
        info = synthetic.write_dataset(args.name, out, n_subjects=args.subjects, clips_per_subject=args.clips, **kwargs)
        clips = info["clips"]
        n = clips['subject'].nunique() if "subject" in clips else 0
        subjects = f" of {n} subject{'s' if n != 1 else ''}" if n else ""
        print(f"{args.name}: {info['n_clips']} clips{subjects} in {out}, annotation {Path(info['annotation']).name}")
        print(f"next: mer-keras prepare --dataset {args.name} --root {args.name}={out} --out CACHE_DIR")
    return 0


def cmd_prepare(args) -> int:
    from mer_keras.data.manifest import summarize
    from mer_keras.preprocess.cache import check_output_folder, prepare
    from mer_keras.preprocess.pipeline import PreprocessConfig

    check_writable(args.out, "--out")
    check_output_folder(args.out)  # before reading the dataset: a folder that is not a cache is refused first
    config = PreprocessConfig.preset(args.preset)
    if args.source == "aligned" and config.source == "cropped":  # the cropped preset's input from raw frames
        config = PreprocessConfig.preset(f"{args.preset}_aligned")
    elif args.source == "cropped" and config.source == "aligned":
        raise CLIError(f"--preset {args.preset} aligns raw frames with landmarks (its paper's route); "
                       "--source cropped is for the presets of the official codes (off_tanet, ststnet)")
    if args.size is not None:
        config = config.replace(size=args.size)
    try:
        manifest = load_manifest(args, release=config.release)
    except (ValueError, FileNotFoundError) as exc:
        if config.release != "cropped":
            raise
        raise CLIError(f"{exc}. On the command line: --source aligned prepares the same input from raw frames "
                       f"(preset {args.preset}_aligned)") from exc
    if args.labelled_only:
        manifest = manifest[manifest["label_id"] >= 0]
    print(f"preset {args.preset}: source {config.source} ({config.release} frames), {config.size} px, "
          f"fingerprint {config.fingerprint()}")
    print(summarize(manifest).to_string())
    result = prepare(manifest, args.out, config, workers=args.workers, progress=not args.no_progress)
    print(result.summary())
    return 0


def cmd_bench(args) -> int:
    if args.what == "preprocess":
        from mer_keras.preprocess.bench import run_prepare_throughput, run_preprocess_bench

        run_preprocess_bench(repeats=args.repeats, workers=args.threads)
        print()
        run_prepare_throughput(tuple(args.processes), subjects_per_dataset=args.subjects,
                               clips_per_subject=args.clips_per_subject)
    elif args.what == "latency":
        from mer_keras.evaluation.timing import run_latency_bench

        run_latency_bench(repeats=args.repeats)
    elif args.what == "train":
        from mer_keras.training import backends
        from mer_keras.training.bench import run_training_bench, side_by_side

        if args.epochs is not None and args.epochs < 2:
            raise CLIError(f"bench train: --epochs takes a count >= 2 (the first epoch includes tracing), "
                           f"got {args.epochs}")
        if args.out:
            check_writable(args.out, "--out")
        if "ray" in args.executors:  # projected full LOSO of concurrent Ray folds
            run_training_bench(tuple(args.recipes), epochs=args.epochs, folds=args.folds,
                               executors=tuple(args.executors))
            return 0
        loops = ("serial", "vectorised", "reference") if backends.get().supports_vectorised else ("serial", "reference")
        if args.device != "gpu" and (os.cpu_count() or 1) > 1:
            loops = loops[:-1] + ("processes",) + loops[-1:]
        epochs = args.epochs or {"ststnet": 60, "off_tanet": 6, "arfnet": 6}
        side_by_side(tuple(args.recipes), loops=loops, epochs=epochs, serial_folds=args.folds,
                     vectorised_folds=args.folds, reference_folds=args.folds, device=args.device, out_dir=args.out)
    elif args.what == "e2e":
        from mer_keras.inference.latency import run_e2e_bench

        run_e2e_bench(repeats=args.repeats)
    elif args.what == "fold":
        from mer_keras.training.bench_fold import run_fold_bench

        epochs = 2 if args.epochs is None else args.epochs
        if args.workdir:
            check_writable(args.workdir, "--workdir")
        run_fold_bench(args.workdir, size=args.size, frames_per_clip=args.frames, clips=args.clips, epochs=epochs,
                       pretrain_epochs=args.pretrain_epochs, recipe=args.recipe, width=args.width,
                       workers=args.workers)
    return 0


def cmd_models(args) -> int:
    from mer_keras.models import available
    from mer_keras.models.summary import model_summary_table

    names = args.names or available()
    unknown = sorted(set(names) - set(available()))
    if unknown:
        raise CLIError(f"unknown model(s) {unknown}; available: {', '.join(available())}")
    table = model_summary_table(names, classes=args.classes,
                                progress=lambda n: print(f"building {n} ...", file=sys.stderr))
    table["trainable_params"] = table["trainable_params"].map("{:,}".format)
    for col in ("macs", "flops"):
        table[col] = table[col].map(_si)
    print(table.to_string(index=False))
    return 0


def _si(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))


def cmd_demo(args) -> int:
    from mer_keras.demo import run_demo

    check_writable(args.out, "--out")
    run_demo(args.out, subjects_per_dataset=args.subjects, clips_per_subject=args.clips, workers=args.workers,
             seed=args.seed, epochs=args.epochs, shufflenet_size=args.shufflenet_size,
             shufflenet_width=args.shufflenet_width, shufflenet_pretrain_epochs=args.shufflenet_pretrain_epochs,
             shufflenet_epochs=args.shufflenet_epochs, shufflenet_folds=args.shufflenet_folds or None,
             **({} if args.appearance_strength is None else {"appearance_strength": args.appearance_strength}))
    return 0


def cmd_datasets(args) -> int:
    from mer_keras.data import available_datasets

    for name in available_datasets():
        print(name)
    return 0


def _chosen_recipe(args):
    """The ``--recipe`` preset (``--quick`` applied), after checking ``--epochs`` and ``--data`` (loso, fit-final)."""
    from mer_keras.training import available_recipes, get_recipe

    try:
        recipe = get_recipe(args.recipe)
    except KeyError:
        raise CLIError(f"unknown recipe {args.recipe!r}; available: {', '.join(available_recipes())}") from None
    if args.quick:
        recipe = recipe.quick()
    if not Path(args.data).exists():
        raise CLIError(f"--data {args.data} does not exist")
    return recipe


def cmd_loso(args) -> int:
    from mer_keras.training import run_loso

    recipe = _chosen_recipe(args)
    if args.epochs is not None:
        recipe = recipe.replace(epochs=args.epochs)
    data = args.data
    if args.macro is not None:
        if recipe.trainer != "transfer":
            raise CLIError(f"--macro is for transfer recipes (mobilevit_transfer); {recipe.name!r} does not use it")
        if not Path(args.macro).exists():
            raise CLIError(f"--macro {args.macro} does not exist")
        data = {"micro": args.data, "macro": args.macro}
    elif recipe.trainer == "transfer" and recipe.pretrain:
        raise CLIError(f"recipe {recipe.name!r} pre-trains on a macro-expression cache: pass --macro DIR "
                       "(prepared with --preset mobilevit_apex), or use it without transfer in Python (pretrain=False)")
    ray_options = {key: value for key, value in (("ray_address", args.ray_address),
                                                 ("cpus_per_fold", args.cpus_per_fold),
                                                 ("gpus_per_fold", args.gpus_per_fold)) if value is not None}
    if ray_options and args.executor != "ray":
        raise CLIError("--ray-address, --cpus-per-fold and --gpus-per-fold need --executor ray")
    if args.workers is not None:
        if args.executor != "processes":
            raise CLIError("--workers needs --executor processes")
        ray_options["workers"] = args.workers
    check_writable(args.out, "--out")
    report = run_loso(data, recipe, args.out, subjects=args.subjects or None, seed=args.seed,
                      device=args.device, progress=not args.no_progress, overwrite=args.overwrite,
                      executor=args.executor, executor_options=ray_options, vectorise_folds=args.vectorise_folds)
    m = report.metrics
    print(f"{recipe.name}: UF1 {m['uf1']:.4f}  UAR {m['uar']:.4f}  accuracy {m['accuracy']:.4f}  "
          f"(all folds pooled, {m['n_clips']} clips, {m['n_folds']} folds)")
    print(f"per-subject mean: UF1 {m['uf1_subject_mean']:.4f}  UAR {m['uar_subject_mean']:.4f}")
    print(report.per_dataset.to_string(float_format=lambda v: f"{v:.4f}"))
    print(report.markdown_header())
    print(report.markdown_row())
    print(f"report: {Path(args.out) / 'report.json'}")
    return 0


def cmd_fit_final(args) -> int:
    from mer_keras.inference.fit import fit_final

    recipe = _chosen_recipe(args)
    if Path(args.out).exists() and not args.overwrite:
        raise CLIError(f"--out {args.out} exists; pass --overwrite to replace the bundle")
    if args.macro is not None and not Path(args.macro).exists():
        raise CLIError(f"--macro {args.macro} does not exist")
    check_writable(args.out, "--out")  # before training, not after it
    result = fit_final(args.data, recipe, args.out, epochs=args.epochs, seed=args.seed, device=args.device,
                       macro=args.macro, progress=not args.no_progress, overwrite=args.overwrite)
    print(result.summary())
    print(f"next: mer-keras predict CLIP --pipeline {args.out}")
    return 0


def _clip_arguments(args) -> list:
    """The clips of `predict`: paths, or (onset, apex) image pairs with --pairs."""
    if not args.pairs:
        return list(args.clips)
    if len(args.clips) % 2:
        raise CLIError(f"--pairs takes an even number of images (onset apex onset apex ...), got {len(args.clips)}")
    return [[args.clips[i], args.clips[i + 1]] for i in range(0, len(args.clips), 2)]


def cmd_predict(args) -> int:
    import csv
    import json

    from mer_keras.inference.clips import describe
    from mer_keras.inference.predict import load_pipeline

    if not Path(args.pipeline).exists():
        raise CLIError(f"--pipeline {args.pipeline} does not exist (write one with `mer-keras fit-final`)")
    clips = _clip_arguments(args)
    if args.csv:
        check_writable(args.csv, "--csv", folder=False)
    pipeline = load_pipeline(args.pipeline, options="realtime" if args.realtime else "exact")
    result = pipeline.predict_many(clips, args.onset, args.apex, progress=not args.no_progress and not args.json)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        for prediction in result.predictions:
            print(prediction.summary())
    if args.csv:
        names = list(pipeline.class_names)
        columns = ["source", "status", "label", *[f"score_{c}" for c in names], "score_kind", "onset", "apex",
                   "apex_spotted", "n_frames", "total_ms", "error"]
        rows = {p.source: p for p in result.predictions}
        failed = {f.source: f for f in result.failures}
        with open(args.csv, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(columns)
            for clip in clips:
                key = describe(clip)
                if key in rows:
                    p = rows[key]
                    writer.writerow([p.source, "ok", p.label, *[f"{p.scores[c]:.6f}" for c in names], p.score_kind,
                                     p.onset, p.apex, p.apex_spotted, p.n_frames, f"{p.timings_ms['total']:.1f}", ""])
                else:
                    writer.writerow([key, "failed", "", *[""] * len(names), "", "", "", "", "", "", failed[key].error])
    if result.failures:
        print(f"mer-keras: {len(result.failures)} of {len(clips)} clip(s) failed:", file=sys.stderr)
        for failure in result.failures:
            print(f"  {failure.error}", file=sys.stderr)  # each message names its clip
        return 1
    return 0


def cmd_export(args) -> int:
    from mer_keras.inference.export import export_tflite

    if not Path(args.pipeline).exists():
        raise CLIError(f"--pipeline {args.pipeline} does not exist")
    check_writable(args.out, "--out", folder=False)
    report = export_tflite(args.pipeline, args.out, check=args.check)
    print(f"wrote {report['path']} ({report['bytes']:,} bytes) and {report['sidecar']}")
    if "check" in report:
        c = report["check"]
        print(f"TFLite vs Keras on {c['n']} random inputs ({c['runtime']} interpreter): "
              f"max |diff| {c['max_abs_diff']:.3g}, mean {c['mean_abs_diff']:.3g}, "
              f"max relative {c['max_rel_diff']:.3g}, same top class "
              f"{100 * c['argmax_agreement']:.0f} %")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from mer_keras.data import COMPOSITES
    from mer_keras.preprocess.pipeline import PRESETS

    parser = _Parser(
        prog="mer-keras",
        description="Lightweight micro-expression recognition in Keras 3 (ShuffleNetV2-SVM, MobileViT, Off-TANet, "
                    "ARFNet).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every fixed or skipped clip")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error (and TensorFlow's start-up log) instead of one line")
    parser.add_argument("--backend", choices=["tensorflow", "jax", "torch"],
                        help="Keras backend for this command (sets KERAS_BACKEND; default: KERAS_BACKEND or "
                             "tensorflow)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("synth", help="write a synthetic dataset or composite in the real on-disk layout")
    p.add_argument("name", help=f"a dataset name or a composite ({', '.join(sorted(COMPOSITES))})")
    p.add_argument("--out", required=True, help="folder to write into")
    p.add_argument("--subjects", type=_count(1, "a subject count"), default=4,
                   help="subjects (per dataset for a composite)")
    p.add_argument("--clips", type=_count(1, "a clip count"), default=6, help="clips per subject")
    p.add_argument("--frames", type=_count(3, "a frame count"), default=15, help="frames per clip")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--photos", help="folder of your own frontal face photos to build subjects from")
    p.add_argument("--counts", choices=["real"], help="'real': annotation-only twin with the real clip counts")
    p.add_argument("--release", choices=["raw", "cropped", "both"],
                   help="which releases to write: the raw frames, the dataset's cropped face release, or both "
                        "(default, as the real downloads ship them; datasets without a cropped release get raw)")
    p.add_argument("--identity-variety", action="store_true",
                   help="subjects morphed between the bundled photos, reshaped and lit (wider identities than the "
                        "default's two photos)")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("prepare", help="align, mask and compute TV-L1 flow for every clip into a resumable cache")
    _add_source_args(p, COMPOSITES)
    p.add_argument("--out", required=True, help="cache folder (rerun to resume)")
    p.add_argument("--preset", default="shufflenet", choices=list(PRESETS),
                   help="mobilevit_apex: apex frames only, no flow (macro sets with single images, e.g. JAFFE); "
                        "off_tanet and ststnet read the datasets' cropped releases as the official codes do, "
                        "their *_aligned twins align raw frames")
    p.add_argument("--source", choices=["aligned", "cropped"],
                   help="override the preset's input: 'aligned' (landmark alignment of raw frames, for data without "
                        "a cropped release) or 'cropped' (the dataset's cropped release as it is)")
    p.add_argument("--size", type=CROP_SIZE, help="override the preset's crop size")
    p.add_argument("--workers", type=_count(1, "a process count"), help="processes (default: all cores)")
    p.add_argument("--labelled-only", action="store_true", help="skip clips without a 3-class label")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("bench", help="benchmarks that print measured numbers")
    p.add_argument("what", choices=["preprocess", "latency", "train", "fold", "e2e"],
                   help="preprocess: detection, landmarks, TV-L1 and prepare throughput by route (cropped release, "
                   "aligned raw frames); latency: batch-1 inference "
                   "of the papers' Table 4 models; train: projected full-LOSO wall time of the flow recipes at the "
                   "real protocol sizes; fold: samples/s and peak RSS of one ShuffleNetV2-SVM fold at 224 px on a "
                   "MEGC-sized synthetic cache; e2e: two raw 640x480 frames -> label, per stage (Off-TANet and "
                   "ShuffleNetV2 pipelines, exact and realtime pre-processing) and TV-L1 accuracy")
    p.add_argument("--repeats", type=_count(1, "a repetition count"), default=5,
                   help="timed repetitions per row (median reported)")
    p.add_argument("--threads", type=_count(1, "a thread count"), default=1,
                   help="OpenCV threads for the per-frame rows (prepare workers use 1)")
    p.add_argument("--processes", type=_count(1, "process counts"), nargs="+", default=[1, 2],
                   help="process counts for the prepare throughput rows")
    p.add_argument("--subjects", type=_count(1, "a subject count"), default=4,
                   help="preprocess: synthetic subjects per MEGC2019 dataset for the prepare rows "
                   "(23 with --clips-per-subject 6 gives 414 clips, about the composite's 442)")
    p.add_argument("--clips-per-subject", type=_count(1, "a clip count"), default=6,
                   help="preprocess: synthetic clips per subject for the prepare rows")
    p.add_argument("--recipes", nargs="+", default=["ststnet", "off_tanet"], choices=["ststnet", "off_tanet", "arfnet"],
                   help="train: recipes to measure")
    p.add_argument("--epochs", type=_count(1, "an epoch count"),
                   help="train: epochs measured per fold (default 60 STSTNet, 6 others; at least 2); "
                   "fold: epochs of each stage (default 2)")
    p.add_argument("--folds", type=_count(1, "a fold count"), default=2, help="train: folds measured per recipe")
    p.add_argument("--executors", nargs="+", default=["inprocess"], choices=["inprocess", "ray"],
                   help="train: ray runs the measured folds as concurrent Ray tasks (one CPU each) and projects the "
                        "full LOSO (without the reference loop)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu"], help="train: where the loops run")
    p.add_argument("--out", help="train: write side_by_side.csv / .md here")
    p.add_argument("--size", type=CROP_SIZE, default=224, help="fold: input size in pixels")
    p.add_argument("--frames", type=_count(3, "a frame count"), default=30,
                   help="fold: frames per clip from onset to apex (an assumption)")
    p.add_argument("--clips", type=_count(1, "a clip count"),
                   help="fold: keep whole subjects until this many clips (default all 442)")
    p.add_argument("--pretrain-epochs", type=_count(1, "an epoch count"),
                   help="fold: pre-training epochs (default --epochs)")
    p.add_argument("--width", type=_real(0, open_low=True, what="a width multiplier"), default=1.0,
                   help="fold: ShuffleNetV2 width multiplier")
    p.add_argument("--recipe", default="shufflenet_svm_corrected", help="fold: a two-stage recipe")
    p.add_argument("--workdir", help="fold: keep the synthetic data, cache and fold run here (reused on the next run)")
    p.add_argument("--workers", type=_count(1, "a process count"), help="fold: prepare processes (default: all cores)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("demo", help="synthetic MEGC-style composite -> readers -> prepare -> LOSO (Off-TANet and "
                       "ShuffleNetV2-SVM), with reports")
    p.add_argument("--out", default="demo_out")
    p.add_argument("--subjects", type=_count(1, "a subject count"), default=4, help="subjects per dataset")
    p.add_argument("--clips", type=_count(1, "a clip count"), default=6, help="clips per subject")
    p.add_argument("--workers", type=_count(1, "a process count"), help="prepare processes (default: all cores)")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--epochs", type=_count(1, "an epoch count"), default=40,
                   help="Off-TANet training epochs per LOSO fold (paper: 201)")
    p.add_argument("--shufflenet-size", type=CROP_SIZE, default=64, help="ShuffleNetV2-SVM input size (paper: 224)")
    p.add_argument("--shufflenet-width", type=_real(0, open_low=True, what="a width multiplier"), default=0.5,
                   help="ShuffleNetV2 width multiplier (paper: 1.0)")
    p.add_argument("--shufflenet-pretrain-epochs", type=_count(1, "an epoch count"), default=5,
                   help="ShuffleNetV2-SVM flow pre-training epochs")
    p.add_argument("--shufflenet-epochs", type=_count(1, "an epoch count"), default=5,
                   help="ShuffleNetV2-SVM training epochs on the frames")
    p.add_argument("--shufflenet-folds", type=_count(0, "a fold count"), default=3,
                   help="left-out subjects of the ShuffleNetV2-SVM run, round-robin over datasets (0: all)")
    p.add_argument("--appearance-strength", type=_real(0, 0.5, what="a relative brightness change"),
                   help="shading of the synthetic expressions (default: the demo's 0.15, below the writer's 0.24, "
                        "with which Off-TANet scores UF1 1.000 here; 0 = motion only)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("models", help="every registered builder with trainable params, MACs/FLOPs and input size")
    p.add_argument("names", nargs="*", help="registry names (default: all)")
    p.add_argument("--classes", type=_count(2, "a class count"), default=3, help="classes of the output layer")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("loso", help="leave-one-subject-out training and evaluation with a paper's recipe (resumable)")
    p.add_argument("--data", required=True,
                   help="a prepared cache (`prepare --out`) or MEGC2019 folders {subject}/u_train/{label}/*.png")
    p.add_argument("--recipe", default="ststnet", help="a recipe name (mer_keras.training.available_recipes(): "
                   "ststnet, off_tanet, arfnet, shufflenet_svm, mobilevit_transfer, ...)")
    p.add_argument("--macro",
                   help="transfer recipes: the prepared macro-expression cache (CK+, Oulu-CASIA, JAFFE, MUG)")
    p.add_argument("--out", required=True, help="run folder (rerun to resume)")
    p.add_argument("--subjects", nargs="+", help="only these left-out subjects (training still uses all others)")
    p.add_argument("--quick", action="store_true",
                   help="the recipe's short variant (a few epochs; tests/CI, not a paper setting)")
    p.add_argument("--epochs", type=_count(1, "an epoch count"), help="override the recipe's epochs")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu"],
                   help="auto uses a GPU when TensorFlow sees one (mixed precision there if the recipe asks)")
    p.add_argument("--executor", default="inprocess", choices=["inprocess", "processes", "ray"],
                   help="processes: --workers one-thread fold processes side by side (CPU, single-stage recipes); "
                        "ray: folds as Ray tasks (pip install 'mer-keras[ray]'); same artefacts and numbers")
    p.add_argument("--workers", type=_count(1, "a process count"),
                   help="processes: fold processes at once (default: one per core)")
    p.add_argument("--ray-address", help="an existing Ray cluster (default: start a local one)")
    p.add_argument("--cpus-per-fold", type=_real(0, open_low=True, what="a CPU share"),
                   help="Ray CPUs reserved per fold (default 1)")
    p.add_argument("--gpus-per-fold", type=_real(0, what="a GPU share"),
                   help="Ray GPUs reserved per fold (default 1 on a GPU, else 0)")
    p.add_argument("--vectorise-folds", metavar="N|auto", type=_folds_or_auto,
                   help="train N pending folds in one compiled step (auto: as many as fit in memory); JAX backend "
                        "(--backend jax) and single-stage recipes; pays on a GPU")
    p.add_argument("--overwrite", action="store_true", help="discard results of a different config in --out")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_loso)

    p = sub.add_parser("fit-final",
                       help="train a recipe on every subject of a prepared cache and save a pipeline bundle")
    p.add_argument("--data", required=True,
                   help="a prepared cache (`prepare --out`); its pre-processing goes into the bundle")
    p.add_argument("--recipe", default="off_tanet", help="a network recipe (off_tanet, ststnet, arfnet, "
                   "shufflenet_svm_corrected, mobilevit_transfer, ...)")
    p.add_argument("--out", required=True, help="the bundle folder to write (model.keras + pipeline.json)")
    p.add_argument("--epochs", type=_count(1, "an epoch count"), help="override the recipe's epochs")
    p.add_argument("--quick", action="store_true", help="the recipe's short variant (tests/CI, not a paper setting)")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu"])
    p.add_argument("--macro", help="transfer recipes: the prepared macro-expression cache")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle at --out")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_fit_final)

    p = sub.add_parser("predict", help="recognise clips (videos, folders of frames, or onset/apex image pairs) "
                       "with a saved pipeline")
    p.add_argument("clips", nargs="+", metavar="CLIP", help="a video file, a folder of frames, or (with --pairs) "
                   "onset and apex images")
    p.add_argument("--pipeline", required=True, help="a bundle written by `mer-keras fit-final`")
    p.add_argument("--pairs", action="store_true", help="read the CLIP arguments as (onset image, apex image) pairs")
    p.add_argument("--onset", type=_count(0, "a frame index"),
                   help="onset frame index (0-based) for every clip (default: the first frame)")
    p.add_argument("--apex", type=_count(0, "a frame index"),
                   help="apex frame index (0-based) for every clip (default: spotted)")
    p.add_argument("--realtime", action="store_true", help="half-resolution face detection and a cheaper TV-L1 "
                   "(see `mer-keras bench e2e`) instead of the bundle's exact pre-processing")
    p.add_argument("--json", action="store_true", help="print one JSON document (predictions and failures)")
    p.add_argument("--csv", help="also write one row per clip to this CSV file")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="export a bundle's network to TensorFlow Lite, checked against Keras")
    p.add_argument("--pipeline", required=True, help="a bundle written by `mer-keras fit-final`")
    p.add_argument("--out", required=True, help="the .tflite file to write (plus <out>.json with the pre-processing)")
    p.add_argument("--check", type=_count(0, "an input count"), default=8,
                   help="random inputs compared between TFLite and Keras (0: none)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("datasets", help="list the dataset readers")
    p.set_defaults(func=cmd_datasets)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.backend:
        if "keras" in sys.modules:
            import keras

            if keras.backend.backend() != args.backend:
                parser.exit(2, f"mer-keras: error: --backend {args.backend}: Keras is already loaded with the "
                               f"{keras.backend.backend()} backend in this process; set KERAS_BACKEND before "
                               "starting\n")
        os.environ["KERAS_BACKEND"] = args.backend
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.debug:
        quiet_tensorflow()
    try:
        return args.func(args)
    except KeyboardInterrupt:
        parser.exit(130, "mer-keras: interrupted (rerun the same command to resume)\n")
    except Exception as exc:
        described = None if args.debug else describe_error(exc, args)
        if described is None:
            raise
        message, code = described
        parser.exit(code, f"mer-keras: error: {_one_line(message)}\n")


if __name__ == "__main__":
    sys.exit(main())
