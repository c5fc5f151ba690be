"""load_sparkle / load_sparkle_bench over every source kind, streaming, filters and splitting."""

from __future__ import annotations

import shutil
from pathlib import Path

import datasets
import fsspec
import numpy as np
import pytest
import torch
from conftest import SAMPLES, clip, write_bench

import sparkle_video
from sparkle_video import VideoReader, load_sparkle, load_sparkle_bench
from sparkle_video.data import SparkleCollator, hub_patterns, resolve_source
from sparkle_video.data.sources import hub_stream_url
from sparkle_video.errors import SparkleHubError


def rows_by_id(ds) -> dict[str, dict]:
    return {row["id"]: row for row in ds}


def check_rows(rows: dict[str, dict], info: dict[str, dict]) -> None:
    assert set(rows) == set(info)
    for sid, row in rows.items():
        meta = info[sid]
        assert row["theme"] == meta["theme"] and row["prompt"] == meta["prompt"]
        if meta["keyword"]:
            sub, scene = meta["keyword"].split(": ")
            assert (row["subtheme"], row["scene"]) == (sub, scene)
        else:
            assert row["subtheme"] is None and row["scene"] is None
        assert row["original_scene"] == f"scene of {sid}"
        src, edt = row["source_video"], row["edited_video"]
        assert isinstance(src, VideoReader) and isinstance(edt, VideoReader)
        # frames equal a direct decode of the original file (exactness across source kinds)
        expected = (
            VideoReader(Path(meta["root"]) / meta["source"]).get_frames([0, 8]) if "root" in meta else None
        )
        got = src.get_frames([0, 8])
        assert got.shape == (2, 48, 64, 3)
        if expected is not None:
            np.testing.assert_array_equal(got, expected)
        # and are close to the synthetic content that was written
        assert np.abs(got.astype(int) - clip(meta["seed"])[[0, 8]].astype(int)).mean() < 4
        assert np.abs(edt.get_frames([4]).astype(int) - clip(meta["seed"] + 1)[[4]].astype(int)).mean() < 4


def with_root(info: dict, root: Path) -> dict:
    return {k: dict(v, root=str(root)) for k, v in info.items()}


@pytest.mark.parametrize("streaming", [False, True])
def test_folder(train_folder, streaming: bool) -> None:
    root, info = train_folder
    ds = load_sparkle(root, streaming=streaming)
    assert isinstance(ds, datasets.IterableDataset if streaming else datasets.Dataset)
    check_rows(rows_by_id(ds), with_root(info, root))


@pytest.mark.parametrize("streaming", [False, True])
def test_tar_shards_local(train_folder, train_shards, streaming: bool) -> None:
    root, info = train_folder
    shards, _ = train_shards
    assert sorted(p.name for p in shards.glob("location_*.tar")) == [
        "location_edited_video_part00.tar",
        "location_edited_video_part01.tar",
        "location_source_video_part00.tar",
        "location_source_video_part01.tar",
    ]
    ds = load_sparkle(shards, streaming=streaming)
    rows = rows_by_id(ds)
    check_rows(rows, with_root(info, root))
    if not streaming:  # members are read in place: path is the shard, with a byte range
        src = rows["Sparkle_location_000002"]["source_video"]
        assert src.source.endswith("location_source_video_part01.tar")


def test_streaming_local_shards_feeds_every_dataloader_worker(train_folder, train_shards) -> None:
    import torch

    _, info = train_folder
    shards, _ = train_shards
    ds = load_sparkle(shards, streaming=True, themes="location")
    assert ds.num_shards > 1  # one theme's shards are cut into units, not streamed as one

    def worker_of(batch: list) -> list:
        worker = torch.utils.data.get_worker_info()
        return [(row["id"], worker.id) for row in batch]

    loader = torch.utils.data.DataLoader(ds, batch_size=1, num_workers=2, collate_fn=worker_of)
    seen = [pair for batch in loader for pair in batch]
    ids = sorted(i for i, _ in seen)
    assert ids == sorted(i for i in info if i.startswith("Sparkle_location_"))  # each once
    assert {w for _, w in seen} == {0, 1}  # both workers got work


@pytest.mark.parametrize("streaming", [False, True])
@pytest.mark.parametrize("protocol", ["memory", "file"])
def test_tar_shards_through_fsspec_url(train_folder, train_shards, streaming: bool, protocol: str) -> None:
    root, info = train_folder
    shards, _ = train_shards
    if protocol == "memory":
        fs = fsspec.filesystem("memory")
        for p in shards.rglob("*"):
            if p.is_file():
                fs.pipe(f"/sparkle-{streaming}/{p.relative_to(shards).as_posix()}", p.read_bytes())
        url = f"memory://sparkle-{streaming}"
    else:
        url = f"file://{shards}"
    ds = load_sparkle(url, themes=["location", "season"], streaming=streaming)
    info = {k: v for k, v in info.items() if v["theme"] in ("location", "season")}
    check_rows(rows_by_id(ds), with_root(info, root))


def test_unaligned_shards_still_join(train_folder, tmp_path: Path) -> None:
    """Source and edited shards cut at different places still pair every id when streaming."""
    import tarfile

    root, info = train_folder
    shutil.copytree(root / "prompts", tmp_path / "prompts")
    files = {k: sorted((root / "location" / f"{k}_video").glob("*.mp4")) for k in ("source", "edited")}
    cuts = {
        "source": [files["source"][:1], files["source"][1:]],
        "edited": [files["edited"][:2], files["edited"][2:]],
    }
    for kind, parts in cuts.items():
        for i, part in enumerate(parts):
            with tarfile.open(tmp_path / f"location_{kind}_video_part{i:02d}.tar", "w") as tf:
                for f in reversed(part):  # also out of order inside a shard
                    tf.add(f, arcname=f"location/{kind}_video/{f.name}")
    ds = load_sparkle(tmp_path, themes="location", streaming=True)
    rows = rows_by_id(ds)
    assert sorted(rows) == [f"Sparkle_location_00000{i}" for i in range(3)]
    for sid, row in rows.items():
        np.testing.assert_array_equal(
            row["edited_video"].get_frames([1]), VideoReader(root / info[sid]["edited"]).get_frames([1])
        )


def test_nothing_decoded_before_access(train_folder, monkeypatch: pytest.MonkeyPatch) -> None:
    import av

    root, _ = train_folder
    calls = []
    real_open = av.open
    monkeypatch.setattr(av, "open", lambda *a, **k: calls.append(a) or real_open(*a, **k))
    ds = load_sparkle(root)
    row = ds[0]
    assert calls == [] and row["source_video"].frames_decoded == 0 and row["source_video"].opens == 0
    assert len(list(load_sparkle(root, streaming=True))) == 6
    assert calls == []
    frames = ds[1]["source_video"].get_frames([0])
    assert frames.shape[0] == 1 and len(calls) == 1  # metadata, then the decode in the same open, on access


def test_filters(train_folder) -> None:
    root, _ = train_folder
    assert len(load_sparkle(root, themes="season")) == 2
    assert load_sparkle(root, subthemes=["urban"])["id"][:] == [
        "Sparkle_location_000000",
        "Sparkle_location_000002",
    ]
    assert load_sparkle(root, ids=["Sparkle_season_000001"])["theme"][:] == ["season"]
    assert len(load_sparkle(root, limit=2)) == 2
    assert [r["id"] for r in load_sparkle(root, limit=2, streaming=True)] == [
        "Sparkle_location_000000",
        "Sparkle_location_000001",
    ]
    openve = load_sparkle(root, themes="openve3m")[0]
    assert openve["subtheme"] is None and openve["scene"] is None
    with pytest.raises(ValueError, match="unknown themes"):
        load_sparkle(root, themes="weather")
    with pytest.raises(sparkle_video.SparkleDataError, match="not in this dataset"):
        load_sparkle(root, themes="time")


def test_score_thresholds(fresh_train) -> None:
    import json

    root, _ = fresh_train
    with pytest.raises(sparkle_video.SparkleDataError, match="score file is absent"):
        load_sparkle(root, min_scores={"edited_video_score": 8})
    d = root / "intermediate_data" / "location"
    d.mkdir(parents=True)
    recs = [
        {
            "id": "Sparkle_location_000000",
            "prompt": "p",
            "frame_indices": [1, 2],
            "editscore": [{"O_score": 9.0}, {"O_score": 8.0}],
        },
        {
            "id": "Sparkle_location_000001",
            "prompt": "p",
            "frame_indices": [1, 2],
            "editscore": [{"O_score": 7.0}, {"O_score": 8.0}],
        },
    ]
    (d / "edited_video_score.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    ds = load_sparkle(root, themes="location", min_scores={"edited_video_score": 8.0})
    assert ds["id"][:] == ["Sparkle_location_000000"]


def test_rank_and_worker_splitting_is_deterministic_and_complete(train_folder) -> None:
    root, _ = train_folder
    all_ids = [r["id"] for r in load_sparkle(root, streaming=True)]
    parts = [[r["id"] for r in load_sparkle(root, streaming=True, rank=k, world_size=2)] for k in range(2)]
    assert sorted(parts[0] + parts[1]) == sorted(all_ids) and not set(parts[0]) & set(parts[1])
    assert parts == [
        [r["id"] for r in load_sparkle(root, streaming=True, rank=k, world_size=2)] for k in range(2)
    ]
    mapped = [load_sparkle(root, rank=k, world_size=2)["id"][:] for k in range(2)]
    assert sorted(mapped[0] + mapped[1]) == sorted(all_ids) and not set(mapped[0]) & set(mapped[1])
    # DataLoader workers each read their own units; together they see everything once.
    ds = load_sparkle(root, streaming=True)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2, collate_fn=lambda r: r["id"])
    seen = list(loader)
    assert sorted(seen) == sorted(all_ids)


def test_collator_fixed_shapes(train_folder) -> None:
    root, _ = train_folder
    ds = load_sparkle(root, themes="location")
    collate = SparkleCollator(num_frames=12, size=(32, 48), value_range=(-1, 1))
    batch = collate([ds[0], ds[1]])
    assert batch["source_video"].shape == (2, 3, 12, 32, 48)
    assert batch["edited_video"].dtype == torch.float32
    assert batch["source_video_num_valid_frames"].tolist() == [9, 9]
    assert batch["id"] == ["Sparkle_location_000000", "Sparkle_location_000001"]
    assert float(batch["source_video"].min()) >= -1.0 and float(batch["source_video"].max()) <= 1.0
    # padded frames repeat the last real frame
    assert torch.equal(batch["source_video"][:, :, 8], batch["source_video"][:, :, 11])
    uni = SparkleCollator(num_frames=3, size=(32, 48), sampling="uniform")([ds[0]])
    assert uni["source_video"].shape == (1, 3, 3, 32, 48)


def test_bench_folder(tmp_path: Path) -> None:
    info = write_bench(tmp_path, {"location": 3, "time": 2})
    for streaming in (False, True):
        rows = rows_by_id(load_sparkle_bench(tmp_path, streaming=streaming))
        assert set(rows) == set(info)
        for sid, row in rows.items():
            sub, scene = info[sid]["keyword"].split(": ")
            assert (row["subtheme"], row["scene"], row["prompt"]) == (sub, scene, info[sid]["prompt"])
            assert "edited_video" not in row
            assert row["source_video"].get_frames([0]).shape == (1, 48, 64, 3)
            if info[sid]["ref"]:
                assert row["ref_image"].size == (64, 48)
            else:
                assert row["ref_image"] is None
    assert len(load_sparkle_bench(tmp_path, themes=["time"])) == 2


def test_hub_repo_ids_resolve_without_network(tmp_path: Path) -> None:
    """Offline (the test environment) with nothing cached: one Hub error naming the repo, in both modes.

    Loads through a real (loopback) Hub are in ``test_hub.py``.
    """
    assert hub_stream_url("stdKonjac/Sparkle") == "hf://datasets/stdKonjac/Sparkle"
    files = ["prompts/location_train.csv", "location_source_video_part00.tar", "season/source_video/a.mp4"]
    assert hub_patterns(False, ["location", "season"], files, "auto") == [
        "prompts/location_*",
        "location_source_video_part*.tar",
        "location_edited_video_part*.tar",
        "prompts/season_*",
        "season/source_video/*",
        "season/edited_video/*",
    ]
    for streaming in (False, True):
        with pytest.raises(SparkleHubError, match=r"not in the local cache.*repo: stdKonjac/Sparkle"):
            resolve_source(
                "stdKonjac/Sparkle", bench=False, themes=None, streaming=streaming, cache_dir=str(tmp_path)
            )


def test_real_samples_load() -> None:
    if not SAMPLES.exists():
        pytest.skip("shared samples absent")
    ds = load_sparkle(SAMPLES)
    assert len(ds) == 8
    assert sorted(set(ds["theme"])) == ["location", "season", "style", "time"]
    row = next(r for r in ds if r["id"] == "Sparkle_location_000223")
    assert row["prompt"].startswith("Shift the background to a sunlit vineyard")
    assert (row["subtheme"], row["scene"]) == ("rural", "vineyard rows with rustling leaves")
    src, edt = row["source_video"], row["edited_video"]
    assert (src.width, src.height, src.fps) == (1280, 720, 16.0)
    assert src.get_frames([0]).shape == (1, 720, 1280, 3)
    assert 69 <= edt.num_frames <= 81
    for r in ds:
        assert r["subtheme"] and r["scene"] and r["prompt"]
        assert 69 <= r["source_video"].num_frames <= 81
