"""MobileViT paper (``liu2022-mobilevit-macro-transfer``, Frontiers in Neurorobotics 2022), Table 4: time per sample.

Rows: MobileViT-S, MobileNetV2, MobileNetV3-Small, MobileNetV3-Large, ResNet18, DeiT. The
text around Table 4 compares MobileViT with "the lightweight MobileNetV3 model", ResNet18
and "the model without the convolutional structure"; MobileNetV2 (the MobileNetV2 blocks
of MobileViT, and the reference row of ``mer_keras.evaluation.timing``) is added. Columns,
ours: the batch-1 inference time of the network on this CPU
(``mer_keras.evaluation.timing.run_latency_bench``: compiled ``model(x)``, warm-up, then the
repetitions interleaved across the models, median) and its trainable parameters.

Table 4 is an image in our copy of the paper, so its times are not in the text; the
abstract's "the time to process individual samples was only 35.4 ms" is compared with the
MobileViT-S row. The paper's hardware (section "Experimental Setup"): an Intel Core
i9-9980HK CPU, 32 GB RAM and an AMD Radeon Pro 5500M GPU; it does not say which device
ran inference, nor whether the time includes pre-processing.

Deviations and choices: every network at 256 x 256 x 3, the input of the paper's
pre-processing for all its networks (the grey apex frame repeated to three channels), 3
classes, softmax heads (the SVM head is a Dense layer of the same size); MobileNetV3 as
``keras.applications`` MobileNetV3Small and MobileNetV3Large (``weights=None``; the paper
does not say which); DeiT is DeiT-Base/16 (the text: DeiT has "86 M parameters"); one
network pass per sample, pre-processing not included; timings are of this machine.
Measured times are kept in ``OUT/timing.json`` and reused by a rerun with the same
settings (``--remeasure`` to measure again). ``--quick``: 64 px (the smallest input
MobileViT-S takes), 3 repetitions, 1 warm-up call. ``--rows`` (``--exact-rows``) times
only the selected networks (the others stay in the table without numbers; their saved
times are kept for the next run). ``--data`` and ``--executor`` do not apply (nothing is
trained).

    python experiments/11_mobilevit_table4_timing.py [--quick] [--repeats 30] [--remeasure] [--rows TEXT ...] [--out DIR]
"""

import platform
import sys

from mer_keras.evaluation.experiments import (
    Column, TableSpec, assemble, batch1_timing, parse_args, timing_rows, write_results)

ROWS = (("MobileViT-S", "mobilevit_s"), ("MobileNetV2", "mobilenet_v2"), ("MobileNetV3-Small", "mobilenet_v3_small"),
        ("MobileNetV3-Large", "mobilenet_v3_large"), ("ResNet18", "resnet18"), ("DeiT", "deit_base"))
PAPER_ROWS = {"MobileViT-S": "MobileViT"}
"""Our label -> the paper's (the abstract's time is MobileViT-S's: "we chose the largest scale model")."""
SIZE = 256
TABLE = TableSpec(
    paper="liu2022-mobilevit-macro-transfer", table="4", title="Time to recognise one sample (ms)",
    columns=(Column("-", "network_ms", paper_metric="time_ms", label="network ms"),
             Column("-", "params", paper_metric="")),
    rows=(),
    also_from=("abstract",),
    notes=("Table 4 is an image in our copy of the paper: its times are not in the text. Paper column of the "
           "MobileViT-S row: the abstract's 35.4 ms per sample (device and pre-processing not stated).",),
)


def measure(args, rows) -> dict:
    """Network times and parameters of ``rows``, or the saved ones."""
    return batch1_timing(args, [name for _, name in rows], size=SIZE, quick_size=64)


def main(argv=None) -> int:
    args = parse_args(argv, __doc__.split("\n\n")[0], script="11_mobilevit_table4_timing",
                      extra=lambda p: (p.add_argument("--repeats", type=int, help="timed runs per model"),
                                       p.add_argument("--remeasure", action="store_true")))
    rows, status = timing_rows(ROWS, args)
    timing = measure(args, rows)
    values = {}
    for label, name in rows:
        values[(label, "-", "network_ms")] = timing["network_ms"][name]
        values[(label, "-", "params")] = timing["params"][name]
    s = timing["settings"]
    status.update({label: f"{timing['status']} ({s['size']} px, median of {s['repeats']})" for label, _ in rows})
    results = assemble(TABLE, [label for label, _ in ROWS], values, status, PAPER_ROWS)
    mvit = values.get(("MobileViT-S", "-", "network_ms"))  # absent when --rows leaves MobileViT-S out
    versus = "" if mvit is None else f"; MobileViT-S {mvit:.1f} ms here vs 35.4 ms in the paper ({mvit / 35.4:.2f}x)"
    notes = [f"{'--quick: 64 px inputs and 3 repetitions; ' if args.quick else ''}batch-1 network times at "
             f"{s['size']} px on this machine ({platform.processor() or platform.machine()}){versus}."]
    write_results(TABLE, results, args.out, notes, runs={"timing": timing})
    return 0


if __name__ == "__main__":
    sys.exit(main())
