"""The official Sparkle / Sparkle-Bench file layouts, as names and path builders.

Every reader and writer in the library goes through these functions, so the layout is stated once.
Paths are POSIX and relative to a dataset root (a local folder, an fsspec URL or a Hub repo).
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

#: Themes of the training set; Sparkle-Bench has all but ``openve3m``.
THEMES: tuple[str, ...] = ("location", "season", "time", "style", "openve3m")
BENCH_THEMES: tuple[str, ...] = ("location", "season", "time", "style")

#: Upstream Hub repositories.
SPARKLE_REPO = "stdKonjac/Sparkle"
SPARKLE_BENCH_REPO = "stdKonjac/Sparkle-Bench"
KIWI_SPARKLE_REPO = "stdKonjac/Kiwi-Sparkle-720P-81F"

#: Column sets of the CSV files (the contract).
TRAIN_CSV_COLUMNS: tuple[str, ...] = ("prompt", "src_video", "tgt_video", "task")
BENCH_CSV_COLUMNS: tuple[str, ...] = ("edited_type", "prompt", "original_video")

OPENVE_EDIT_TYPE = "openve3m_background_change"

#: Kinds of video in a training pair, as named in the layout.
VIDEO_KINDS: tuple[str, ...] = ("source", "edited")

#: Per-id artefact folders under ``intermediate_data/{theme}/`` and their file extension.
INTERMEDIATE_DIRS: dict[str, str] = {
    "source_frame0": ".png",
    "edited_frame0": ".png",
    "edited_frame0_foreground_removed": ".png",
    "edited_background_video": ".mp4",
    "source_video_mask": ".npz",
    "edited_video_canny": ".mp4",
}
#: Per-theme JSONL artefacts under ``intermediate_data/{theme}/``.
INTERMEDIATE_JSONL: tuple[str, ...] = (
    "edited_frame0_score",
    "foreground_grounding_r1",
    "edited_frame0_foreground_removed_score",
    "foreground_grounding_r2",
    "edited_video_score",
)
#: Stage score files and the field a threshold applies to.
SCORE_FILES: dict[str, str] = {
    "edited_frame0_score": "overall",
    "edited_frame0_foreground_removed_score": "overall",
    "edited_video_score": "O_score",
}

SAMPLE_ID_RE = re.compile(r"^Sparkle_(?P<theme>[a-z0-9]+)_(?P<num>\d+)$")
SHARD_RE = re.compile(r"^(?P<theme>[a-z0-9]+)_(?P<kind>source|edited)_video_part(?P<part>\d+)\.tar$")
INTERMEDIATE_SHARD_RE = re.compile(r"^(?P<theme>[a-z0-9]+)_(?P<subdir>[a-z0-9_]+)_part(?P<part>\d+)\.tar$")


def sample_id(theme: str, number: int) -> str:
    """``Sparkle_{theme}_{6 digits}``."""
    return f"Sparkle_{theme}_{number:06d}"


# -- Sparkle (training set) ----------------------------------------------------------------------
def train_csv_path(theme: str) -> str:
    return f"prompts/{theme}_train.csv"


def train_metadata_path(theme: str) -> str:
    return f"prompts/{theme}_train_metadata.jsonl"


def video_path(theme: str, kind: str, sid: str) -> str:
    """``{theme}/{source|edited}_video/{id}.mp4`` (also the member name inside a shard)."""
    if kind not in VIDEO_KINDS:
        raise ValueError(f"kind must be one of {VIDEO_KINDS}, got {kind!r}")
    return f"{theme}/{kind}_video/{sid}.mp4"


def shard_name(theme: str, kind: str, part: int) -> str:
    return f"{theme}_{kind}_video_part{part:02d}.tar"


def intermediate_path(theme: str, subdir: str, sid: str) -> str:
    if subdir not in INTERMEDIATE_DIRS:
        raise ValueError(f"unknown intermediate artefact {subdir!r}; known: {sorted(INTERMEDIATE_DIRS)}")
    return f"intermediate_data/{theme}/{subdir}/{sid}{INTERMEDIATE_DIRS[subdir]}"


def intermediate_jsonl_path(theme: str, name: str) -> str:
    if name not in INTERMEDIATE_JSONL:
        raise ValueError(f"unknown intermediate JSONL {name!r}; known: {list(INTERMEDIATE_JSONL)}")
    return f"intermediate_data/{theme}/{name}.jsonl"


def intermediate_shard_name(theme: str, subdir: str, part: int) -> str:
    return f"intermediate_data/{theme}_{subdir}_part{part:02d}.tar"


# -- Sparkle-Bench -------------------------------------------------------------------------------
def bench_csv_path(theme: str) -> str:
    return f"{theme}_bench.csv"


def bench_metadata_path(theme: str) -> str:
    return f"{theme}_metadata.jsonl"


def bench_video_path(theme: str, sid: str) -> str:
    return f"source_videos/{theme}/{sid}.mp4"


def bench_ref_image_path(theme: str, sid: str) -> str:
    return f"ref_images/{theme}/{sid}.png"


# -- keywords and result layout ------------------------------------------------------------------
@dataclass(frozen=True)
class Keyword:
    subtheme: str
    scene: str

    @property
    def scene_key(self) -> str:
        return self.scene.replace(" ", "_")


def parse_chosen_keyword(chosen_keyword: str | None) -> Keyword | None:
    """``"urban: rooftop overlooking skyline"`` -> ``Keyword("urban", "rooftop overlooking skyline")``."""
    if not chosen_keyword:
        return None
    if ": " not in chosen_keyword:
        raise ValueError(f"chosen_keyword must look like 'subtheme: scene', got {chosen_keyword!r}")
    subtheme, scene = chosen_keyword.split(": ", 1)
    return Keyword(subtheme.strip(), scene.strip())


def bench_result_path(theme: str, subtheme: str, scene: str, sid: str) -> str:
    """Official inference output: ``{theme}/{subtheme}---{scene_key}/{id}_edited.mp4``."""
    return f"{theme}/{subtheme}---{scene.replace(' ', '_')}/{sid}_edited.mp4"


def judge_result_name(theme: str, judge_model: str, protocol: str = "sparkle") -> str:
    """Official judge output file name: ``{theme}_{judge_model}_sparkle_score.jsonl``."""
    return f"{theme}_{judge_model}_{protocol}_score.jsonl"


# -- safety --------------------------------------------------------------------------------------
def safe_relpath(path: str) -> str:
    """Normalise a repo-relative path; reject absolute paths and ``..`` components.

    Raises ``ValueError`` (callers wrap it in a ``SparkleDataError`` naming the file and row).
    """
    if not isinstance(path, str) or not path.strip():
        raise ValueError(f"empty path {path!r}")
    p = path.replace("\\", "/").strip()
    if p.startswith("/") or re.match(r"^[A-Za-z]:", p) or "://" in p:
        raise ValueError(f"absolute path not allowed: {path!r}")
    parts = p.split("/")
    if ".." in parts:
        raise ValueError(f"'..' not allowed in path: {path!r}")
    return posixpath.normpath(p)
