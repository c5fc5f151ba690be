"""Intermediate artefacts by id, from loose files and from intermediate tar shards."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from conftest import clip
from PIL import Image

from sparkle_video import SparkleDataError, VideoReader, save_mask, write_video
from sparkle_video.data.artifacts import SparkleArtifacts

SID = "Sparkle_location_000007"


def make(root: Path) -> np.ndarray:
    d = root / "intermediate_data" / "location"
    (d / "source_video_mask").mkdir(parents=True)
    mask = np.zeros((5, 16, 24), bool)
    mask[:, 4:9, 6:15] = True
    save_mask(mask, d / "source_video_mask" / f"{SID}.npz")
    (d / "edited_frame0").mkdir()
    Image.fromarray(clip(1, 1, 16, 24)[0]).save(d / "edited_frame0" / f"{SID}.png")
    rec = {"id": SID, "labels": ["person"], "bbox_2d": [[100, 200, 500, 900]]}
    (d / "foreground_grounding_r1.jsonl").write_text(json.dumps(rec) + "\n")
    return mask


def test_loose_files(tmp_path: Path) -> None:
    mask = make(tmp_path)
    arts = SparkleArtifacts(tmp_path)
    np.testing.assert_array_equal(arts.get(SID, "source_video_mask"), mask)
    img = arts.get(SID, "edited_frame0")
    assert img.size == (24, 16)
    assert arts.get(SID, "foreground_grounding_r1")["labels"] == ["person"]
    assert sorted(arts.available(SID)) == ["edited_frame0", "foreground_grounding_r1", "source_video_mask"]
    with pytest.raises(SparkleDataError, match="no edited_background_video artefact") as e:
        arts.get(SID, "edited_background_video")
    assert SID in str(e.value)
    with pytest.raises(SparkleDataError, match="absent"):
        arts.get(SID, "edited_video_score")
    with pytest.raises(SparkleDataError, match="not a Sparkle id"):
        arts.get("whatever", "edited_frame0")


def test_from_intermediate_shards(tmp_path: Path) -> None:
    src = tmp_path / "loose"
    frames = clip(4, 9, 32, 48)
    video = src / "intermediate_data/location/edited_background_video" / f"{SID}.mp4"
    write_video(frames, video, fps=16)
    root = tmp_path / "repo"
    (root / "intermediate_data").mkdir(parents=True)
    with tarfile.open(root / "intermediate_data/location_edited_background_video_part00.tar", "w") as tf:
        tf.add(video, arcname=f"intermediate_data/location/edited_background_video/{SID}.mp4")
    reader = SparkleArtifacts(root).get(SID, "edited_background_video")
    assert isinstance(reader, VideoReader) and reader.num_frames == 9
    np.testing.assert_array_equal(reader.get_frames([3]), VideoReader(video).get_frames([3]))
