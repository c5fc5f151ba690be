"""The model card validates as a Hub model card, and push_to_hub uploads a complete save_pretrained folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from sparkle_video.pipelines import tiny_pipeline

CARD = Path(__file__).resolve().parents[1] / "model_cards" / "Kiwi-Sparkle" / "README.md"


def test_model_card_metadata() -> None:
    card = ModelCard.load(CARD)
    data = card.data
    # the Hub's "diffusers" snippet would be DiffusionPipeline.from_pretrained, which cannot load the
    # folder without remote code: the card names the library whose class loads it (diffusers-format tag)
    assert data.library_name == "sparkle-video" and "diffusers" in data.tags
    assert "from sparkle_video import SparkleEditPipeline" in card.text
    assert data.pipeline_tag == "video-to-video"
    assert data.license == "cc-by-4.0"
    assert data.base_model == ["Wan-AI/Wan2.2-TI2V-5B", "Qwen/Qwen2.5-VL-3B-Instruct"]
    assert data.datasets == ["stdKonjac/Sparkle"]
    assert "3.81" in card.text and "SparkleEditPipeline.from_pretrained" in card.text
    assert "stdKonjac/Kiwi-Sparkle-720P-81F" in card.text and "guidance_scale=1" in card.text
    assert data.tags and "video-editing" in data.tags
    assert ModelCard(card.content).data.to_dict() == data.to_dict()


def test_push_to_hub_uploads_save_pretrained_output(monkeypatch: pytest.MonkeyPatch) -> None:
    import diffusers.utils.hub_utils as hub_utils

    uploaded: dict[str, object] = {}

    class Repo:
        repo_id = "me/kiwi-sparkle-tiny"

    def fake_upload(self, working_dir, repo_id, token=None, commit_message=None, create_pr=False, **kw):
        uploaded["files"] = sorted(
            os.path.relpath(os.path.join(root, f), working_dir)
            for root, _, fs in os.walk(working_dir)
            for f in fs
        )
        uploaded["index"] = json.loads(Path(working_dir, "model_index.json").read_text())
        uploaded["readme"] = Path(working_dir, "README.md").read_text()
        return "ok"

    monkeypatch.setattr(hub_utils, "create_repo", lambda *a, **k: Repo())
    monkeypatch.setattr(hub_utils, "load_or_create_model_card", lambda *a, **k: ModelCard.load(CARD))
    monkeypatch.setattr(type(tiny_pipeline()), "_upload_folder", fake_upload)
    pipe = tiny_pipeline()
    assert pipe.push_to_hub("me/kiwi-sparkle-tiny") == "ok"
    files = uploaded["files"]
    for part in ("transformer", "vae", "mllm_encoder", "source_embedder", "tokenizer", "scheduler"):
        assert any(f.startswith(part + os.sep) for f in files), part
    assert uploaded["index"]["mllm_encoder"] == ["sparkle_video.models.mllm_encoder", "SparkleMLLMEncoder"]
    assert "library_name: sparkle-video" in uploaded["readme"]  # diffusers' push keeps the card's
