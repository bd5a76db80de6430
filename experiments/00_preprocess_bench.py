"""Pre-processing benchmark: detection, landmarks, TV-L1 speed and accuracy, prepare throughput.

Same as ``mer-keras bench preprocess``; prints measured numbers and ratios against the
reference run (OpenCV's default TV-L1 parameters; one process) made side by side.

    python experiments/00_preprocess_bench.py [--repeats 5] [--processes 1 2]
"""

import argparse

from mer_keras.preprocess.bench import run_prepare_throughput, run_preprocess_bench


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="OpenCV threads for the per-frame rows")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    run_preprocess_bench(repeats=args.repeats, workers=args.threads)
    print()
    run_prepare_throughput(tuple(args.processes))


if __name__ == "__main__":
    main()
