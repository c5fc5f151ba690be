"""Kiwi-Edit CSVs and Hub-ready folders that plain ``datasets.load_dataset`` loads with playable videos."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest
from datasets.info import DatasetInfosDict
from huggingface_hub import DatasetCard

from sparkle_video import SkipReport, SparkleDataError, VideoReader
from sparkle_video.data.export import HUB_FEATURES, export_hub_folder, export_kiwi_csv
from sparkle_video.data.synthetic import make_demo_records
from sparkle_video.data.writer import pack_shards, write_sparkle


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("export-src")
    recs = make_demo_records(
        num_per_theme=2, themes=("location", "time"), num_frames=9, height=64, width=96, intermediates=False
    )
    write_sparkle(recs, root, overwrite=True, progress=False)
    return root


def test_kiwi_csv(dataset_root: Path, tmp_path: Path) -> None:
    n = export_kiwi_csv(dataset_root, tmp_path / "train.csv")
    rows = list(csv.DictReader((tmp_path / "train.csv").read_text().splitlines()))
    assert n == 4 and list(rows[0]) == ["src_video", "tgt_video", "prompt"]
    assert rows[0]["src_video"] == "location/source_video/Sparkle_location_000000.mp4"
    export_kiwi_csv(dataset_root, tmp_path / "rel.csv", base_path=dataset_root.parent, themes=["time"])
    rows = list(csv.DictReader((tmp_path / "rel.csv").read_text().splitlines()))
    assert len(rows) == 2
    assert rows[1]["tgt_video"] == f"{dataset_root.name}/time/edited_video/Sparkle_time_000001.mp4"
    assert (dataset_root.parent / rows[1]["tgt_video"]).exists()


def test_hub_folder_loads_with_plain_load_dataset(dataset_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "hub"
    export_hub_folder(dataset_root, out)
    card = DatasetCard.load(out / "README.md")
    assert [c["config_name"] for c in card.data.configs] == ["location", "time", "all"]
    ds = datasets.load_dataset(str(out), "location", split="train", cache_dir=str(tmp_path / "hf-cache"))
    # the videos are declared as datasets' Video feature (decoded by torchcodec where it is installed)
    assert isinstance(ds.features["source_video"], datasets.Video)
    assert isinstance(ds.features["edited_video"], datasets.Video)
    assert ds["id"] == ["Sparkle_location_000000", "Sparkle_location_000001"]
    for key in ("source_video", "edited_video"):  # no torchcodec here: the bytes, undecoded
        ds = ds.cast_column(key, datasets.Video(decode=False))
    assert ds[0]["subtheme"] == "urban" and ds[0]["theme"] == "location"
    row = ds[1]
    original = VideoReader(dataset_root / "location/edited_video/Sparkle_location_000001.mp4")
    assert row["edited_video"]["path"] == "location/edited_video/Sparkle_location_000001.mp4"
    played = VideoReader(row["edited_video"]["bytes"])
    assert isinstance(row["edited_video"]["bytes"], bytes)
    np.testing.assert_array_equal(played.get_frames(None), original.get_frames(None))
    everything = datasets.load_dataset(str(out), "all", split="train", cache_dir=str(tmp_path / "hf-cache"))
    assert sorted(everything["theme"]) == ["location", "location", "time", "time"]
    assert everything.features == HUB_FEATURES  # the schema the card declares
    infos = DatasetInfosDict.from_dataset_card_data(card.data)
    assert infos["location"].features == HUB_FEATURES and infos["all"].splits["train"].num_examples == 4
    assert infos["time"].splits["train"].num_bytes > 0
    assert card.data.license == "cc-by-4.0" and card.data.size_categories == ["n<1K"]


def test_hub_folder_from_tar_shards_parts_and_skips(dataset_root: Path, tmp_path: Path) -> None:
    pack_shards(dataset_root, tmp_path / "shards")
    out = tmp_path / "hub"
    export_hub_folder(
        tmp_path / "shards", out, themes=["time"], rows_per_group=1, max_file_bytes=1, progress=False
    )
    assert sorted(p.name for p in (out / "data/time").iterdir()) == [
        "train-00000.parquet",
        "train-00001.parquet",
    ]
    assert pq.ParquetFile(out / "data/time/train-00000.parquet").metadata.num_row_groups == 1
    ds = datasets.load_dataset(str(out), "time", split="train", cache_dir=str(tmp_path / "hf-cache"))
    original = dataset_root / "time/source_video/Sparkle_time_000000.mp4"
    assert ds["id"] == ["Sparkle_time_000000", "Sparkle_time_000001"]
    raw = ds.cast_column("source_video", datasets.Video(decode=False))
    raw = raw.cast_column("edited_video", datasets.Video(decode=False))
    assert raw[0]["source_video"]["bytes"] == original.read_bytes()  # the shard member, byte for byte
    assert raw[0]["edit_type"] == "time"

    broken = tmp_path / "broken"
    shutil.copytree(dataset_root, broken)
    (broken / "time/edited_video/Sparkle_time_000001.mp4").write_bytes(b"")
    with pytest.raises(SparkleDataError, match="Sparkle_time_000001"):
        export_hub_folder(broken, tmp_path / "hub-raise", themes=["time"], progress=False)
    report = SkipReport()
    export_hub_folder(broken, tmp_path / "hub-skip", errors="skip", skip_report=report, progress=False)
    assert report.ids == ["Sparkle_time_000001"]
    kept = datasets.load_dataset(
        str(tmp_path / "hub-skip"), "all", split="train", cache_dir=str(tmp_path / "hf-cache")
    )
    assert len(kept) == 3 and "Sparkle_time_000001" not in kept["id"]


def test_kiwi_csv_missing_video(dataset_root: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(dataset_root, broken)
    (broken / "location/source_video/Sparkle_location_000001.mp4").unlink()
    with pytest.raises(SparkleDataError, match="Sparkle_location_000001"):
        export_kiwi_csv(broken, tmp_path / "a.csv")
    report = SkipReport()
    assert export_kiwi_csv(broken, tmp_path / "b.csv", errors="skip", skip_report=report) == 3
    assert report.ids == ["Sparkle_location_000001"]
    assert "Sparkle_location_000001" not in (tmp_path / "b.csv").read_text()


@pytest.mark.parametrize("damage", ["truncated", "not-a-video"])
def test_exports_check_every_video_header(dataset_root: Path, tmp_path: Path, damage: str) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(dataset_root, broken)
    bad = broken / "time/source_video/Sparkle_time_000000.mp4"
    bad.write_bytes(bad.read_bytes()[:200] if damage == "truncated" else b"GIF89a not a video at all" * 30)
    with pytest.raises(SparkleDataError, match="Sparkle_time_000000"):
        export_hub_folder(broken, tmp_path / "hub", progress=False)
    assert not (tmp_path / "hub" / "README.md").exists()
    with pytest.raises(SparkleDataError, match="Sparkle_time_000000"):
        export_kiwi_csv(broken, tmp_path / "k.csv")
    hub_report, kiwi_report = SkipReport(), SkipReport()
    export_hub_folder(broken, tmp_path / "hub-skip", errors="skip", skip_report=hub_report, progress=False)
    assert hub_report.ids == ["Sparkle_time_000000"]
    assert export_kiwi_csv(broken, tmp_path / "k2.csv", errors="skip", skip_report=kiwi_report) == 3
    assert kiwi_report.ids == ["Sparkle_time_000000"]


def test_export_missing_edited_video_is_an_error(dataset_root: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(dataset_root, broken)
    (broken / "location/edited_video/Sparkle_location_000000.mp4").unlink()
    for export in (
        lambda: export_hub_folder(broken, tmp_path / "hub", progress=False),
        lambda: export_kiwi_csv(broken, tmp_path / "k.csv"),
    ):
        with pytest.raises(SparkleDataError, match="missing") as e:
            export()
        assert "Sparkle_location_000000" in str(e.value)
