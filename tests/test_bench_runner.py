"""The inference runner: official layout, baselines, resume, rank sharding, atomic writes, bad samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from bench_fixtures import bench_rows, result_path, write_bench

from sparkle_video.bench.editors import (
    IdentityEditor,
    PipelineEditor,
    StaticBackgroundEditor,
    freeze_background,
    load_editor,
    to_uint8_frames,
)
from sparkle_video.bench.results import find_edited_files
from sparkle_video.bench.runner import run_inference, shard_rows
from sparkle_video.data.video import VideoReader


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("bench")
    return root, write_bench(root, {"location": 2, "season": 1, "style": 2}, frames=9)


class Counting:
    """An editor that records its calls and returns the source."""

    def __init__(self, fail_on: set[str] | None = None):
        self.calls: list[str] = []
        self.fail_on = fail_on or set()

    def __call__(self, video: VideoReader, prompt: str) -> np.ndarray:
        sid = prompt.split()[-1].rstrip(".")
        self.calls.append(sid)
        if sid in self.fail_on:
            raise RuntimeError(f"out of memory on {sid}")
        return video.get_frames()


def test_identity_writes_official_layout(bench: tuple[Path, dict], tmp_path: Path) -> None:
    _, info = bench
    report = run_inference(bench_rows(info), IdentityEditor(), tmp_path, progress=False)
    assert sorted(report.written) == sorted(info) and report.failed == []
    for sid, d in info.items():
        path = result_path(tmp_path, info, sid)
        assert path.parent.name == f"{d['subtheme']}---{d['scene'].replace(' ', '_')}"
        r = VideoReader(str(path))
        assert (r.num_frames, r.height, r.width, r.fps) == (9, 64, 96, 15.0)
        # identity keeps the frames (up to one more round of codec noise)
        decoded = VideoReader(str(d["path"])).get_frames().astype(int)
        assert np.abs(r.get_frames().astype(int) - decoded).mean() < 3
    assert sorted(find_edited_files(tmp_path)) == sorted(
        p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*_edited.mp4")
    )


def test_static_background_freezes_background_keeps_foreground(bench: tuple[Path, dict]) -> None:
    _, info = bench
    sid = sorted(info)[0]
    d = info[sid]
    out = StaticBackgroundEditor()(VideoReader(str(d["path"])), "p")
    assert out.shape == d["source"].shape and out.dtype == np.uint8
    never_fg = ~d["mask"].any(axis=0)
    # background pixels (away from the subject's path) do not change over time at all
    frozen = (out[:, never_fg] == out[:1, never_fg]).all(axis=(0, 2))
    assert frozen.mean() > 0.97
    # the moving foreground is kept: inside the square, frame 5 is the source's frame 5
    decoded = VideoReader(str(d["path"])).get_frames()
    inner = np.zeros_like(d["mask"][5])
    ys, xs = np.nonzero(d["mask"][5])
    inner[ys.min() + 3 : ys.max() - 2, xs.min() + 3 : xs.max() - 2] = True
    assert (out[5][inner] == decoded[5][inner]).all(axis=-1).mean() > 0.95
    assert (out[5][inner] == out[0][inner]).all(axis=-1).mean() < 0.2


def test_freeze_background_uses_frame0_and_median_under_subject() -> None:
    frames = np.zeros((3, 4, 4, 3), np.uint8)
    frames[:, :, :, 0] = np.array([10, 20, 30])[:, None, None]  # background brightening over time
    fg = np.zeros((3, 4, 4), bool)
    fg[0, 0, 0] = True
    fg[1, 1, 1] = True
    frames[0, 0, 0] = 200
    frames[1, 1, 1] = 210
    out = freeze_background(frames, fg)
    assert out[1, 1, 1, 0] == 210  # foreground kept
    assert out[2, 2, 2, 0] == 10  # background frozen at frame 0
    assert out[2, 0, 0, 0] == 30  # under frame 0's subject: temporal median of 200, 20, 30


def test_resume_skips_finished_ids_and_overwrite_redoes(bench: tuple[Path, dict], tmp_path: Path) -> None:
    _, info = bench
    first = Counting()
    run_inference(bench_rows(info), first, tmp_path, progress=False)
    assert sorted(first.calls) == sorted(info)
    again = Counting()
    report = run_inference(bench_rows(info), again, tmp_path, progress=False)
    assert again.calls == [] and sorted(report.skipped_existing) == sorted(info) and report.written == []
    redo = Counting()
    run_inference(bench_rows(info)[:1], redo, tmp_path, overwrite=True, progress=False)
    assert len(redo.calls) == 1


def test_rank_sharding_is_disjoint_and_complete(bench: tuple[Path, dict], tmp_path: Path) -> None:
    _, info = bench
    seen: list[list[str]] = []
    for rank in range(3):
        editor = Counting()
        report = run_inference(bench_rows(info), editor, tmp_path, rank=rank, num_ranks=3, progress=False)
        assert report.other_ranks == len(info) - len(editor.calls)
        seen.append(editor.calls)
    flat = [s for part in seen for s in part]
    assert sorted(flat) == sorted(info) and len(set(flat)) == len(flat)
    assert [len(p) for p in seen] == [2, 2, 1]
    ids_of = [r["id"] for r in shard_rows(bench_rows(info), 1, 3)[0]]
    assert ids_of == [r["id"] for r in shard_rows(list(reversed(bench_rows(info))), 1, 3)[0]]
    with pytest.raises(ValueError, match="rank"):
        shard_rows(bench_rows(info), 3, 3)


def test_failures_are_named_and_leave_no_file(bench: tuple[Path, dict], tmp_path: Path) -> None:
    _, info = bench
    ids = sorted(info)
    rows = bench_rows(info)
    rows.append({**rows[0], "id": "Sparkle_location_019999", "subtheme": None, "scene": None})
    report = run_inference(rows, Counting(fail_on={ids[1]}), tmp_path, progress=False)
    failed = dict(report.failed)
    assert set(failed) == {ids[1], "Sparkle_location_019999"}
    assert "out of memory" in failed[ids[1]] and "metadata" in failed["Sparkle_location_019999"]
    assert not result_path(tmp_path, info, ids[1]).exists()
    assert len(report.written) == len(info) - 1
    with pytest.raises(RuntimeError, match="out of memory"):
        run_inference(
            bench_rows(info), Counting(fail_on={ids[1]}), tmp_path / "b", errors="raise", progress=False
        )


def test_bad_editor_output_is_a_named_failure(bench: tuple[Path, dict], tmp_path: Path) -> None:
    _, info = bench
    rows = bench_rows(info)[:1]
    report = run_inference(rows, lambda v, p: np.zeros((4, 8, 8)), tmp_path, progress=False)
    assert report.failed and "(T, H, W, 3)" in report.failed[0][1]
    assert find_edited_files(tmp_path) == []


def test_killed_write_leaves_no_result_and_stale_partials_are_cleaned(
    bench: tuple[Path, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sparkle_video.bench.runner as runner

    _, info = bench
    rows = bench_rows(info)[:1]
    target = result_path(tmp_path, info, rows[0]["id"])
    real_write = runner.write_video

    def dying_write(frames, path, **kw):
        def gen():
            yield from frames[:3]
            raise KeyboardInterrupt  # the process is stopped while encoding

        real_write(gen(), path, **kw)

    monkeypatch.setattr(runner, "write_video", dying_write)
    with pytest.raises(KeyboardInterrupt):
        run_inference(rows, IdentityEditor(), tmp_path, progress=False)
    assert not target.exists() and list(target.parent.glob("*")) == []
    # a hard kill can leave a temporary file: the next run removes it and never counts it as a result
    stale = target.parent / f"{target.name}.partial-123-456.mp4"
    stale.write_bytes(b"half")
    assert find_edited_files(tmp_path) == []
    monkeypatch.setattr(runner, "write_video", real_write)
    report = run_inference(rows, IdentityEditor(), tmp_path, progress=False)
    assert report.written == [rows[0]["id"]] and not stale.exists() and target.is_file()


def test_editor_helpers() -> None:
    assert to_uint8_frames(np.full((1, 2, 2, 2, 3), 0.5)).tolist() == np.full((2, 2, 2, 3), 128).tolist()
    with pytest.raises(ValueError, match="uint8 or float"):
        to_uint8_frames(np.zeros((1, 2, 2, 3), np.int32))
    assert isinstance(load_editor("identity"), IdentityEditor)
    assert isinstance(load_editor("static-background"), StaticBackgroundEditor)


def test_pipeline_editor_uses_official_settings(bench: tuple[Path, dict]) -> None:
    import torch

    _, info = bench
    calls = {}

    class FakePipe:
        def __call__(self, **kw):
            calls.update(kw)
            t = kw["num_frames"]

            class Out:
                frames = np.full((1, t, 32, 32, 3), 1.0, np.float32)

            return Out()

    editor = PipelineEditor(FakePipe())
    out = editor(VideoReader(str(next(iter(info.values()))["path"])), "make it snow")
    assert out.shape == (9, 32, 32, 3) and out.dtype == np.uint8 and out.max() == 255
    assert calls["num_frames"] == 9 and calls["max_pixels"] == 1280 * 720 and calls["guidance_scale"] == 1.0
    # upstream passes cfg 5 but never runs the unconditional branch: guidance 1 reproduces it
    assert calls["output_type"] == "np" and calls["prompt"] == "make it snow"
    assert torch.equal(calls["generator"].get_state(), torch.Generator().manual_seed(0).get_state())


def test_cli_infer(bench: tuple[Path, dict], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from sparkle_video.cli import main

    root, info = bench
    argv = ["bench", "infer", "--bench", str(root), "--model", "static-background", "--out", str(tmp_path)]
    assert main([*argv, "--themes", "location"]) == 0
    assert "2 written" in capsys.readouterr().out
    assert main(argv) == 0
    assert "3 written, 2 already done" in capsys.readouterr().out
    assert len(find_edited_files(tmp_path)) == len(info)
