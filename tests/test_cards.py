"""The dataset cards are valid Hub cards with one config per theme, and their configs load."""

from __future__ import annotations

import shutil
from pathlib import Path

import datasets
import pytest
from conftest import SAMPLES
from huggingface_hub import DatasetCard

from sparkle_video.data.layout import BENCH_THEMES, THEMES
from sparkle_video.data.synthetic import make_demo_records
from sparkle_video.data.writer import write_sparkle, write_sparkle_bench

CARDS = Path(__file__).resolve().parents[1] / "dataset_cards"


@pytest.mark.parametrize(
    "name, themes, size, split",
    [("Sparkle", THEMES, "100K<n<1M", "train"), ("Sparkle-Bench", BENCH_THEMES, "n<1K", "test")],
)
def test_card_metadata(name: str, themes: tuple[str, ...], size: str, split: str) -> None:
    card = DatasetCard.load(CARDS / name / "README.md")
    data = card.data
    assert data.license == "cc-by-4.0"
    assert "video-to-video" in data.task_categories
    assert data.size_categories == [size]
    assert data.language == ["en"]
    assert [c["config_name"] for c in data.configs] == ["all", *themes]
    assert [c["config_name"] for c in data.configs if c.get("default")] == ["all"]
    for config in data.configs:
        assert config["data_files"][0]["split"] == split
    assert data.pretty_name == name
    assert "arXiv 2605.06535" in card.text and "```bibtex" in card.text
    # round trip through the card classes keeps the metadata
    again = DatasetCard(card.content)
    assert again.data.to_dict() == data.to_dict()


def test_card_configs_load_real_prompts(tmp_path: Path) -> None:
    if not SAMPLES.exists():
        pytest.skip("shared samples absent")
    repo = tmp_path / "repo"
    shutil.copytree(SAMPLES / "prompts", repo / "prompts")
    text = (CARDS / "Sparkle" / "README.md").read_text()
    (repo / "README.md").write_text(
        text.replace("- config_name: openve3m", "- config_name: openve3m-unused").replace(
            "prompts/openve3m_train.csv", "prompts/location_train.csv"
        )
    )
    ds = datasets.load_dataset(str(repo), "location", split="train", cache_dir=str(tmp_path / "hf-cache"))
    assert ds.column_names == ["prompt", "src_video", "tgt_video", "task"]
    assert ds["task"] == ["Sparkle_location_000223", "Sparkle_location_000598"]


@pytest.mark.parametrize(
    "name, themes, split", [("Sparkle", THEMES, "train"), ("Sparkle-Bench", BENCH_THEMES, "test")]
)
def test_card_configs_load_written_layouts(
    name: str, themes: tuple[str, ...], split: str, tmp_path: Path
) -> None:
    records = make_demo_records(
        num_per_theme=2, themes=themes, num_frames=3, height=32, width=32, intermediates=False
    )
    repo = tmp_path / "repo"
    if name == "Sparkle":
        write_sparkle(records, repo, progress=False)
    else:
        for r in records:
            r.chosen_keyword = r.chosen_keyword or "misc: field"
        write_sparkle_bench(records, repo, progress=False)
    shutil.copy(CARDS / name / "README.md", repo / "README.md")
    for theme in themes:
        ds = datasets.load_dataset(str(repo), theme, split=split, cache_dir=str(tmp_path / "hf-cache"))
        expected = [r.prompt for r in records if r.theme == theme]
        assert ds["prompt"] == expected
    # the default config: plain load_dataset(repo) gives every theme's prompts
    everything = datasets.load_dataset(str(repo), split=split, cache_dir=str(tmp_path / "hf-cache"))
    assert sorted(everything["prompt"]) == sorted(r.prompt for r in records)
