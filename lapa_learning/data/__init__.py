"""Episode datasets (LeRobotDataset v2.1 layout; v3.0 read too), external video folders, and frame-pair sampling.

Names are imported lazily so that `from lapa_learning.data import EpisodeWriter` (the ROS recorder) does not
pull in torch.
"""

_EXPORTS = {
    "EpisodeDataset": "lapa_learning.data.reader",
    "EpisodeInfo": "lapa_learning.data.reader",
    "EpisodeWriter": "lapa_learning.data.writer",
    "VideoFolder": "lapa_learning.data.video_folder",
    "FramePairDataset": "lapa_learning.data.pairs",
    "split_episodes": "lapa_learning.data.pairs",
    "open_video_source": "lapa_learning.data.video_folder",
}

__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'lapa_learning.data' has no attribute {name!r}")
