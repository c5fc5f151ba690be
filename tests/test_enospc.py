"""A full disk (an injected ``ENOSPC``) in each long-running command ends in one ``error:`` line naming the
file and the errno's meaning, exit 1, no traceback, nothing truncated under a final or staging name, and
a rerun that finishes once there is room again. (``train`` is covered in ``test_training_guards.py``.)"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from bench_fixtures import write_bench

from sparkle_video import VideoReader, safe_write
from sparkle_video.cli import main
from sparkle_video.data import video as video_module
from sparkle_video.data.synthetic import make_demo_records, make_pair
from sparkle_video.data.writer import write_sparkle

FULL = "No space left on device (ENOSPC)"


class FillingFile:
    """A file that takes ``room`` bytes, then fails as a full disk does (part of the data is written)."""

    def __init__(self, f, room: int):
        self.f, self.room = f, room

    def write(self, data) -> int:
        data = bytes(data)
        if len(data) > self.room:
            self.f.write(data[: self.room])
            self.f.flush()
            self.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def fill_disk_at(monkeypatch, when, room: int = 100) -> list[Path]:
    """Every ``safe_write`` temporary file whose final name passes ``when`` fills up after ``room`` bytes;
    returns the list of those it was done to."""
    real = safe_write._file
    hit: list[Path] = []

    def opened(fd: int, tmp: Path):
        f = real(fd, tmp)
        if when(tmp):
            hit.append(tmp)
            return FillingFile(f, room)
        return f

    monkeypatch.setattr(safe_write, "_file", opened)
    return hit


def encoder_fills_disk(monkeypatch, when) -> list[str]:
    """PyAV writes mp4s itself: its ``open`` for writing a target that passes ``when`` leaves a partial
    file and fails with ``ENOSPC`` (as libavformat does)."""
    real = video_module.av.open
    hit: list[str] = []

    def opening(target, mode="r", **kwargs):
        if mode == "w" and isinstance(target, str) and when(target):
            hit.append(target)
            Path(target).write_bytes(b"\0" * 100)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), target)
        return real(target, mode, **kwargs)

    monkeypatch.setattr(video_module.av, "open", opening)
    return hit


def error_lines(capsys) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [ln for ln in err.splitlines() if ln.startswith("error:")]


def files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def no_temporaries(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if p.name.endswith(".tmp") or ".partial" in p.name]


# -- the helper itself ---------------------------------------------------------------------------------
def test_a_full_disk_keeps_the_old_file_and_names_the_final_one(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "stats.json"
    safe_write.write_text(path, "old\n")
    fill_disk_at(monkeypatch, lambda tmp: True, room=2)
    with pytest.raises(safe_write.SparkleWriteError) as raised:
        safe_write.write_text(path, "new and longer\n")
    assert str(raised.value) == f"{path}: {FULL}" and raised.value.errno == errno.ENOSPC
    assert path.read_text() == "old\n" and files(tmp_path) == ["stats.json"]


def test_a_failing_fsync_or_rename_is_a_write_error_too(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "a.bin"

    def no_room(fd: int) -> None:  # delayed allocation: the error shows at fsync
        raise OSError(errno.ENOSPC, "no room")

    monkeypatch.setattr(safe_write.os, "fsync", no_room)
    with pytest.raises(safe_write.SparkleWriteError, match=rf"^{path}: No space left on device \(ENOSPC\)$"):
        safe_write.write_bytes(path, b"x" * 10)
    assert files(tmp_path) == []
    monkeypatch.undo()

    def read_only(src, dst) -> None:
        raise OSError(errno.EROFS, "ro", src)

    monkeypatch.setattr(safe_write.os, "replace", read_only)
    with pytest.raises(safe_write.SparkleWriteError, match=r"a\.bin: Read-only file system \(EROFS\)$"):
        safe_write.write_bytes(path, b"x")
    assert files(tmp_path) == []


# -- bench infer ---------------------------------------------------------------------------------------
def test_bench_infer_stops_at_a_full_disk_and_resumes(tmp_path: Path, monkeypatch, capsys) -> None:
    bench = tmp_path / "bench"
    info = write_bench(bench, {"location": 2}, frames=5)
    results = tmp_path / "results"
    argv = ["bench", "infer", "--bench", str(bench), "--model", "identity", "--out", str(results)]
    hit = encoder_fills_disk(monkeypatch, lambda target: True)
    assert main(argv) == 1
    lines = error_lines(capsys)
    assert len(hit) == 1  # the run stopped at the first full write instead of failing every sample
    final = hit[0].split(".partial-")[0]
    assert lines == [f"error: {final}: {FULL}"]
    assert files(results) == []  # neither a truncated mp4 under its name nor the partial one
    monkeypatch.undo()
    assert main(argv) == 0
    assert "2 written" in capsys.readouterr().out
    assert len(files(results)) == len(info) and all(
        VideoReader(str(results / f)).num_frames == 5 for f in files(results)
    )


# -- generate run --------------------------------------------------------------------------------------
@pytest.fixture
def sources(tmp_path: Path) -> Path:
    folder = tmp_path / "sources"
    folder.mkdir()
    video_module.write_video(make_pair(100, 21, 112, 192).source, folder / "clip_00.mp4", fps=16)
    return folder


def test_generate_stops_at_a_full_disk_in_a_stage(tmp_path, sources, monkeypatch, capsys) -> None:
    out = tmp_path / "out"
    argv = ["generate", "run", "--sources", str(sources), "--out", str(out), "--no-progress"]
    hit = encoder_fills_disk(monkeypatch, lambda target: "/edited.mp4.partial-" in target)
    assert main(argv) == 1
    lines = error_lines(capsys)
    assert len(hit) == 1
    sample = Path(hit[0]).parent
    assert lines == [f"error: {sample / 'edited.mp4'}: {FULL}"]
    assert not (sample / "edited.mp4").exists() and no_temporaries(out)
    ledger = out / "_generation" / "ledger"
    assert not (ledger / "final").exists()  # not recorded as a failed sample: nothing of it was wrong
    monkeypatch.undo()
    assert main(argv) == 0
    capsys.readouterr()
    assert (out / "stats.json").exists() and no_temporaries(out)


def test_generate_full_disk_while_publishing_leaves_no_truncated_file(
    tmp_path, sources, monkeypatch, capsys
) -> None:
    out = tmp_path / "out"
    argv = ["generate", "run", "--sources", str(sources), "--out", str(out), "--no-progress"]
    hit = fill_disk_at(monkeypatch, lambda tmp: "publish" in tmp.parts and ".mp4." in tmp.name)
    assert main(argv) == 1
    lines = error_lines(capsys)
    assert len(hit) == 1
    final = hit[0].with_name(hit[0].name[1:].rsplit(".", 2)[0])  # .NAME.PID-TID.tmp -> NAME
    assert lines == [f"error: {final}: {FULL}"]
    staging = out / "_generation" / "publish"
    assert not final.exists() and no_temporaries(out)
    for name in files(staging):  # whatever is in staging is complete
        if name.endswith(".mp4"):
            assert VideoReader(str(staging / name)).num_frames > 0
    assert not (out / "stats.json").exists()
    monkeypatch.undo()
    assert main(argv) == 0
    capsys.readouterr()
    assert not staging.exists() and (out / "stats.json").exists()


# -- pack and export -----------------------------------------------------------------------------------
@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    records = make_demo_records(1, ("location",), num_frames=5, height=32, width=32, intermediates=False)
    return Path(write_sparkle(records, tmp_path / "data", progress=False).removeprefix("file://"))


def test_pack_stops_at_a_full_disk(tmp_path, dataset, monkeypatch, capsys) -> None:
    shards = tmp_path / "shards"
    hit = fill_disk_at(monkeypatch, lambda tmp: tmp.name.startswith(".location_edited_video_part"), 1000)
    assert main(["pack", str(dataset), str(shards)]) == 1
    assert error_lines(capsys) == [f"error: {shards / 'location_edited_video_part00.tar'}: {FULL}"]
    assert (
        len(hit) == 1 and "location_edited_video_part00.tar" not in files(shards) and no_temporaries(shards)
    )
    monkeypatch.undo()
    assert main(["pack", str(dataset), str(shards)]) == 0
    assert "location_edited_video_part00.tar" in files(shards)


def test_export_stops_at_a_full_disk(tmp_path, dataset, monkeypatch, capsys) -> None:
    csv_path = tmp_path / "kiwi" / "train.csv"
    fill_disk_at(monkeypatch, lambda tmp: tmp.name.startswith(".train.csv."), room=10)
    assert main(["export", str(dataset), str(csv_path), "--format", "kiwi-csv"]) == 1
    assert error_lines(capsys) == [f"error: {csv_path}: {FULL}"]
    assert files(tmp_path / "kiwi") == []

    from fsspec.implementations.local import LocalFileOpener

    real_write = LocalFileOpener.write

    def parquet_fills_disk(self, data):
        if ".parquet" in self.path:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.path)
        return real_write(self, data)

    monkeypatch.setattr(LocalFileOpener, "write", parquet_fills_disk)
    hub = tmp_path / "hub"
    assert main(["export", str(dataset), str(hub), "--format", "hub"]) == 1
    part = hub / "data" / "location" / "train-00000.parquet"
    assert error_lines(capsys) == [f"error: {part}: {FULL}"]
    assert files(hub) == []  # neither the part nor its temporary
