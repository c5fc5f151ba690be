"""The checkpoint path of every model backend, offline: a tiny model saved to a folder and loaded back
through ``from_config({"model_id": folder, ...})`` (the same code a Hub id takes) gives the same outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from backend_fixtures import random_image

from sparkle_video.generation.backends.protocols import ControlInputs
from sparkle_video.generation.backends.registry import build_backend

CPU = {"dtype": "float32", "device": "cpu"}


def test_flux2_klein_from_a_saved_pipeline(tmp_path: Path):
    tiny = build_backend("image_editor", "flux2-klein", {"tiny": True})
    tiny.edit_pipeline.save_pretrained(tmp_path / "klein")
    options = {
        "max_sequence_length": 32,
        "text_encoder_out_layers": [1, 2, 3],
        "steps": 2,
        "resolution": 64 * 96,
    }
    loaded = build_backend(
        "image_editor", "flux2-klein", {"model_id": str(tmp_path / "klein"), **CPU, **options}
    )
    image = random_image(0)
    assert np.array_equal(loaded.edit(image, "snow", seed=0), tiny.edit(image, "snow", seed=0))


def test_wan_i2v_and_vace_from_saved_pipelines(tmp_path: Path):
    image = random_image(1, 32, 48)
    i2v = build_backend("image_to_video", "wan-i2v", {"tiny": True})
    i2v.pipeline.save_pretrained(tmp_path / "i2v")
    options = {"steps": 2, "resolution": 32 * 48, "max_sequence_length": 16}
    loaded = build_backend("image_to_video", "wan-i2v", {"model_id": str(tmp_path / "i2v"), **CPU, **options})
    assert loaded.pipeline.transformer_2 is not None and loaded.pipeline.config.boundary_ratio == 0.9
    assert loaded.pipeline.vae.dtype == torch.float32
    assert np.array_equal(
        loaded.animate(image, "rain", num_frames=5), i2v.animate(image, "rain", num_frames=5)
    )

    vace = build_backend("control_video", "wan-vace", {"tiny": True})
    vace.pipeline.save_pretrained(tmp_path / "vace")
    loaded = build_backend(
        "control_video", "wan-vace", {"model_id": str(tmp_path / "vace"), **CPU, **options}
    )
    clip = np.stack([random_image(i, 32, 48) for i in range(5)])
    inputs = ControlInputs("rain", image, clip, clip, np.zeros(clip.shape[:3], bool), clip)
    assert np.array_equal(loaded.generate(inputs), vace.generate(inputs))


def test_sam3_from_a_saved_model(tmp_path: Path):
    tiny = build_backend("segmenter", "sam3", {"tiny": True})
    tiny.model.save_pretrained(tmp_path / "sam3")
    loaded = build_backend("segmenter", "sam3", {"model_id": str(tmp_path / "sam3"), **CPU})
    clip = np.stack([random_image(i, 24, 32) for i in range(5)])
    assert np.array_equal(loaded.segment(clip, 2, [(2, 2, 20, 20)]), tiny.segment(clip, 2, [(2, 2, 20, 20)]))


def _save_chat(chat, folder: Path) -> None:
    chat.model.save_pretrained(folder)
    chat.tokenizer.save_pretrained(folder)
    chat.image_processor.save_pretrained(folder)


def test_qwen_vl_from_a_saved_checkpoint(tmp_path: Path):
    tiny = build_backend("vlm", "qwen-vl", {"tiny": True})
    _save_chat(tiny.chat, tmp_path / "qwen3vl")
    options = {"max_new_tokens": 16, "temperature": 0.0}
    loaded = build_backend("vlm", "qwen-vl", {"model_id": str(tmp_path / "qwen3vl"), **CPU, **options})
    assert loaded.box_format == "qwen3" and loaded.chat.image_processor.patch_size == 16
    chats = [([random_image(2)], "hello"), ([random_image(3), random_image(4)], "and these")]
    assert loaded.chat.generate(chats) == tiny.chat.generate(chats)
    with pytest.raises(ValueError, match="family"):
        build_backend("vlm", "qwen-vl", {"model_id": str(tmp_path / "qwen3vl"), "family": "qwen3"})


def test_editscore_base_plus_peft_adapter_from_folders(tmp_path: Path):
    from peft import LoraConfig, get_peft_model

    from sparkle_video.generation.backends.editscore import EditScoreScorer

    base = EditScoreScorer.tiny(0)
    _save_chat(base.chat, tmp_path / "base")
    lora = get_peft_model(
        base.chat.model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    lora.save_pretrained(tmp_path / "adapter")
    adapted = EditScoreScorer.tiny(0, adapter_id=str(tmp_path / "adapter"))
    options = {"adapter_id": str(tmp_path / "adapter"), "max_new_tokens": 16, "temperature": 0.0, "seed": 0}
    loaded = build_backend("scorer", "editscore", {"model_id": str(tmp_path / "base"), **CPU, **options})
    chats = [([random_image(5), random_image(6)], "judge")]
    assert loaded.chat.generate(chats) == adapted.chat.generate(chats)
    name = "model.language_model.layers.1.self_attn.v_proj.weight"
    assert torch.equal(
        dict(loaded.chat.model.named_parameters())[name], dict(adapted.chat.model.named_parameters())[name]
    )
