"""Frame changes since the onset: the input kind ``"frame_changes"``.

``frame_changes(stack)[t] = clip(128 + gain * (I_t - I_onset), 0, 255)`` for the aligned,
masked grey frames ``I_onset .. I_apex`` of one clip (the frame stack a cache prepared with
``keep="onset_to_apex"`` holds). The face itself, the same in every frame of the clip,
cancels; what is left is what the expression changed, at the same pixels for every subject
after alignment. Masked pixels are 0 in every frame and become 128 (no change).

Why: the ShuffleNetV2-SVM paper trains its network on single aligned frames, each carrying
its clip's label. A single frame shows the subject's face far more than the expression, so
a network trained from scratch on a few dozen subjects fits the faces and scores a left-out
subject near chance, while a strongly regularised linear probe on the same frames finds the
class (measured in docs/benchmarks.md, section "Two-stage diagnosis"). Subtracting the
onset is the oldest answer of the field to that problem (difference images; the flow
images of the same paper are also onset-referenced). It is not the paper's input: recipes
that use it are separate named presets (``"shufflenet_svm_changes"``), never the paper's.

``gain`` 2 maps a change of +-63 grey levels onto the uint8 range; the synthetic
expressions change up to 20-50 levels at the apex, real micro-expressions a few levels.
"""

from __future__ import annotations

import numpy as np

FRAME_CHANGE_GAIN = 2.0
"""Grey levels of output per grey level of change since the onset (see the module docstring)."""


def frame_changes(frames, gain: float = FRAME_CHANGE_GAIN) -> np.ndarray:
    """``clip(128 + gain * (frames[t] - frames[0]))`` as uint8, same shape as ``frames`` (``T x H x W [x C]``).

    ``frames[0]`` is the onset. Raises ``ValueError`` for an empty stack or a non-finite or
    non-positive ``gain``.
    """
    stack = np.asarray(frames)
    if stack.ndim < 3 or len(stack) == 0:
        raise ValueError(f"frame_changes needs a T x H x W [x C] stack with T >= 1, got shape {stack.shape}")
    gain = float(gain)
    if not np.isfinite(gain) or gain <= 0:
        raise ValueError(f"gain must be a positive number, got {gain}")
    change = stack.astype(np.float32) - stack[:1].astype(np.float32)
    return np.clip(np.rint(128.0 + gain * change), 0, 255).astype(np.uint8)


__all__ = ["FRAME_CHANGE_GAIN", "frame_changes"]
