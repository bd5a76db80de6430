"""Memory and throughput of one ShuffleNetV2-SVM fold at 224 px on a MEGC2019-sized synthetic cache.

Same as ``mer-keras bench fold`` (see :mod:`mer_keras.training.bench_fold`): prepares (or
reuses, with ``--workdir``) a synthetic cache with the MEGC2019 clip list (442 clips, 68
subjects), runs one fold of the two-stage recipe in a child process and prints stage-1 and
stage-2 training samples/s, the child's peak RSS against the 4 GB target, and the official
Off-TANet PyTorch throughput as a reference line. ``--folds N`` trains N folds one after
the other in the same child and prints the RSS after each (memory growth across folds).

    python experiments/00b_fold_memory_bench.py [--epochs 2] [--frames 30] [--clips 60] [--folds 1] [--workdir DIR]
"""

import argparse

from mer_keras.training.bench_fold import FRAMES_PER_CLIP, run_fold_bench


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224, help="input size in pixels")
    parser.add_argument("--frames", type=int, default=FRAMES_PER_CLIP, help="frames per clip from onset to apex")
    parser.add_argument("--clips", type=int, help="keep whole subjects until this many clips (default all 442)")
    parser.add_argument("--epochs", type=int, default=2, help="training (stage-2) epochs measured")
    parser.add_argument("--pretrain-epochs", type=int, help="pre-training (stage-1) epochs (default --epochs)")
    parser.add_argument("--width", type=float, default=1.0, help="ShuffleNetV2 width multiplier")
    parser.add_argument("--recipe", default="shufflenet_svm_corrected", help="a two-stage recipe")
    parser.add_argument("--folds", type=int, default=1, help="folds trained in one process (RSS printed after each)")
    parser.add_argument("--workdir", help="keep the synthetic data, cache and fold run here (reused next time)")
    parser.add_argument("--workers", type=int, help="prepare processes (default: all cores)")
    args = parser.parse_args()
    run_fold_bench(args.workdir, size=args.size, frames_per_clip=args.frames, clips=args.clips, epochs=args.epochs,
                   pretrain_epochs=args.pretrain_epochs, recipe=args.recipe, width=args.width, folds=args.folds,
                   workers=args.workers)


if __name__ == "__main__":
    main()
