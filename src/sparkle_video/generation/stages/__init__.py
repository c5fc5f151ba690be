"""The five stages of the method, one module each: pure functions of their inputs and the backends.

Nothing here reads or writes files; :mod:`sparkle_video.generation.steps` does that around them.
"""

from .background import BackgroundResult, erase_mask, generate_background, ground_foreground
from .camera_filter import CameraResult, SourceCheck, check_source, filter_camera
from .final_video import FinalResult, generate_edited_video, score_frame_indices
from .frame_edit import FrameEditResult, edit_first_frame
from .tracking import TrackingResult, track_foreground

__all__ = [
    "BackgroundResult",
    "CameraResult",
    "FinalResult",
    "FrameEditResult",
    "SourceCheck",
    "TrackingResult",
    "check_source",
    "edit_first_frame",
    "erase_mask",
    "filter_camera",
    "generate_background",
    "generate_edited_video",
    "ground_foreground",
    "score_frame_indices",
    "track_foreground",
]
