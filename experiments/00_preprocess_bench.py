"""Pre-processing benchmark: detection, landmarks, TV-L1 speed and accuracy, prepare throughput.

Same as ``mer-keras bench preprocess``; prints measured numbers and ratios against the
reference run (OpenCV's default TV-L1 parameters; one process; the cropped-release route)
made side by side. The prepare rows time both routes on the same synthetic MEGC2019
composite: its cropped release (``off_tanet``) and its raw frames aligned with dlib
(``off_tanet_aligned``); ``--subjects 23`` gives 414 clips, about the real composite's 442.

    python experiments/00_preprocess_bench.py [--repeats 5] [--processes 1 2] [--subjects 4]
"""

import argparse

from mer_keras.preprocess.bench import run_prepare_throughput, run_preprocess_bench


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="OpenCV threads for the per-frame rows")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--subjects", type=int, default=4, help="synthetic subjects per dataset (prepare rows)")
    parser.add_argument("--clips-per-subject", type=int, default=6)
    args = parser.parse_args()
    run_preprocess_bench(repeats=args.repeats, workers=args.threads)
    print()
    run_prepare_throughput(tuple(args.processes), subjects_per_dataset=args.subjects,
                           clips_per_subject=args.clips_per_subject)


if __name__ == "__main__":
    main()
