"""Writes stay inside their output folder and appear whole or not at all: the helpers, then each writer
given a folder or file that a symlink leads out of (bench results, score records, result scans,
generation work files, the dataset writer, shards, Hub export)."""

from __future__ import annotations

import errno
import json
import os
import pickle
from pathlib import Path

import pytest
from bench_fixtures import bench_rows, result_path, write_bench, write_results

from sparkle_video import safe_write
from sparkle_video.bench.judge import RecordWriter
from sparkle_video.bench.results import scan_results
from sparkle_video.bench.runner import run_inference
from sparkle_video.cli import main
from sparkle_video.data.synthetic import make_demo_records
from sparkle_video.data.writer import pack_shards, write_sparkle
from sparkle_video.safe_write import SparkleWriteError


def tree(folder: Path) -> list[str]:
    """Every entry under ``folder`` (links not followed), relative."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "keep.txt").write_text("untouched")
    return folder


# -- the helpers ---------------------------------------------------------------------------------------
def test_inside_accepts_new_paths_and_links_that_stay_inside(tmp_path: Path) -> None:
    root = tmp_path / "out"
    (root / "real").mkdir(parents=True)
    (root / "alias").symlink_to(root / "real")
    assert safe_write.inside(root, root / "a" / "b" / "new.json") == root / "a" / "b" / "new.json"
    assert safe_write.inside(root, root / "alias" / "x.mp4") == root / "alias" / "x.mp4"
    assert safe_write.inside(root, root) == root


def test_inside_refuses_a_folder_or_file_linked_out(tmp_path: Path, outside: Path) -> None:
    root = tmp_path / "out"
    root.mkdir()
    (root / "theme").symlink_to(outside)
    (root / "file.jsonl").symlink_to(outside / "keep.txt")
    with pytest.raises(SparkleWriteError) as linked_dir:
        safe_write.inside(root, root / "theme" / "x.mp4")
    assert str(linked_dir.value) == (
        f"refusing to write {root}/theme/x.mp4: it leads outside {root} (to {outside}/x.mp4)"
    )
    assert linked_dir.value.errno == errno.EXDEV and linked_dir.value.filename == f"{root}/theme/x.mp4"
    with pytest.raises(SparkleWriteError, match=r"file\.jsonl: it leads outside .* \(to .*keep\.txt\)$"):
        safe_write.inside(root, root / "file.jsonl")
    with pytest.raises(SparkleWriteError, match="leads outside"):
        safe_write.inside(root, root / ".." / "sibling.txt")  # no link needed for ``..``
    with pytest.raises(SparkleWriteError, match="leads outside"):
        safe_write.write_bytes(root / "theme" / "x.mp4", b"data", root)
    assert tree(outside) == ["keep.txt"]


def test_write_is_whole_or_nothing(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "a.json"
    safe_write.write_json(path, {"v": 1})
    assert path.read_text() == '{"v": 1}\n'
    with pytest.raises(RuntimeError, match="encoder broke"), safe_write.atomic_open(path) as f:
        f.write(b'{"v": 2, "half')
        raise RuntimeError("encoder broke")
    assert path.read_text() == '{"v": 1}\n'  # the earlier file is kept
    assert tree(tmp_path / "sub") == ["a.json"]  # and the temporary one is gone


def test_a_final_link_is_replaced_not_written_through(tmp_path: Path, outside: Path) -> None:
    """Without a root to compare with, the rename still replaces the link itself."""
    link = tmp_path / "summary.json"
    link.symlink_to(outside / "keep.txt")
    safe_write.write_text(link, "new")
    assert not link.is_symlink() and link.read_text() == "new"
    assert (outside / "keep.txt").read_text() == "untouched"


def test_append_refuses_any_symlink_and_appends_otherwise(tmp_path: Path, outside: Path) -> None:
    real = tmp_path / "real.jsonl"
    with safe_write.open_append(real, tmp_path) as f:
        f.write(b"one\n")
    with safe_write.open_append(real, tmp_path) as f:
        f.write(b"two\n")
    assert real.read_bytes() == b"one\ntwo\n"
    for target in (outside / "keep.txt", real):  # out of the folder, or even inside it
        link = tmp_path / f"link-{target.name}"
        link.symlink_to(target)
        refused = pytest.raises(
            SparkleWriteError, match=rf"^refusing to write {link}: it is a symbolic link$"
        )
        with refused, safe_write.open_append(link) as f:
            f.write(b"x\n")
    assert (outside / "keep.txt").read_text() == "untouched" and real.read_bytes() == b"one\ntwo\n"


def test_error_lines_name_the_path_and_the_errno(tmp_path: Path) -> None:
    full = OSError(errno.ENOSPC, "whatever the library says", "/data/tmp.part")
    assert safe_write.os_error_line(full) == "/data/tmp.part: No space left on device (ENOSPC)"
    assert str(safe_write.write_error(full, "/data/a.mp4")) == "/data/a.mp4: No space left on device (ENOSPC)"
    ro = safe_write.write_error(OSError(errno.EROFS, "ro"), tmp_path / "x")
    assert str(ro) == f"{tmp_path}/x: Read-only file system (EROFS)"
    assert isinstance(ro, OSError) and ro.errno == errno.EROFS and ro.filename == str(tmp_path / "x")
    bare = safe_write.write_error(OSError("av: broken\npipe"), "/o.mp4")
    assert str(bare) == "/o.mp4: av: broken pipe (OSError)"  # one line, whatever the message
    assert safe_write.os_error_line(OSError(errno.EACCES, "x")) == "(no path): Permission denied (EACCES)"
    again = pickle.loads(pickle.dumps(ro))  # crosses worker processes intact
    assert (str(again), again.errno, again.filename) == (str(ro), ro.errno, ro.filename)
    with pytest.raises(SparkleWriteError) as raised, safe_write.os_errors("/final.tar"):
        raise OSError(errno.EDQUOT, "quota", "/final.tar.tmp")
    assert str(raised.value) == "/final.tar: Disk quota exceeded (EDQUOT)"


# -- the writers ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("bench")
    return root, write_bench(root, {"location": 1, "time": 1}, frames=5)


def test_bench_infer_refuses_a_theme_folder_linked_out(bench, tmp_path: Path, outside: Path, capsys) -> None:
    root, info = bench
    results = tmp_path / "results"
    results.mkdir()
    (results / "time").symlink_to(outside)
    with pytest.raises(SparkleWriteError, match=rf"^refusing to write {results}/time/.*: it leads outside"):
        run_inference(bench_rows(info), lambda v, p: v.get_frames(), results, progress=False)
    argv = ["bench", "infer", "--bench", str(root), "--model", "identity", "--out", str(results)]
    assert main(argv) == 1
    captured = capsys.readouterr()
    lines = [ln for ln in captured.err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and f"refusing to write {results}/time/" in lines[0], captured.err
    assert "Traceback" not in captured.err
    assert tree(outside) == ["keep.txt"]


def test_result_scans_do_not_read_through_a_link_out(bench, tmp_path: Path, outside: Path) -> None:
    _, info = bench
    elsewhere = tmp_path / "elsewhere"
    write_results(elsewhere, info, "lively")
    results = tmp_path / "results"
    write_results(results, info, "lively", ids=[i for i in info if "location" in i])
    (results / "time").symlink_to(elsewhere / "time")
    scan = scan_results(results, bench_rows(info))
    time_id = next(i for i in info if "time" in i)
    rel = str(result_path(results, info, time_id).relative_to(results))
    assert [e.id for e in scan.entries] == [i for i in info if "location" in i]
    assert scan.outside == [rel] and scan.counts()["outside"] == 1 and scan.problems()["outside"] == [rel]


def test_score_records_refuse_a_linked_file(tmp_path: Path, outside: Path) -> None:
    records = tmp_path / "results" / "time_gpt_sparkle_score.jsonl"
    records.parent.mkdir()
    records.symlink_to(outside / "keep.txt")
    with pytest.raises(
        SparkleWriteError, match=r"^refusing to write .*/time_gpt_sparkle_score\.jsonl: it leads"
    ):
        RecordWriter().append(records, {"id": "a", "scores": [1, 2, 3]})
    assert (outside / "keep.txt").read_text() == "untouched"
    inner = records.with_name("other.jsonl")
    inner.write_text("")
    records.unlink()
    records.symlink_to(inner)  # a link inside the folder: still not appended through
    with pytest.raises(SparkleWriteError, match=r"score\.jsonl: it is a symbolic link$"):
        RecordWriter().append(records, {"id": "a", "scores": [1, 2, 3]})
    assert inner.read_text() == ""


def test_generation_work_files_stay_inside_out(tmp_path: Path, outside: Path) -> None:
    from sparkle_video.generation.steps import Workspace

    ws = Workspace(tmp_path / "out")
    ws.write_json("s0", "camera.json", {"ok": True})
    assert json.loads(ws.file("s0", "camera.json").read_text()) == {"ok": True}
    (ws.work / "samples" / "s1").parent.mkdir(parents=True, exist_ok=True)
    (ws.work / "samples" / "s1").symlink_to(outside)
    import numpy as np

    for write in (
        lambda: ws.write_json("s1", "camera.json", {}),
        lambda: ws.write_png("s1", "edited_frame0.png", np.zeros((4, 4, 3), np.uint8)),
        lambda: ws.write_video("s1", "edited.mp4", np.zeros((2, 4, 4, 3), np.uint8), 16),
        lambda: ws.write_mask("s1", "mask.npz", np.zeros((2, 4, 4), bool)),
    ):
        with pytest.raises(SparkleWriteError, match=r"/s1/.*: it leads outside"):
            write()
    assert tree(outside) == ["keep.txt"]


def test_dataset_writer_and_shards_stay_inside(tmp_path: Path, outside: Path) -> None:
    records = make_demo_records(1, ("location",), num_frames=5, height=32, width=32, intermediates=False)
    out = tmp_path / "data"
    out.mkdir()
    (out / "location").symlink_to(outside)
    with pytest.raises(SparkleWriteError, match=rf"^refusing to write {out}/location/"):
        write_sparkle(records, out, overwrite=True, progress=False)
    assert tree(outside) == ["keep.txt"]
    good = tmp_path / "good"
    write_sparkle(records, good, progress=False)
    assert not [p for p in tree(good) if p.endswith(".tmp")]
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "location_source_video_part00.tar").symlink_to(outside / "keep.txt")
    with pytest.raises(SparkleWriteError, match=r"location_source_video_part00\.tar: it leads outside"):
        pack_shards(good, shards, progress=False)
    assert (outside / "keep.txt").read_text() == "untouched"


def test_hub_export_parts_stay_inside(tmp_path: Path, outside: Path) -> None:
    from sparkle_video.data.export import export_hub_folder

    records = make_demo_records(1, ("location",), num_frames=5, height=32, width=32, intermediates=False)
    src = tmp_path / "src"
    write_sparkle(records, src, progress=False)
    out = tmp_path / "hub"
    (out / "data").mkdir(parents=True)
    (out / "data" / "location").symlink_to(outside)
    with pytest.raises(SparkleWriteError, match=r"data/location/train-00000\.parquet: it leads outside"):
        export_hub_folder(src, out, progress=False)
    assert tree(outside) == ["keep.txt"]
    (out / "data" / "location").unlink()
    export_hub_folder(src, out, progress=False)
    assert tree(out / "data") == ["location", "location/train-00000.parquet"]  # no temporary left
    assert os.path.getsize(out / "data" / "location" / "train-00000.parquet") > 0
