"""Off-TANet paper (``zhang2021-off-tanet``, PRICAI 2021), Table 4: design of the last attention-enhanced residual block.

Rows (labels as printed; the official code's ``net_type`` in brackets, our
:func:`mer_keras.models.off_tanet.OffTANet` ``block`` after the arrow): No enhancement
['res'] -> ``"residual"`` (a plain residual block 28 -> 8), + CBAM ['cbam'] -> ``"cbam"``
(channel and spatial attention between the two convolutions), + multi-head self-attention
['sa'] -> ``"self_attention"`` (4-head self-attention 28 -> 8 channels after the first
convolution, no second convolution, as the code's ``forward``), + bottleneck Transformer
['bot'] -> ``"bottleneck_transformer"`` (1x1 shortcut + two stacked self-attention layers
28 -> 8 -> 8), Off-TANet(Ours) ['ta'] -> ``"triplet"``. Every other layer is the same.
Columns: UAR and UF1 as means of per-subject scores over the LOSO folds (the paper's
convention), ours beside the paper's, plus each variant's trainable parameters (not in the
paper's table).

Deviations from the paper:

* every row trains with the official Off-TANet recipe (Adam 1e-3, StepLR 60 / 0.3, 201
  epochs, batch 64, last epoch evaluated) on the float ``(u, v, strain)`` flow at 112 px;
  the paper does not say whether its ablations changed any training setting;
* default data: a synthetic Off-TANet-style composite (CASME, CASME II, CAS(ME)^2 twins);
  ``--data`` takes a cache of the licensed datasets prepared with the ``off_tanet`` preset
  at 112 px;
* ``--quick`` trains No enhancement, + multi-head self-attention and + bottleneck
  Transformer (one left-out subject, one epoch, 32 px): the layers of + CBAM are a subset
  of the triplet block's, whose quick run is ``04_off_tanet_table2.py --quick``'s Off-TANet
  row; the parameters are counted for the rows that run.

    python experiments/06_off_tanet_table4.py [--quick] [--data CACHE ...] [--yes] [--out DIR]
"""

import sys

from mer_keras.evaluation.experiments import Column, DataSpec, Row, TableSpec, main, model_stats, subject_mean_scores

FLOW = DataSpec("off_tanet", "off_tanet", 112, quick_size=32)
BLOCKS = (("No enhancement", "residual"), ("+ CBAM", "cbam"), ("+ multi-head self-attention", "self_attention"),
          ("+ bottleneck Transformer", "bottleneck_transformer"), ("Off-TANet(Ours)", "triplet"))
QUICK = ("residual", "self_attention", "bottleneck_transformer")


def params(row, recipe, out) -> dict:
    """Trainable parameters of the row's model at its input size (cached in ``OUT/model_stats.json``);
    under ``--quick`` only for the rows that run."""
    if recipe.name.endswith("-quick") and not row.quick:
        return {}
    return {k: v for k, v in model_stats(recipe, cache_file=out / "model_stats.json").items() if k[1] == "params"}


TABLE = TableSpec(
    paper="zhang2021-off-tanet", table="4",
    title="Ablation on the design of the last attention-enhanced residual block (LOSO, 3 classes)",
    columns=(Column("composite", "uar", label="UAR"), Column("composite", "uf1", label="UF1"),
             Column("-", "params", paper_metric="")),
    rows=tuple(Row(label, "off_tanet", FLOW, quick=block in QUICK, overrides=dict(model_kwargs=dict(block=block)))
               for label, block in BLOCKS),
    scores=subject_mean_scores,
    row_stats=params,
    notes=("UAR/UF1: unweighted means of per-subject scores (Off-TANet convention); params: trainable parameters "
           "at the input size trained here (not in the paper's table).",
           "Block designs follow the official code's net_type variants ('res', 'cbam', 'sa', 'bot', 'ta'); every row "
           "trains with the official Off-TANet recipe."),
)

if __name__ == "__main__":
    sys.exit(main(TABLE, script="06_off_tanet_table4", description=__doc__.split("\n\n")[0]))
