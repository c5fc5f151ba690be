"""Timing helper shared by the benchmark scripts (run as ``python benchmarks/NAME.py``)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_time(
    fn: Callable[[], object], repeats: int, sync: Callable[[], None] = lambda: None, warmup: bool = True
) -> float:
    """Median wall seconds of ``fn`` over ``repeats`` runs, after one warm-up run (file cache, codec init)."""
    if warmup:
        fn()
        sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
