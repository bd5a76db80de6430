"""End-to-end latency: two raw 640x480 frames -> label, stage by stage, against the 150 ms target.

Same as ``mer-keras bench e2e`` (:mod:`mer_keras.inference.latency`): the Off-TANet (112 px,
TV-L1 flow) and ShuffleNetV2-SVM (224 px frames) pipelines, with the bundle's exact
pre-processing and with the realtime options (half-resolution detection, cheaper TV-L1),
the latter also on one OpenCV thread; medians after warm-up, wall and process-CPU time;
then the TV-L1 end-point error of OpenCV's defaults, the ``fast`` preset and the realtime
setting on the synthetic ground truths. ``--json`` also writes the numbers to a file.

    python experiments/00d_end_to_end_latency.py [--repeats 15] [--no-shufflenet] [--json out.json]
"""

import argparse
import json

from mer_keras.inference.latency import run_e2e_bench


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="timed runs per configuration (median reported)")
    parser.add_argument("--no-shufflenet", action="store_true", help="only the Off-TANet pipeline")
    parser.add_argument("--json", help="write the numbers to this file")
    args = parser.parse_args()
    result = run_e2e_bench(repeats=args.repeats, include_shufflenet=not args.no_shufflenet)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
