"""``datasets`` builders for Sparkle and Sparkle-Bench.

``datasets`` 5 no longer runs loading scripts from the Hub, so the builders ship with the library
(importable as ``sparkle_video_loaders``) and ``sparkle_video.load_sparkle`` /
``sparkle_video.load_sparkle_bench`` drive them. They are thin and declarative: the reading logic
lives in ``sparkle_video.data.catalog``.
"""

from .sparkle import Sparkle, SparkleConfig
from .sparkle_bench import SparkleBench, SparkleBenchConfig

__all__ = ["Sparkle", "SparkleBench", "SparkleBenchConfig", "SparkleConfig"]
