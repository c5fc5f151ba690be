"""Writes are all-or-nothing: a failed encode leaves nothing at the final path, and an empty result is redone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from bench_fixtures import bench_rows, result_path, write_bench
from conftest import clip

from sparkle_video import VideoReader, write_video
from sparkle_video.bench.runner import run_inference


def frames_then_failure(frames: np.ndarray, fail_after: int):
    """Yield ``fail_after`` good frames, then one of the wrong size (the encoder has started by then)."""
    yield from frames[:fail_after]
    yield np.zeros((frames.shape[1] + 2, frames.shape[2], 3), np.uint8)


def test_encode_failing_half_way_leaves_no_file(tmp_path: Path) -> None:
    frames = clip(0, frames=64, height=32, width=48)
    target = tmp_path / "out" / "clip.mp4"
    with pytest.raises(ValueError, match="same size"):
        write_video(frames_then_failure(frames, 60), target, fps=16)  # past the lookahead: muxed
    assert not target.exists()
    assert list(target.parent.iterdir()) == []  # the temporary file is gone too


def test_encode_failing_half_way_keeps_an_earlier_result(tmp_path: Path) -> None:
    frames = clip(0, frames=6, height=32, width=48)
    target = tmp_path / "clip.mp4"
    write_video(frames, target, fps=16)
    before = target.read_bytes()
    with pytest.raises(ValueError):
        write_video(frames_then_failure(frames, 3), target, fps=16)
    assert target.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]


def test_bench_infer_redoes_a_zero_byte_result(tmp_path: Path) -> None:
    bench_root = tmp_path / "bench"
    info = write_bench(bench_root, {"location": 2}, frames=5)
    rows = bench_rows(info)
    out = tmp_path / "results"
    first = run_inference(rows, lambda v, p: v.get_frames(), out, progress=False)
    assert sorted(first.written) == sorted(info)
    empty_id, done_id = sorted(info)
    empty = result_path(out, info, empty_id)
    empty.write_bytes(b"")  # what a crashed copy or a full disk leaves
    again = run_inference(rows, lambda v, p: v.get_frames(), out, progress=False)
    assert again.written == [empty_id] and again.skipped_existing == [done_id]
    assert empty.stat().st_size > 0 and VideoReader(str(empty)).num_frames == 5
