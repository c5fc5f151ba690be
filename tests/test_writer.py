"""Writing the official layouts and packing deterministic tar shards; everything reads back."""

from __future__ import annotations

import csv
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sparkle_video import SparkleDataError, VideoReader, load_sparkle, load_sparkle_bench
from sparkle_video.data.artifacts import SparkleArtifacts
from sparkle_video.data.synthetic import make_demo_records, make_pair
from sparkle_video.data.video import write_video
from sparkle_video.data.writer import (
    SampleRecord,
    pack_shards,
    plan_parts,
    write_sparkle,
    write_sparkle_bench,
)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[SampleRecord]]:
    records = make_demo_records(
        num_per_theme=2, themes=("location", "openve3m"), num_frames=9, height=64, width=96
    )
    records[0].scores = {
        "edited_video_score": {
            "prompt": "p",
            "frame_indices": [1, 2],
            "editscore": [{"O_score": 9}, {"O_score": 8}],
        }
    }
    records[1].scores = {
        "edited_video_score": {
            "prompt": "p",
            "frame_indices": [1, 2],
            "editscore": [{"O_score": 9}, {"O_score": 7.9}],
        }
    }
    root = tmp_path_factory.mktemp("written")
    write_sparkle(records, root, overwrite=True, progress=False)
    return root, records


def test_layout_files_and_contents(written) -> None:
    root, records = written
    with open(root / "prompts/location_train.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["prompt", "src_video", "tgt_video", "task"]
    assert [r["task"] for r in rows] == ["Sparkle_location_000000", "Sparkle_location_000001"]
    assert rows[0]["src_video"] == "location/source_video/Sparkle_location_000000.mp4"
    metas = [
        json.loads(line) for line in (root / "prompts/openve3m_train_metadata.jsonl").read_text().splitlines()
    ]
    assert metas[0]["metadata"]["edit_type"] == "openve3m_background_change"
    assert "chosen_keyword" not in metas[0]["metadata"]
    loc = json.loads((root / "prompts/location_train_metadata.jsonl").read_text().splitlines()[1])
    assert loc["metadata"]["chosen_keyword"] == records[1].chosen_keyword
    assert (root / "intermediate_data/location/source_video_mask/Sparkle_location_000000.npz").exists()


def test_round_trip_through_loader(written) -> None:
    root, records = written
    ds = load_sparkle(root)
    assert ds["id"][:] == [r.id for r in records]
    for row, rec in zip(ds, records, strict=True):
        assert row["prompt"] == rec.prompt
        got = row["edited_video"].get_frames(None)
        assert got.shape == rec.edited.shape
        assert np.abs(got.astype(int) - rec.edited.astype(int)).mean() < 3  # H.264 at crf 18
    arts = SparkleArtifacts(root)
    np.testing.assert_array_equal(arts.get(records[0].id, "source_video_mask"), records[0].mask)
    assert arts.get(records[0].id, "foreground_grounding_r1")["objects"][0]["label"] == "person"
    bg = arts.get(records[0].id, "edited_background_video")
    assert bg.num_frames == 9
    assert np.abs(bg.get_frames(None).astype(int) - records[0].background.astype(int)).mean() < 3
    canny = arts.get(records[0].id, "edited_video_canny").get_frames([0])[0]
    assert canny.shape == (64, 96, 3)
    assert ((canny[..., 0] > 127) == (records[0].canny[0, ..., 0] > 127)).mean() > 0.97  # edges survive H.264
    assert set(arts.available(records[0].id)) >= {
        "source_frame0",
        "edited_frame0",
        "edited_frame0_foreground_removed",
        "edited_background_video",
        "source_video_mask",
        "edited_video_canny",
        "foreground_grounding_r1",
        "foreground_grounding_r2",
        "edited_video_score",
    }
    np.testing.assert_array_equal(
        np.asarray(arts.get(records[1].id, "edited_frame0")), records[1].edited[0]
    )  # PNG
    assert arts.get(records[1].id, "foreground_grounding_r2") == records[1].grounding_r2
    assert len(load_sparkle(root, min_scores={"edited_video_score": 8.5}, themes="location")) == 1


def test_pack_shards_deterministic_and_sorted(written, tmp_path: Path) -> None:
    root, records = written
    a = pack_shards(root, tmp_path / "a", max_shard_bytes=1, include_intermediates=True)
    b = pack_shards(root, tmp_path / "b", max_shard_bytes=1, include_intermediates=True)
    assert a == b
    tars = [p for p in a if p.endswith(".tar")]
    assert "location_source_video_part00.tar" in tars and "location_source_video_part01.tar" in tars
    assert any(p.startswith("intermediate_data/location_source_video_mask_part") for p in tars)
    for rel in tars:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    big = pack_shards(root, tmp_path / "c")
    with tarfile.open(tmp_path / "c" / "location_edited_video_part00.tar") as tf:
        names = tf.getnames()
        assert names == sorted(names) == [f"location/edited_video/{r.id}.mp4" for r in records[:2]]
        assert {m.mtime for m in tf.getmembers()} == {1_700_000_000}
    assert "prompts/location_train.csv" in big
    streamed = {r["id"]: r for r in load_sparkle(tmp_path / "c", streaming=True)}
    assert sorted(streamed) == sorted(r.id for r in records)
    rec = records[1]
    np.testing.assert_array_equal(
        streamed[rec.id]["source_video"].get_frames([2]),
        VideoReader(root / f"location/source_video/{rec.id}.mp4").get_frames([2]),
    )


def test_plan_parts_and_bad_pack_requests(written, tmp_path: Path) -> None:
    assert plan_parts([100, 100, 100], 2100) == [0, 0, 1]  # each member: a 512 header + data padded to 512
    assert plan_parts([100, 100, 100], 1) == [0, 1, 2]  # one member per part when nothing fits
    assert plan_parts([5000, 10], 1024) == [0, 1] and plan_parts([], 10) == []
    root, _ = written
    with pytest.raises(SparkleDataError, match="season"):
        pack_shards(root, tmp_path / "x", themes=["season"])
    with pytest.raises(SparkleDataError, match="any theme"):
        pack_shards(tmp_path, tmp_path / "y")
    assert not list((tmp_path / "x").glob("*.partial"))


def test_bench_layout(tmp_path: Path) -> None:
    pair = make_pair(3, num_frames=9, height=64, width=96)
    recs = [
        SampleRecord(
            id="Sparkle_time_010001",
            theme="time",
            prompt="p1",
            source=pair.source,
            chosen_keyword="dusk: harbour at sunset",
            ref_image=pair.background[0],
        ),
        SampleRecord(
            id="Sparkle_time_010002",
            theme="time",
            prompt="p2",
            source=pair.source,
            chosen_keyword="night: neon street",
        ),
    ]
    write_sparkle_bench(recs, tmp_path, progress=False)
    assert (tmp_path / "time_bench.csv").read_text().splitlines()[0] == "edited_type,prompt,original_video"
    ds = load_sparkle_bench(tmp_path)
    assert ds["scene"][:] == ["harbour at sunset", "neon street"]
    assert ds[0]["ref_image"].size == (96, 64) and ds[1]["ref_image"] is None


def test_bad_records(tmp_path: Path) -> None:
    pair = make_pair(0, num_frames=5, height=32, width=48)
    with pytest.raises(SparkleDataError, match="not a Sparkle id"):
        SampleRecord(id="../evil", theme="location", prompt="p", source=pair.source, edited=pair.edited)
    with pytest.raises(SparkleDataError, match="not a Sparkle id"):
        SampleRecord(id="/abs/Sparkle_location_000001", theme="location", prompt="p", source=pair.source)
    rec = SampleRecord(id="Sparkle_location_000001", theme="location", prompt="p", source=pair.source)
    with pytest.raises(SparkleDataError, match="need an edited video"):
        write_sparkle([rec], tmp_path / "x", progress=False)
    dup = SampleRecord(
        id="Sparkle_location_000001", theme="location", prompt="p", source=pair.source, edited=pair.edited
    )
    with pytest.raises(SparkleDataError, match="duplicate"):
        write_sparkle([dup, dup], tmp_path / "y", progress=False)
    write_sparkle([dup], tmp_path / "z", progress=False)
    with pytest.raises(FileExistsError):
        write_sparkle([dup], tmp_path / "z", progress=False)
    with pytest.raises(SparkleDataError, match="does not belong to theme"):
        SampleRecord(id="Sparkle_location_000001", theme="../time", prompt="p", source=pair.source)
    with pytest.raises(SparkleDataError, match="subtheme: scene"):
        SampleRecord(
            id="Sparkle_time_000001", theme="time", prompt="p", source=pair.source, chosen_keyword="dusk"
        )
    no_keyword = SampleRecord(id="Sparkle_time_000001", theme="time", prompt="p", source=pair.source)
    with pytest.raises(SparkleDataError, match="chosen_keyword"):
        write_sparkle_bench([no_keyword], tmp_path / "b", progress=False)
    openve = SampleRecord(
        id="Sparkle_openve3m_000001",
        theme="openve3m",
        prompt="p",
        source=pair.source,
        chosen_keyword="misc: field",
    )
    assert openve.edit_type == "openve3m_background_change" and "chosen_keyword" not in openve.metadata()
    with pytest.raises(SparkleDataError, match="themes"):
        write_sparkle_bench([openve], tmp_path / "c", progress=False)


def test_write_to_fsspec_url() -> None:
    pair = make_pair(1, num_frames=5, height=32, width=48)
    rec = SampleRecord(
        id="Sparkle_season_000004",
        theme="season",
        prompt="p",
        source=pair.source,
        edited=pair.edited,
        chosen_keyword="winter: snow",
    )
    write_sparkle([rec], "memory://written-season", progress=False)
    ds = load_sparkle("memory://written-season")
    assert ds[0]["edited_video"].get_frames([0]).shape == (1, 32, 48, 3)


def test_encoded_inputs_are_copied_byte_for_byte(tmp_path: Path) -> None:
    pair = make_pair(2, num_frames=5, height=32, width=48)
    src_file = tmp_path / "in.mp4"
    write_video(pair.source, src_file, fps=16)
    edited_bytes = io.BytesIO()
    write_video(pair.edited, edited_bytes, fps=16)
    png = tmp_path / "ref.png"
    Image.fromarray(pair.background[0]).save(png)
    rec = SampleRecord(
        id="Sparkle_style_000002",
        theme="style",
        prompt="p",
        source=src_file,
        edited=edited_bytes.getvalue(),
        chosen_keyword="art: watercolour village",
        source_frame0=Image.fromarray(pair.source[0]),
        ref_image=png,
    )
    write_sparkle([rec], tmp_path / "train", progress=False)
    assert (
        tmp_path / "train/style/source_video/Sparkle_style_000002.mp4"
    ).read_bytes() == src_file.read_bytes()
    assert (
        tmp_path / "train/style/edited_video/Sparkle_style_000002.mp4"
    ).read_bytes() == edited_bytes.getvalue()
    frame0 = Image.open(tmp_path / "train/intermediate_data/style/source_frame0/Sparkle_style_000002.png")
    np.testing.assert_array_equal(np.asarray(frame0), pair.source[0])
    write_sparkle_bench([rec], tmp_path / "bench", progress=False)
    assert (tmp_path / "bench/ref_images/style/Sparkle_style_000002.png").read_bytes() == png.read_bytes()


# -- packing validates what it writes --------------------------------------------------------------
@pytest.fixture
def damaged(written, tmp_path: Path) -> Path:
    """A copy of the written folder with a truncated source video and a non-video edited one."""
    import shutil

    root, _ = written
    copy = tmp_path / "damaged"
    shutil.copytree(root, copy)
    src = copy / "location/source_video/Sparkle_location_000001.mp4"
    src.write_bytes(src.read_bytes()[:300])
    (copy / "openve3m/edited_video/Sparkle_openve3m_000000.mp4").write_bytes(b"<html>not a video</html>" * 20)
    return copy


def test_pack_refuses_damaged_videos_by_default(damaged: Path, tmp_path: Path) -> None:
    out = tmp_path / "shards"
    with pytest.raises(SparkleDataError, match="Sparkle_location_000001") as e:
        pack_shards(damaged, out, progress=False)
    assert "Sparkle_location_000001.mp4" in str(e.value)
    assert not list(out.glob("*.tar"))  # checked before anything is written


def test_pack_skip_leaves_out_and_names_bad_samples(damaged: Path, tmp_path: Path) -> None:
    from sparkle_video import SkipReport

    out = tmp_path / "shards"
    report = SkipReport()
    pack_shards(damaged, out, include_intermediates=True, errors="skip", skip_report=report, progress=False)
    assert sorted(report.ids) == ["Sparkle_location_000001", "Sparkle_openve3m_000000"]
    with tarfile.open(out / "location_source_video_part00.tar") as tf:
        assert tf.getnames() == ["location/source_video/Sparkle_location_000000.mp4"]
    # the copied prompt files list exactly what the shards hold, so the shards load with errors="raise"
    ds = load_sparkle(out)
    assert sorted(ds["id"]) == ["Sparkle_location_000000", "Sparkle_openve3m_000001"]
    scores = (out / "intermediate_data/location/edited_video_score.jsonl").read_text()
    assert "Sparkle_location_000001" not in scores and "Sparkle_location_000000" in scores


def test_pack_missing_edited_video_is_an_error(written, tmp_path: Path) -> None:
    import shutil

    root, _ = written
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    (copy / "openve3m/edited_video/Sparkle_openve3m_000001.mp4").unlink()
    with pytest.raises(SparkleDataError, match="missing") as e:
        pack_shards(copy, tmp_path / "out", themes=["openve3m"], progress=False)
    assert "Sparkle_openve3m_000001" in str(e.value)


def test_pack_checks_jsonl_rows(written, tmp_path: Path) -> None:
    import shutil

    root, _ = written
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    meta = copy / "prompts/location_train_metadata.jsonl"
    meta.write_text(meta.read_text() + '{"id": "Sparkle_location_000000", "broken\n')
    with pytest.raises(SparkleDataError, match="broken JSONL line 3"):
        pack_shards(copy, tmp_path / "out", themes=["location"], progress=False)


def test_pack_removes_parts_of_an_earlier_larger_run(written, tmp_path: Path) -> None:
    root, _ = written
    out = tmp_path / "shards"
    many = pack_shards(root, out, max_shard_bytes=1, include_intermediates=True, progress=False)
    assert "location_source_video_part01.tar" in many
    few = pack_shards(root, out, include_intermediates=True, progress=False)
    on_disk = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.tar"))
    assert on_disk == sorted(p for p in few if p.endswith(".tar"))
    assert not (out / "location_source_video_part01.tar").exists()
    assert len(load_sparkle(out)) == 4


def test_pack_keeps_intermediates_it_does_not_repack(written, tmp_path: Path, caplog) -> None:
    root, _ = written
    out = tmp_path / "shards"
    pack_shards(root, out, max_shard_bytes=1, include_intermediates=True, progress=False)
    before = sorted(p.name for p in (out / "intermediate_data").glob("*.tar"))
    assert before
    with caplog.at_level("WARNING", logger="sparkle_video"):
        pack_shards(root, out, progress=False)  # no --intermediates: the earlier run's are not this run's
    assert sorted(p.name for p in (out / "intermediate_data").glob("*.tar")) == before
    # the smaller run's leftover video parts are removed, each named
    assert "removed location_source_video_part01.tar" in caplog.text


def test_pack_webdataset_layout_plain_datasets_and_load_sparkle(written, tmp_path: Path) -> None:
    import datasets

    root, records = written
    out = tmp_path / "wds"
    files = pack_shards(root, out, layout="webdataset", max_shard_bytes=1, progress=False)
    loc = [r for r in records if r.theme == "location"]
    assert [f for f in files if f.startswith("location-")] == ["location-00000.tar", "location-00001.tar"]
    with tarfile.open(out / "location-00000.tar") as tf:  # a pair never straddles two shards
        assert tf.getnames() == [f"{loc[0].id}{s}" for s in (".json", ".source.mp4", ".edited.mp4")]
        record = json.loads(tf.extractfile(f"{loc[0].id}.json").read())
        assert (
            record["prompt"] == loc[0].prompt
            and record["metadata"]["chosen_keyword"] == loc[0].chosen_keyword
        )
        assert json.loads(record["scores"])["edited_video_score"]["editscore"][1]["O_score"] == 8
        src_bytes = tf.extractfile(f"{loc[0].id}.source.mp4").read()
    assert src_bytes == (root / f"location/source_video/{loc[0].id}.mp4").read_bytes()
    assert not list(out.glob("prompts/*")) and not list(out.glob("*.partial"))

    # plain datasets, no project code: one row per pair, both videos as the Video feature
    ds = datasets.load_dataset("webdataset", data_files={"train": str(out / "*.tar")}, split="train")
    assert len(ds) == len(records)
    assert isinstance(ds.features["source.mp4"], datasets.Video)
    assert isinstance(ds.features["edited.mp4"], datasets.Video)
    raw = ds.cast_column("source.mp4", datasets.Video(decode=False)).cast_column(
        "edited.mp4", datasets.Video(decode=False)
    )
    by_key = {r["__key__"]: r for r in raw}
    assert by_key[loc[0].id]["source.mp4"]["bytes"] == src_bytes
    assert by_key[loc[0].id]["json"]["prompt"] == loc[0].prompt

    # load_sparkle reads the same shards, indexed and streaming, with the same bytes
    rows = {r["id"]: r for r in load_sparkle(out)}
    streamed = {r["id"]: r for r in load_sparkle(out, streaming=True)}
    assert sorted(rows) == sorted(streamed) == sorted(r.id for r in records)
    row = rows[loc[1].id]
    assert row["prompt"] == loc[1].prompt and row["theme"] == "location"
    np.testing.assert_array_equal(
        row["edited_video"].get_frames([1]),
        VideoReader(root / f"location/edited_video/{loc[1].id}.mp4").get_frames([1]),
    )
    np.testing.assert_array_equal(
        row["source_video"].get_frames([2]),
        VideoReader(root / f"location/source_video/{loc[1].id}.mp4").get_frames([2]),
    )
    np.testing.assert_array_equal(
        streamed[loc[1].id]["source_video"].get_frames([2]), row["source_video"].get_frames([2])
    )
    # a smaller re-pack removes the earlier run's extra paired parts
    again = pack_shards(root, out, layout="webdataset", progress=False)
    assert sorted(p.name for p in out.glob("location-*.tar")) == [
        f for f in again if f.startswith("location-")
    ]
    with pytest.raises(ValueError, match="webdataset shards hold pairs only"):
        pack_shards(root, out, layout="webdataset", include_intermediates=True)
    with pytest.raises(ValueError, match="layout must be one of"):
        pack_shards(root, out, layout="tfrecord")


def test_webdataset_shards_keep_awkward_prompts(tmp_path: Path) -> None:
    """A lone carriage return or a line separator in a prompt survives the paired shards' round trip."""
    pair = make_pair(5, num_frames=5, height=32, width=48)
    prompts = ["carriage\rreturn", "line\u2028separator\x85next"]
    recs = [
        SampleRecord(
            id=f"Sparkle_time_00000{i}", theme="time", prompt=p, source=pair.source, edited=pair.edited
        )
        for i, p in enumerate(prompts)
    ]
    write_sparkle(recs, tmp_path / "src", progress=False)
    pack_shards(tmp_path / "src", tmp_path / "wds", layout="webdataset", progress=False)
    rows = {r["id"]: r["prompt"] for r in load_sparkle(tmp_path / "wds", progress=False)}
    assert rows == {r.id: r.prompt for r in recs}


def test_webdataset_shard_with_bad_json_members_names_them(written, tmp_path: Path) -> None:
    """A paired shard whose ``{id}.json`` is not JSON, names another id, or is huge: each sample is a named
    skip (or the error, under raise); the other pairs load."""
    from sparkle_video import SkipReport
    from sparkle_video.data.paired_shards import MAX_JSON_MEMBER_BYTES

    root, records = written
    out = tmp_path / "wds"
    pack_shards(root, out, layout="webdataset", themes=["location"], progress=False)
    loc = sorted(r.id for r in records if r.theme == "location")
    tar = out / "location-00000.tar"
    with tarfile.open(tar) as tf:
        members = [(m, tf.extractfile(m).read()) for m in tf.getmembers()]
    bad = {loc[0]: b"{not json"}
    with tarfile.open(tar, "w", format=tarfile.USTAR_FORMAT) as tf:
        for info, data in members:
            sid = info.name.split(".")[0]
            if info.name.endswith(".json") and sid in bad:
                data = bad[sid]
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        big = b" " * (MAX_JSON_MEMBER_BYTES + 1)
        other = json.dumps({"id": "Sparkle_location_999999", "prompt": "p"}).encode()
        for name, data in (("Sparkle_location_000077.json", big), ("Sparkle_location_000078.json", other)):
            extra = tarfile.TarInfo(name)
            extra.size = len(data)
            tf.addfile(extra, io.BytesIO(data))
    with pytest.raises(SparkleDataError, match=loc[0]):
        load_sparkle(out, progress=False)
    report = SkipReport()
    rows = load_sparkle(out, errors="skip", skip_report=report, progress=False)
    assert [r["id"] for r in rows] == [loc[1]]
    assert sorted(report.ids) == sorted([loc[0], "Sparkle_location_000077", "Sparkle_location_000078"])
    assert "limit" in dict(report.skipped)["Sparkle_location_000077"]
    assert "not the JSON record" in dict(report.skipped)["Sparkle_location_000078"]
