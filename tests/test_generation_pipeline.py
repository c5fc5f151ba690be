"""End to end: the reference pipeline on synthetic clips, bad inputs, failing backends, the CLI and resuming
after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pytest

from sparkle_video.cli import main
from sparkle_video.data import load_sparkle
from sparkle_video.data.artifacts import SparkleArtifacts
from sparkle_video.data.layout import INTERMEDIATE_DIRS, INTERMEDIATE_JSONL
from sparkle_video.data.synthetic import make_pair
from sparkle_video.data.video import VideoReader, write_video
from sparkle_video.generation import taxonomy
from sparkle_video.generation.backends.protocols import SceneChoice
from sparkle_video.generation.backends.reference import ReferenceVLM
from sparkle_video.generation.backends.registry import register_backend
from sparkle_video.generation.runner import find_sources, generate, make_plan
from sparkle_video.generation.steps import BackendTimeout, call_with_timeout

# End to end (subprocesses, servers, whole runs): in CI, left out of mutation runs (see pyproject.toml).
pytestmark = pytest.mark.e2e

FRAMES, HEIGHT, WIDTH = 21, 112, 192


def write_sources(folder: Path, count: int, frames: int = FRAMES) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n in range(count):
        path = folder / f"clip_{n:02d}.mp4"
        write_video(make_pair(100 + n, frames, HEIGHT, WIDTH).source, path, fps=16)
        paths.append(path)
    return paths


def write_odd_sized(path: Path, frames: int = FRAMES) -> None:
    """An H.264 clip with an odd width (yuv444p allows it; write_video would pad it)."""
    video = make_pair(7, frames, 112, 193).source
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=16)
        stream.width, stream.height, stream.pix_fmt = 193, 112, "yuv444p"
        for frame in video:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def tree(root: Path) -> dict[str, bytes]:
    """Every published file (the work folder excluded) -> its bytes; ``stats.json`` without its
    timings (wall-clock seconds differ from run to run, the rest must not)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and "_generation" not in p.relative_to(root).parts:
            data = p.read_bytes()
            if p.name == "stats.json":
                stats = json.loads(data)
                stats.pop("seconds", None)
                for entry in stats["samples"].values():
                    entry.pop("seconds", None)
                data = json.dumps(stats, sort_keys=True).encode()
            out[str(p.relative_to(root))] = data
    return out


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, object]:
    base = tmp_path_factory.mktemp("gen")
    sources = base / "sources"
    write_sources(sources, 4)
    out = base / "out"
    result = generate(sources, out, progress=False)
    return sources, out, result


def test_reference_run_writes_a_loadable_dataset(reference_run) -> None:
    _, out, result = reference_run
    assert len(result.published) >= 3, result.table
    ds = load_sparkle(str(out))
    assert sorted(ds["id"]) == sorted(result.published)
    row = ds[0]
    assert row["prompt"] and row["subtheme"] and row["scene"] and row["original_scene"]
    src, edt = row["source_video"], row["edited_video"]
    assert (src.num_frames, src.width, src.height) == (FRAMES, WIDTH, HEIGHT)
    assert (edt.num_frames, edt.width, edt.height) == (FRAMES, WIDTH, HEIGHT)
    # the edit replaced the background and kept the subject
    s, e = src.get_frames([5]), edt.get_frames([5])
    arts = SparkleArtifacts(str(out))
    mask = arts.get(row["id"], "source_video_mask")
    assert mask.shape == (FRAMES, HEIGHT, WIDTH) and mask[5].any()
    diff = np.abs(s.astype(int) - e.astype(int)).mean(-1)[0]
    assert diff[~mask[5]].mean() > 30 and diff[mask[5]].mean() < diff[~mask[5]].mean() / 2


def test_full_intermediate_tree(reference_run) -> None:
    _, out, result = reference_run
    arts = SparkleArtifacts(str(out))
    for sid in result.published:
        assert sorted(arts.available(sid)) == sorted([*INTERMEDIATE_DIRS, *INTERMEDIATE_JSONL])
        r2 = arts.get(sid, "foreground_grounding_r2")
        assert r2["frame_indices"] == [0, 8, 16] and len(r2["frame_objects"]) == 3
        score = arts.get(sid, "edited_video_score")
        assert score["frame_indices"] == [1, 7, 14, 20] and len(score["editscore"]) == 4
        assert {"SC_score", "PQ_score", "O_score"} <= set(score["editscore"][0])
        assert set(arts.get(sid, "edited_frame0_score")["editscore"]) >= {
            "prompt_following",
            "consistency",
            "perceptual_quality",
            "overall",
            "SC_reasoning",
            "PQ_reasoning",
        }
        assert arts.get(sid, "foreground_grounding_r1")["objects"][0]["label"] == "moving subject"
        assert arts.get(sid, "edited_background_video").num_frames == FRAMES
        assert arts.get(sid, "edited_frame0").size == (WIDTH, HEIGHT)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["total"] == 4 and stats["published"] == len(result.published)
    assert stats["stages"]["camera"]["passed"] == 4
    assert "published" in result.table


def test_rerun_is_a_no_op_and_other_arguments_are_refused(reference_run) -> None:
    sources, out, result = reference_run
    before = tree(out)
    again = generate(sources, out, progress=False)
    assert again.published == result.published and tree(out) == before
    with pytest.raises(ValueError, match="different themes"):
        generate(sources, out, themes=["time"], progress=False)
    extra = sources.parent / "more_sources"
    extra.mkdir()
    for p in sorted(sources.iterdir()):
        (extra / p.name).symlink_to(p)
    (extra / "clip_00a.mp4").symlink_to(sorted(sources.iterdir())[0])
    run_json = out / "_generation" / "run.json"
    original = run_json.read_text()
    run_json.write_text(original.replace(str(sources.resolve()), str(extra.resolve())))
    try:  # same arguments, but a clip was added to the folder: ids would shift, so it is refused
        with pytest.raises(ValueError, match="the sources changed since this run started"):
            generate(extra, out, progress=False)
    finally:
        run_json.write_text(original)


def test_bad_inputs_are_rejected_by_name(tmp_path: Path) -> None:
    sources = tmp_path / "src"
    write_sources(sources, 1)
    (sources / "broken.mp4").write_bytes(b"not a video at all")
    write_video(make_pair(1, 9, HEIGHT, WIDTH).source, sources / "short.mp4", fps=16)
    write_video(make_pair(2, FRAMES, 160, 96).source, sources / "tall.mp4", fps=16)
    write_odd_sized(sources / "odd.mp4")
    (sources / "notes.txt").write_text("hello")
    result = generate(sources, tmp_path / "out", themes=["location"], progress=False)
    plan = {Path(p.source).name: p.id for p in result.plan}
    samples = result.stats["samples"]
    assert samples[plan["broken.mp4"]]["reason"].startswith("unreadable source")
    assert samples[plan["short.mp4"]]["reason"] == "too short: 9 frames < 17"
    assert samples[plan["tall.mp4"]]["reason"].startswith("portrait source 96x160")
    assert samples[plan["odd.mp4"]]["reason"].startswith("odd frame size 193x112")
    assert result.stats["ignored_files"] == [{"file": "notes.txt", "reason": "not a video file (.txt)"}]
    assert result.stats["stages"]["camera"] == {"passed": 1, "rejected": 4}
    assert "notes.txt" in result.table and "too short" in result.table


#: frame 0 of a source (its bytes) -> the theme TroubleVLM picks for it
TROUBLE_THEMES: dict[bytes, str] = {}


@dataclass
class TroubleVLM(ReferenceVLM):
    """Picks the theme the test assigned to each clip; hangs on season instructions and raises on time
    instructions; fine otherwise."""

    def choose_scene(self, frame0, themes, *, seed=0):
        theme = TROUBLE_THEMES[np.asarray(frame0).tobytes()]
        return SceneChoice(theme, taxonomy.scenes(theme)[0], "assigned by the test")

    def compose_instruction(self, frame0, theme, chosen_keyword, *, seed=0):
        if theme == "season":
            threading.Event().wait()  # never returns: the per-call timeout must cut it off
        if theme == "time":
            raise RuntimeError("model server said no")
        return super().compose_instruction(frame0, theme, chosen_keyword, seed=seed)


def test_failing_and_hanging_backends_fail_the_sample_not_the_run(tmp_path: Path) -> None:
    register_backend("vlm", "trouble-test", TroubleVLM, replace=True)
    sources = tmp_path / "src"
    paths = write_sources(sources, 3)
    by_theme = {}
    for n, (path, theme) in enumerate(zip(paths, ("location", "season", "time"), strict=True)):
        TROUBLE_THEMES[VideoReader(path).get_frame(0).tobytes()] = theme
        by_theme[theme] = f"clip_{n:06d}"
    config = {"vlm": {"backend": "trouble-test"}, "pipeline": {"call_timeout_s": 1.0}}
    result = generate(
        sources, tmp_path / "out", backends=config, themes=["location", "season", "time"], progress=False
    )
    samples = result.stats["samples"]
    season = samples[by_theme["season"]]
    assert {k: season[k] for k in ("stage", "status", "source", "theme")} == {
        "stage": "frame_edit",
        "status": "failed",
        "source": str(sources / "clip_01.mp4"),
        "theme": "",  # stage 2 never finished, so no choice was recorded
    }
    assert "BackendTimeout" in season["reason"]
    assert samples[by_theme["time"]]["reason"] == "RuntimeError: model server said no"
    assert samples[by_theme["location"]]["status"] == "published"
    assert samples[by_theme["location"]]["published_id"] == "Sparkle_location_000000"
    assert result.stats["stages"]["frame_edit"]["failed"] == 2
    ledger = json.loads(
        (tmp_path / "out" / "_generation" / "ledger" / "frame_edit" / f"{by_theme['time']}.json").read_text()
    )
    assert "model server said no" in ledger["traceback"]


def test_call_with_timeout() -> None:
    assert call_with_timeout(lambda x: x + 1, 5.0, 1) == 2
    with pytest.raises(KeyError):
        call_with_timeout(lambda: {}["missing"], 5.0)
    with pytest.raises(BackendTimeout):
        call_with_timeout(threading.Event().wait, 0.05)


def test_plan_is_deterministic(tmp_path: Path) -> None:
    write_sources(tmp_path, 6, frames=3)
    videos, ignored = find_sources(tmp_path)
    plan = make_plan(videos, ("location", "time"), limit=5)
    assert [p.id for p in plan] == [f"clip_{n:06d}" for n in range(5)]
    assert [Path(p.source).name for p in plan] == [f"clip_{n:02d}.mp4" for n in range(5)]
    assert {p.themes for p in plan} == {"location,time"}  # the theme itself is stage 2's choice
    assert plan == make_plan(videos, ("location", "time"), limit=5)
    assert ignored == []
    with pytest.raises(ValueError, match="unknown theme 'openve3m'"):
        make_plan(videos, ("openve3m",))


def test_camera_check_command(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    static = tmp_path / "static.mp4"
    write_video(make_pair(0, 33, 180, 320).source, static, fps=16)
    panned = tmp_path / "pan.mp4"
    wide = np.concatenate([make_pair(0, 1, 180, 640).background[0]] * 2, axis=1)
    write_video(np.stack([wide[:, 6 * t : 6 * t + 320] for t in range(33)]), panned, fps=16)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"junk")
    assert main(["generate", "camera-check", str(static), str(panned), str(bad), "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["static"] for r in records] == [True, False, False]
    assert "translation" in records[1]["reason"] and records[1]["max_translation"] > 1
    assert records[2]["reason"].startswith("unreadable source")
    assert main(["generate", "camera-check", str(static)]) == 0
    assert capsys.readouterr().out.startswith("static")


def run_cli(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONHASHSEED": "random"}
    return subprocess.Popen(
        [sys.executable, "-m", "sparkle_video.cli", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def kill_when(proc: subprocess.Popen, ready, limit_s: float = 120.0) -> bool:
    """SIGKILL ``proc`` as soon as ``ready()`` is true; False if it ended first (then nothing is killed)."""
    deadline = time.monotonic() + limit_s
    while proc.poll() is None and time.monotonic() < deadline:
        if ready():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.005)
    proc.wait()
    return False


@pytest.mark.slow
def test_killed_runs_resume_to_the_same_bytes(tmp_path: Path, reference_run) -> None:
    sources, reference_out, reference = reference_run
    out = tmp_path / "out"
    work = out / "_generation"
    args = ["generate", "run", "--sources", str(sources), "--out", str(out), "--no-progress"]

    def markers(stage: str) -> int:
        return len(list((work / "ledger" / stage).glob("*.json")))

    def partial_file() -> bool:  # an artefact being written right now
        return any(".partial-" in p.name or p.name.endswith(".tmp") for p in (work / "samples").rglob("*"))

    kill_points = [
        lambda: markers("camera") >= 1,
        lambda: markers("frame_edit") >= 2 and partial_file(),
        lambda: markers("background") >= 2,
        lambda: markers("tracking") >= 3,
        lambda: markers("final") >= 1 and partial_file(),
        lambda: (work / "publish").exists(),
    ]
    killed = 0
    for ready in kill_points:
        killed += kill_when(run_cli(args), ready)
    assert killed >= 4  # most points were reached mid-run
    proc = run_cli(args)
    assert proc.wait() == 0, proc.stderr.read().decode()
    assert tree(out) == tree(reference_out)
    assert sorted(json.loads((out / "stats.json").read_text())["samples"]) == sorted(
        p.id for p in reference.plan
    )
    assert not list(out.rglob("*.partial-*")) and not (work / "publish").exists()


@pytest.mark.slow
def test_ray_executor_matches_local(tmp_path: Path, reference_run, monkeypatch: pytest.MonkeyPatch) -> None:
    ray = pytest.importorskip("ray")
    sources, reference_out, reference = reference_run
    for var in ("RAY_ADDRESS", "RAY_AUTH_MODE"):
        monkeypatch.delenv(var, raising=False)
    out = tmp_path / "ray_out"
    try:
        result = generate(sources, out, executor="ray", executor_options={"num_cpus": 2}, progress=False)
        assert ray.is_initialized()
    finally:
        ray.shutdown()
    assert result.published == reference.published
    assert tree(out) == tree(reference_out)
