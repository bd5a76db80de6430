"""Full-LOSO training time on one device: the engine's serial and vectorised loops beside a PyTorch reference loop.

Runs on the Keras backend named by ``--backend`` (default ``jax``: the GPU machine has JAX
and PyTorch, no TensorFlow). Data: the real protocols' subjects, clips and labels
(STSTNet: MEGC2019, 442 clips / 68 subjects; Off-TANet: 294 / 49) with flow-like arrays of
each recipe's input size. The reference is the PyTorch loop written from the official
code's settings (:mod:`mer_keras.training.reference_torch`), timed on ``--reference-folds``
folds and projected to all. Writes ``side_by_side.csv`` / ``.md`` under ``--out``.

    python experiments/00e_gpu_training.py --out experiments_out/gpu_training
    python experiments/00e_gpu_training.py --quick    # a few epochs and folds, any machine
"""

import argparse
import os
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="jax", choices=["jax", "tensorflow", "torch"])
    parser.add_argument("--recipes", nargs="+", default=["ststnet", "off_tanet"])
    parser.add_argument("--loops", nargs="+", default=["vectorised", "serial", "reference"],
                        choices=["vectorised", "serial", "reference"])
    parser.add_argument("--epochs", type=int, help="epochs per fold (default: the recipe's, 800 / 201)")
    parser.add_argument("--serial-folds", type=int, help="folds the serial loop runs (default all; fewer: projected)")
    parser.add_argument("--vectorised-folds", type=int, help="folds the vectorised loop runs (default all)")
    parser.add_argument("--reference-folds", type=int, default=2, help="folds the reference loop runs (projected)")
    parser.add_argument("--vectorise", default="auto", help="folds per compiled step: an integer or 'auto'")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu"])
    parser.add_argument("--out", default="experiments_out/gpu_training")
    parser.add_argument("--quick", action="store_true", help="3 epochs, 3 folds per loop, 1 reference fold")
    args = parser.parse_args(argv)
    if "keras" in sys.modules and os.environ.get("KERAS_BACKEND", args.backend) != args.backend:
        parser.error("Keras was imported with another backend; run this script in a fresh process")
    os.environ["KERAS_BACKEND"] = args.backend
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # leave GPU memory for the PyTorch reference
    from mer_keras.training.bench import side_by_side

    if args.quick:
        args.epochs, args.serial_folds, args.vectorised_folds, args.reference_folds = 3, 3, 3, 1
    vectorise = args.vectorise if args.vectorise == "auto" else int(args.vectorise)
    side_by_side(tuple(args.recipes), loops=tuple(args.loops), epochs=args.epochs, serial_folds=args.serial_folds,
                 vectorised_folds=args.vectorised_folds, reference_folds=args.reference_folds, vectorise=vectorise,
                 device=args.device, out_dir=args.out)


if __name__ == "__main__":
    main()
