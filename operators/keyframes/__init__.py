"""Keyframes (ShareGPT4Video step 3): CLIP frame embeddings, selection, keyframe images.

Importing this package loads no model library; torch, open_clip and av are imported when used.
"""

from operators.keyframes.calibrate import calibrate, calibrate_batch, format_calibration_table
from operators.keyframes.clip_encoder import ClipEncode
from operators.keyframes.clip_model import ClipConfig
from operators.keyframes.operator import SelectKeyframes, keyframe_path
from operators.keyframes.select import KeyframeConfig, is_blank, select_keyframes

__all__ = [
    "ClipConfig",
    "ClipEncode",
    "KeyframeConfig",
    "SelectKeyframes",
    "calibrate",
    "calibrate_batch",
    "format_calibration_table",
    "is_blank",
    "keyframe_path",
    "select_keyframes",
]
