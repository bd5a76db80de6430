"""Off-TANet paper (``zhang2021-off-tanet``, PRICAI 2021), Table 3: ablation of the input feature and of the number of enhanced blocks.

Rows (labels as printed): Off-TANet + no optical flow features, Off-TANet + no optical
strain, Off-TANet + all residual block attention-enhanced, Off-TANet(Ours). Columns: UAR
and UF1 as means of per-subject scores over the LOSO folds (the paper's convention), ours
beside the paper's.

How each row is built (Sec. 4.3 of the paper):

* no optical flow features -- "the end-to-end approach, which takes the raw onset and apex
  image as the input": the grey onset and apex frames of the cache (input kind
  ``onset_apex``, ``S x S x 2``) divided by 255, as the authors' data code does for its
  ``raw_img`` switch; the first convolution reads 2 channels;
* no optical strain -- "we change the number of input channels of the first convolution
  layer and remove the optical strain feature from the input": the ``(u, v)`` channels of
  the float flow stack (the strain channel dropped, not zeroed); 2 input channels;
* all residual block attention-enhanced -- ``res1`` and ``res2`` built as triplet-attention
  blocks too, with the same output shapes (``enhance_all_blocks=True`` of
  :func:`mer_keras.models.off_tanet.OffTANet`; the released code has no such variant, see
  that option for our reading);
* Off-TANet(Ours) -- the ``off_tanet`` recipe unchanged.

Deviations from the paper:

* every row trains with the official Off-TANet recipe (Adam 1e-3, StepLR 60 / 0.3, 201
  epochs, batch 64, last epoch evaluated); the paper does not say whether its ablations
  changed any training setting;
* default data: a synthetic Off-TANet-style composite (CASME, CASME II, CAS(ME)^2 twins);
  ``--data`` takes a cache of the licensed datasets prepared with the ``off_tanet`` preset
  at 112 px (it holds the onset and apex frames the first row needs);
* ``--quick`` trains the three ablations (one left-out subject, one epoch, 32 px); the
  full model's quick run is ``04_off_tanet_table2.py --quick``'s Off-TANet row.

    python experiments/05_off_tanet_table3.py [--quick] [--data CACHE ...] [--yes] [--out DIR]
"""

import dataclasses
import sys

import numpy as np

from mer_keras.evaluation.experiments import Column, DataSpec, Row, TableSpec, main, subject_mean_scores

FLOW = DataSpec("off_tanet", "off_tanet", 112, quick_size=32)


def onset_apex_unit_range(data):
    """Grey onset and apex frames scaled to [0, 1] (the authors' ``raw_img`` input: ``frame / 255``)."""
    return dataclasses.replace(data, x=np.asarray(data.x, dtype=np.float32) / np.float32(255.0))


def flow_without_strain(data):
    """The ``(u, v)`` channels of the ``(u, v, strain)`` flow stack."""
    return dataclasses.replace(data, x=np.ascontiguousarray(data.x[..., :2]))


TABLE = TableSpec(
    paper="zhang2021-off-tanet", table="3",
    title="Ablation on the input feature and the number of enhanced blocks (LOSO, 3 classes)",
    columns=(Column("composite", "uar", label="UAR"), Column("composite", "uf1", label="UF1")),
    rows=(Row("Off-TANet + no optical flow features", "off_tanet", FLOW, quick=True,
              overrides=dict(input="onset_apex", input_size=(112, 112, 2)), transform=onset_apex_unit_range,
              note="input: grey onset and apex frames / 255 (2 channels), as the authors' raw-image switch."),
          Row("Off-TANet + no optical strain", "off_tanet", FLOW, quick=True,
              overrides=dict(input_size=(112, 112, 2)), transform=flow_without_strain,
              note="input: (u, v) only; the first convolution reads 2 channels (Sec. 4.3)."),
          Row("Off-TANet + all residual block attention-enhanced", "off_tanet", FLOW, quick=True,
              overrides=dict(model_kwargs=dict(block="triplet", enhance_all_blocks=True)),
              note="res1 and res2 also triplet-attention blocks, same output shapes (not in the released code)."),
          Row("Off-TANet(Ours)", "off_tanet", FLOW)),
    scores=subject_mean_scores,
    notes=("UAR/UF1: unweighted means of per-subject scores (Off-TANet convention).",
           "Every row trains with the official Off-TANet recipe (Adam 1e-3, StepLR 60 / 0.3, 201 epochs, batch 64)."),
)

if __name__ == "__main__":
    sys.exit(main(TABLE, script="05_off_tanet_table3", description=__doc__.split("\n\n")[0]))
