"""ShuffleNetV2-SVM paper (``liu2022-shufflenetv2-tvl1-svm``, Scientific Reports 2022), Table 4: time per sample.

Rows: ResNet50, DeiT, MobileNetV2, ShuffleNetV2 + CBAM, ShuffleNetV2 + ViT. Columns, ours:

* network ms -- batch-1 inference of the network at 224 px on this CPU
  (``mer_keras.evaluation.timing.run_latency_bench``: compiled ``model(x)``, warm-up, then
  the repetitions interleaved across the models, median), beside the paper's Table 4;
* alignment + flow ms -- the pre-processing of one sample with the ``shufflenet`` preset
  (dlib face detection and 68 landmarks on a 640x480 onset frame, alignment of onset and
  apex, TV-L1 flow, strain, masks, flow image: ``mer_keras.preprocess.pipeline.preprocess_clip``
  on a bundled portrait and a warped copy of it, ``mer_keras.preprocess.bench``), median;
* end-to-end ms -- the sum of the two.

The paper's times are per sample on an Intel Core i9-9980HK CPU with an AMD Radeon Pro
5500M; it does not say whether they include pre-processing or which device ran the
network, so only the network column is compared (the other two print "not in text").

Deviations: DeiT is DeiT-Base/16 (the text's "more than 10 G" multiply-adds); one network
pass per sample (the two-stage recipe scores a clip as the mean over its onset..apex
frames, which multiplies the network part by the frame count); timings are of this
machine. Measured times are kept in ``OUT/timing.json`` and reused by a rerun with the same
settings (``--remeasure`` to measure again). ``--quick``: 32 px, 3 repetitions. ``--rows``
(``--exact-rows``) times only the selected networks (the others stay in the table without
numbers; their saved times are kept for the next run). ``--data`` and ``--executor`` do
not apply (nothing is trained).

    python experiments/03_shufflenet_table4_timing.py [--quick] [--repeats 30] [--remeasure] [--rows TEXT ...] [--out DIR]
"""

import statistics
import sys
import time

from mer_keras.evaluation.experiments import (
    Column, TableSpec, assemble, batch1_timing, parse_args, timing_rows, write_results)

ROWS = (("ResNet50", "resnet50"), ("DeiT", "deit_base"), ("MobileNetV2", "mobilenet_v2"),
        ("ShuffleNetV2 + CBAM", "shufflenet_v2_cbam"), ("ShuffleNetV2+ViT", "shufflenet_v2_vit"))
TABLE = TableSpec(
    paper="liu2022-shufflenetv2-tvl1-svm", table="4", title="Time to recognise one sample (ms)",
    columns=(Column("-", "network_ms", paper_metric="time_ms", label="network ms"),
             Column("-", "preprocess_ms", paper_metric="", label="alignment + flow ms"),
             Column("-", "end_to_end_ms", paper_metric="", label="end-to-end ms")),
    rows=(),
    notes=("Paper column: the paper's per-sample time, compared with the network time (the paper does not say "
           "whether pre-processing is included).",),
)


def preprocess_ms(size: int, repeats: int) -> float:
    """Median ms of pre-processing one two-frame sample with the 'shufflenet' preset at ``size``."""
    from mer_keras.preprocess.bench import face_field, portrait_frame
    from mer_keras.preprocess.face import FaceAligner
    from mer_keras.preprocess.flow import warp_forward
    from mer_keras.preprocess.pipeline import PreprocessConfig, preprocess_clip

    onset = portrait_frame()
    aligner = FaceAligner(upsample=0, fallback_upsample=1)
    landmarks = aligner.landmarks_in_box(onset, aligner.detect(onset))
    apex = warp_forward(onset, 2.0 * face_field(onset.shape[:2], landmarks))  # a 2 px expression
    config = PreprocessConfig.preset("shufflenet", size=size, keep="onset_apex")
    preprocess_clip([onset, apex], 0, 1, config, aligner)  # warm-up (model loading)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        preprocess_clip([onset, apex], 0, 1, config, aligner)
        times.append(1e3 * (time.perf_counter() - start))
    return statistics.median(times)


def measure(args, rows) -> dict:
    """Network times of ``rows`` and the pre-processing time (alignment and TV-L1 flow of one clip), or the saved ones."""
    return batch1_timing(args, [name for _, name in rows], size=224, quick_size=32,
                         extra=lambda size, repeats: {"preprocess_ms": preprocess_ms(size, repeats)})


def main(argv=None) -> int:
    args = parse_args(argv, __doc__.split("\n\n")[0], script="03_shufflenet_table4_timing",
                      extra=lambda p: (p.add_argument("--repeats", type=int, help="timed runs per model"),
                                       p.add_argument("--remeasure", action="store_true")))
    rows, status = timing_rows(ROWS, args)
    timing = measure(args, rows)
    values = {}
    for label, name in rows:
        network = timing["network_ms"][name]
        values[(label, "-", "network_ms")] = network
        values[(label, "-", "preprocess_ms")] = timing["preprocess_ms"]
        values[(label, "-", "end_to_end_ms")] = network + timing["preprocess_ms"]
    s = timing["settings"]
    status.update({label: f"{timing['status']} ({s['size']} px, median of {s['repeats']})" for label, _ in rows})
    results = assemble(TABLE, [label for label, _ in ROWS], values, status)
    notes = [f"{'--quick: 32 px inputs and 3 repetitions; ' if args.quick else ''}network times at {s['size']} px, "
             f"pre-processing of one 640x480 two-frame sample to {s['size']} px."]
    write_results(TABLE, results, args.out, notes, runs={"timing": timing})
    return 0


if __name__ == "__main__":
    sys.exit(main())
