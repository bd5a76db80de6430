"""Handcrafted micro-expression descriptors: the classic MER baselines.

* :func:`lbp_top` -- LBP-TOP, uniform local binary patterns on the XY, XT and YT planes of
  the frame stack, per block (IEEE TPAMI 2007; the MEGC2019 baseline: 5 x 5 blocks, radii
  1, 1, 4);
* :func:`lbp_sip` -- LBP-SIP, the six intersection points of LBP-TOP (ACCV 2014);
* :func:`hoof` -- HOOF, histograms of oriented optical flow (IEEE CVPR 2009), per block;
* :func:`bi_woof` -- Bi-WOOF, orientation histograms weighted locally by flow magnitude
  and per block by mean optical strain, from the onset -> apex flow (Signal Processing:
  Image Communication 2018).

They are small numpy / scikit-image functions with their inputs validated
(``ValueError`` naming the problem). :data:`FEATURES` names them and what part of a
prepared clip each one reads; :func:`feature_matrix` turns a list of clips into an
``N x D`` matrix. Classification (a linear SVM per LOSO fold) lives in
:mod:`mer_keras.training.handcrafted`; this package never imports the training or model
layers.
"""

from .blocks import block_edges, block_histograms, block_ids, check_blocks
from .flow_features import bi_woof, flow_orientation, hoof, orientation_bin
from .lbp import LBP_METHODS, lbp_bins, lbp_sip, lbp_top, plane_codes, resample_frames
from .registry import FEATURES, Feature, feature_matrix, get_feature

__all__ = [
    "FEATURES",
    "Feature",
    "LBP_METHODS",
    "bi_woof",
    "block_edges",
    "block_histograms",
    "block_ids",
    "check_blocks",
    "feature_matrix",
    "flow_orientation",
    "get_feature",
    "hoof",
    "lbp_bins",
    "lbp_sip",
    "lbp_top",
    "orientation_bin",
    "plane_codes",
    "resample_frames",
]
