"""Training-throughput benchmark: projected full-LOSO wall time of the STSTNet and Off-TANet recipes.

Same as ``mer-keras bench train``: data of the real protocol sizes (442 clips / 68 subjects,
294 / 49), a few folds trained by the engine, projected to the full LOSO and printed beside
the official PyTorch code measured on the same CPU.

    python experiments/00c_training_throughput.py [--folds 2] [--epochs 60] [--executors inprocess ray]
"""

import argparse

from mer_keras.training.bench import run_training_bench


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="+", default=["ststnet", "off_tanet"])
    parser.add_argument("--epochs", type=int, help="epochs measured per fold (default 60 STSTNet, 6 others)")
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--executors", nargs="+", default=["inprocess"], choices=["inprocess", "ray"])
    args = parser.parse_args()
    run_training_bench(tuple(args.recipes), epochs=args.epochs, folds=args.folds, executors=tuple(args.executors))


if __name__ == "__main__":
    main()
