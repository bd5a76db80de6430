"""ShuffleNetV2-SVM paper (``liu2022-shufflenetv2-tvl1-svm``, Scientific Reports 2022), Table 2: ablation.

Rows: ShuffleNetV2, ShuffleNetV2 with CBAM, ShuffleNetV2 with the improved ViT, MobileNetV2,
ResNet50 and DeiT, each full (TV-L1 flow-image pre-training + SVM head), without
pre-training and without the SVM classifier (softmax + cross-entropy instead); columns UAR
and UF1 per source dataset (MMEW, CASME II, SMIC, SAMM), ours beside the paper's. The paper
prints no "without" rows for CBAM and the improved ViT (paper column "not in text").

Deviations from the paper:

* every row trains the ``"shufflenet_svm_corrected"`` two-stage recipe (L2 5e-4 per
  kernel) with the row's backbone, attention block, pre-training and head switches: the
  paper's L2 scale 0.2 makes training collapse onto one class (see the recipe's notes);
* the paper's open choices are the recipe's (epochs, batches, learning-rate schedule,
  validation split for the pre-training epoch);
* DeiT is DeiT-Base/16 (the text's "more than 10 G" multiply-adds; see
  ``mer_keras.evaluation.timing``); the paper's row labels "DeIT without pre-trained",
  "DeIT without SVM classifier*" and "DeiT*" are printed here as "DeiT ...";
* UAR/UF1 per source dataset are pooled over that dataset's left-out subjects of one
  LOSO run over the whole composite (the paper does not say how its columns were formed);
* default data: a synthetic composite of CASME II, SMIC, SAMM and MMEW twins at 224 px;
  ``--size`` trains every row at another size (a CPU variant, not a paper setting);
  ``--data`` takes a cache of the licensed datasets prepared with the ``shufflenet``
  preset (onset..apex frames kept);
* ``--quick`` trains one row (ShuffleNetV2 without pre-training, width 0.5x, 32 px).

Run with the same ``--out`` as ``02_shufflenet_table3_comparison.py`` to share the MobileNetV2,
DeiT and improved-ViT runs.

Run time: the estimates measured on a quiet 2-core CPU (``--dry-run``) add up to about
770 h at 224 px (DeiT-Base alone 555 h, ResNet50 121 h, MobileNetV2 40 h, the nine
ShuffleNetV2 rows 50 h) and 89 h with ``--size 64`` (the nine ShuffleNetV2 rows 10.9 h):
the full table needs a GPU (``--device gpu``); ``--rows ShuffleNetV2 --size 64`` runs the
paper's own model family on a CPU (see ``experiments/README.md``).

    python experiments/01_shufflenet_table2_ablation.py [--quick] [--size 64] [--data CACHE] [--yes] [--out DIR]
"""

import sys

from mer_keras.evaluation.experiments import Column, DataSpec, Row, TableSpec, main
from mer_keras.training import get_recipe

RECIPE = "shufflenet_svm_corrected"
FRAMES = DataSpec("shufflenet", "shufflenet", 224, quick_size=32)
KWARGS = dict(get_recipe(RECIPE).model_kwargs)


def network(label: str, paper_labels=None, quick: str | None = None, **changes) -> list[Row]:
    """The paper's three rows of one network: without pre-training, without SVM, full."""
    paper_labels = paper_labels or {}
    variants = ((f"{label} without pre-trained", dict(pretrain=False)),
                (f"{label} without SVM classifier", dict(head="softmax")),
                (label, {}))
    return [Row(name, RECIPE, FRAMES, overrides={**changes, **extra}, paper_row=paper_labels.get(name),
                quick=name == quick, quick_overrides=dict(model_kwargs=dict(width_multiplier=0.5)),
                folder=None)
            for name, extra in variants]


TABLE = TableSpec(
    paper="liu2022-shufflenetv2-tvl1-svm", table="2",
    title="Ablation: pre-training and SVM classifier per network (UAR / UF1 per source dataset)",
    columns=tuple(Column(d, m) for d in ("MMEW", "CASME II", "SMIC", "SAMM") for m in ("uar", "uf1")),
    rows=(*network("ShuffleNetV2", quick="ShuffleNetV2 without pre-trained"),
          *network("ShuffleNetV2 with CBAM", model_kwargs={**KWARGS, "attention": "cbam"}),
          *network("ShuffleNetV2 with improved ViT", model_kwargs={**KWARGS, "attention": "vit"}),
          *network("MobileNetV2", backbone="mobilenet_v2"),
          *network("ResNet50", backbone="resnet50"),
          *network("DeiT", backbone="deit_base",
                   paper_labels={"DeiT without pre-trained": "DeIT without pre-trained",
                                 "DeiT without SVM classifier": "DeIT without SVM classifier*", "DeiT": "DeiT*"})),
    resizable=True,
    notes=("Recipe 'shufflenet_svm_corrected' (L2 5e-4) for every row: the paper's L2 0.2 collapses training.",
           "Per-dataset UAR/UF1 pooled over the dataset's left-out subjects of one LOSO run over the composite."),
)

if __name__ == "__main__":
    sys.exit(main(TABLE, script="01_shufflenet_table2_ablation", description=__doc__.split("\n\n")[0]))
