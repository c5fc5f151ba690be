"""Checkpoint conversion: upstream key names round-trip into the pipeline, every key mapped or reported."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from sparkle_video import SparkleEditPipeline
from sparkle_video.convert import (
    CheckpointError,
    convert_checkpoint,
    dit_name,
    load_checkpoint,
    unmapped_keys,
)
from sparkle_video.models import tiny_components
from sparkle_video.synthetic import make_pair


def synthetic_checkpoint(parts: dict, rank: int = 2) -> dict[str, torch.Tensor]:
    """A Kiwi-Edit-style training checkpoint for the tiny model, with upstream key names."""
    g = torch.Generator().manual_seed(3)
    enc = parts["mllm_encoder"]
    ck: dict[str, torch.Tensor] = {}
    for target, shape in [("blocks.0.self_attn.q", (16, 16)), ("blocks.1.cross_attn.o", (16, 16)),
                          ("blocks.1.ffn.0", (32, 16)), ("blocks.0.ffn.2", (16, 32))]:
        ck[f"pipe.dit.{target}.lora_A.default.weight"] = torch.randn(rank, shape[1], generator=g)
        ck[f"pipe.dit.{target}.lora_B.default.weight"] = torch.randn(shape[0], rank, generator=g)
    ck["pipe.mllm.model.model.layers.0.self_attn.q_proj.lora_A.default.weight"] = torch.randn(rank, 32, generator=g)
    ck["pipe.mllm.model.model.layers.0.self_attn.q_proj.lora_B.default.weight"] = torch.randn(32, rank, generator=g)
    for name in ("image_queries", "video_queries", "ref_queries"):
        ck[f"pipe.mllm.{name}.q"] = torch.randn(*getattr(enc, name).shape, generator=g)
    for head, upstream in (("connector", "connetor"), ("ref_connector", "ref_connector")):
        for i in (0, 2):
            mod = getattr(enc, head)[i]
            ck[f"pipe.mllm.{upstream}.{i}.weight"] = torch.randn(*mod.weight.shape, generator=g)
            ck[f"pipe.mllm.{upstream}.{i}.bias"] = torch.randn(*mod.bias.shape, generator=g)
    for prefix, module in (("vae_condition", parts["source_embedder"]), ("ref_vae_condition", parts["ref_embedder"])):
        ck[f"pipe.{prefix}.patch_embedding.weight"] = torch.randn(*module.patch_embedding.weight.shape, generator=g)
        ck[f"pipe.{prefix}.patch_embedding.bias"] = torch.randn(*module.patch_embedding.bias.shape, generator=g)
    return ck


def test_key_mapping_table() -> None:
    assert dit_name("blocks.3.self_attn.o.weight") == "blocks.3.attn1.to_out.0.weight"
    assert dit_name("blocks.0.cross_attn.norm_k.weight") == "blocks.0.attn2.norm_k.weight"
    assert dit_name("blocks.2.ffn.0.bias") == "blocks.2.ffn.net.0.proj.bias"
    assert dit_name("blocks.2.norm3.weight") == "blocks.2.norm2.weight"
    assert dit_name("blocks.2.modulation") == "blocks.2.scale_shift_table"
    assert dit_name("head.head.weight") == "proj_out.weight"
    assert dit_name("time_projection.1.bias") == "condition_embedder.time_proj.bias"
    assert dit_name("something.else") is None


def test_round_trip_into_pipeline(tmp_path) -> None:
    parts = tiny_components(seed=0)
    base_q = parts["transformer"].blocks[0].attn1.to_q.weight.detach().clone()
    base_qwen = parts["mllm_encoder"].mllm.model.language_model.layers[0].self_attn.q_proj.weight.detach().clone()
    ck = synthetic_checkpoint(parts)
    assert unmapped_keys(ck) == []
    path = tmp_path / "model.safetensors"
    save_file(ck, str(path))
    pipe, report = convert_checkpoint(
        path, parts["transformer"], parts["vae"], parts["mllm_encoder"].mllm, tokenizer=parts["tokenizer"],
        out_dir=tmp_path / "converted", lora_alpha=0.5,
    )
    assert len(report.dit_lora_merged) == 4 and len(report.mllm_lora_merged) == 1
    assert report.total == len(ck) - 5  # each LoRA pair (2 keys) is one merge
    a = ck["pipe.dit.blocks.0.self_attn.q.lora_A.default.weight"]
    b = ck["pipe.dit.blocks.0.self_attn.q.lora_B.default.weight"]
    torch.testing.assert_close(pipe.transformer.blocks[0].attn1.to_q.weight, base_q + 0.5 * b @ a)
    qa = ck["pipe.mllm.model.model.layers.0.self_attn.q_proj.lora_A.default.weight"]
    qb = ck["pipe.mllm.model.model.layers.0.self_attn.q_proj.lora_B.default.weight"]
    torch.testing.assert_close(
        pipe.mllm_encoder.mllm.model.language_model.layers[0].self_attn.q_proj.weight, base_qwen + 0.5 * qb @ qa
    )
    torch.testing.assert_close(pipe.mllm_encoder.video_queries.data, ck["pipe.mllm.video_queries.q"])
    torch.testing.assert_close(pipe.mllm_encoder.connector[2].weight.data, ck["pipe.mllm.connetor.2.weight"])
    torch.testing.assert_close(pipe.source_embedder.patch_embedding.bias.data, ck["pipe.vae_condition.patch_embedding.bias"])
    torch.testing.assert_close(pipe.ref_embedder.patch_embedding.weight.data, ck["pipe.ref_vae_condition.patch_embedding.weight"])
    # the saved folder loads with no remote code and edits
    loaded = SparkleEditPipeline.from_pretrained(tmp_path / "converted")
    loaded.set_progress_bar_config(disable=True)
    clip = make_pair(0, num_frames=9, height=64, width=64).source
    a1 = loaded("snow", clip, num_inference_steps=1, generator=torch.Generator().manual_seed(0)).frames
    a2 = pipe("snow", clip, num_inference_steps=1, generator=torch.Generator().manual_seed(0)).frames
    np.testing.assert_allclose(a1, a2, atol=1e-6)


def test_unknown_and_missing_keys_fail_loudly() -> None:
    parts = tiny_components(seed=0)
    ck = synthetic_checkpoint(parts)
    ck["pipe.mystery.weight"] = torch.zeros(3)
    assert unmapped_keys(ck) == ["pipe.mystery.weight"]
    with pytest.raises(CheckpointError, match=r"unmapped keys \['pipe.mystery.weight'\]"):
        convert_checkpoint(ck, parts["transformer"], parts["vae"], parts["mllm_encoder"].mllm, tokenizer=parts["tokenizer"])
    ck = synthetic_checkpoint(parts)
    del ck["pipe.vae_condition.patch_embedding.weight"]
    with pytest.raises(CheckpointError, match=r"source_embedder\.patch_embedding\.weight"):
        convert_checkpoint(ck, parts["transformer"], parts["vae"], parts["mllm_encoder"].mllm, tokenizer=parts["tokenizer"])
    ck = synthetic_checkpoint(parts)
    ck["pipe.dit.blocks.0.self_attn.q.lora_B.default.weight"] = torch.zeros(5, 2)
    with pytest.raises(CheckpointError, match="shape mismatches"):
        convert_checkpoint(ck, parts["transformer"], parts["vae"], parts["mllm_encoder"].mllm, tokenizer=parts["tokenizer"])
    ck = synthetic_checkpoint(parts)
    del ck["pipe.dit.blocks.1.ffn.0.lora_A.default.weight"]
    with pytest.raises(CheckpointError, match="incomplete LoRA pairs"):
        convert_checkpoint(ck, parts["transformer"], parts["vae"], parts["mllm_encoder"].mllm, tokenizer=parts["tokenizer"])


def test_pth_is_loaded_without_unpickling_objects(tmp_path) -> None:
    good = tmp_path / "ok.pth"
    torch.save({"state_dict": {"a": torch.ones(2)}}, good)
    assert torch.equal(load_checkpoint(good)["a"], torch.ones(2))

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    bad = tmp_path / "bad.pth"
    torch.save({"a": Evil()}, bad)
    with pytest.raises(Exception, match=r"(?i)weights_only|unsupported|global"):
        load_checkpoint(bad)


def test_convert_checkpoint_command_from_folders(tmp_path) -> None:
    """The CLI loads base models from folders (a whole pipeline folder or the component's own)."""
    from sparkle_video.cli import main

    parts = tiny_components(seed=0)
    ck = synthetic_checkpoint(parts)
    save_file(ck, str(tmp_path / "model.safetensors"))
    parts["transformer"].save_pretrained(tmp_path / "wan" / "transformer")  # a pipeline-style folder
    parts["vae"].save_pretrained(tmp_path / "vae")  # the component's own folder
    parts["mllm_encoder"].mllm.save_pretrained(tmp_path / "qwen")
    parts["tokenizer"].save_pretrained(tmp_path / "qwen")
    code = main(["convert-checkpoint", "--ckpt", str(tmp_path / "model.safetensors"),
                 "--base-transformer", str(tmp_path / "wan"), "--base-vae", str(tmp_path / "vae"),
                 "--mllm", str(tmp_path / "qwen"), "--out", str(tmp_path / "out"), "--dtype", "float32",
                 "--lora-alpha", "2", "--ref-pad-first", "--max-ref-tokens", "4"])
    assert code == 0
    pipe = SparkleEditPipeline.from_pretrained(tmp_path / "out")
    assert pipe.ref_embedder.config.ref_pad_first is True
    assert pipe.mllm_encoder.config.max_ref_pixels == 28 * 28 * 4
    a = ck["pipe.dit.blocks.1.cross_attn.o.lora_A.default.weight"]
    b = ck["pipe.dit.blocks.1.cross_attn.o.lora_B.default.weight"]
    base = parts["transformer"].blocks[1].attn2.to_out[0].weight
    torch.testing.assert_close(pipe.transformer.blocks[1].attn2.to_out[0].weight, base + 2 * b @ a)
    torch.testing.assert_close(pipe.mllm_encoder.ref_queries.data, ck["pipe.mllm.ref_queries.q"])
