"""The instruction encoder: Qwen's visual layout, the chat text, and query insertion against a reference."""

from __future__ import annotations

import argparse
import inspect

import numpy as np
import pytest
import torch

from sparkle_video.data.synthetic import make_pair
from sparkle_video.models import tiny_components
from sparkle_video.models.mllm_encoder import PLACEHOLDER, SYSTEM_PROMPT, chat_text
from sparkle_video.models.qwen_video import (
    IMAGE_MIN_PIXELS,
    patchify_image,
    patchify_video,
    qwen_frame_size,
    sample_encoder_frames,
    video_frame_size,
)
from sparkle_video.pipelines.pipeline_sparkle_edit import pad_to_size


@pytest.fixture(scope="module")
def parts() -> dict:
    return tiny_components(seed=0)


def test_still_image_layout_equals_transformers_processor() -> None:
    """Our patch layout is the one of transformers' own Qwen2-VL image processor."""
    transformers = pytest.importorskip("transformers")
    processor_cls = getattr(transformers, "Qwen2VLImageProcessorPil", None)
    if processor_cls is None:
        pytest.skip("this transformers has no PIL Qwen2-VL image processor")
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(84, 140, 3), dtype=np.uint8)  # already on the 28-pixel grid
    stock = processor_cls(min_pixels=IMAGE_MIN_PIXELS, max_pixels=512 * 512)(
        images=[image], return_tensors="pt"
    )
    ours, grid = patchify_image(image, max_pixels=512 * 512)
    assert grid.tolist() == stock["image_grid_thw"].tolist() == [[1, 6, 10]]
    torch.testing.assert_close(ours, stock["pixel_values"].float(), atol=1e-5, rtol=1e-5)


def test_frame_sizes_and_sampling() -> None:
    assert qwen_frame_size(720, 1280, max_pixels=512 * 512) == (364, 672)
    assert video_frame_size(704, 1280) == (364, 672)
    assert video_frame_size(64, 64) == (336, 336)  # videos get at least 128 tokens a frame
    assert video_frame_size(64, 64, min_pixels=56 * 56) == (56, 56)
    assert sample_encoder_frames(81, 16).tolist() == [
        0,
        5,
        11,
        16,
        21,
        27,
        32,
        37,
        43,
        48,
        53,
        59,
        64,
        69,
        75,
        80,
    ]
    assert sample_encoder_frames(9, 16).tolist() == list(range(9))
    with pytest.raises(ValueError, match="at least one frame"):
        sample_encoder_frames(0)


def test_odd_frame_counts_repeat_the_last_frame() -> None:
    frames = make_pair(0, num_frames=3, height=56, width=56).source
    pixels, grid = patchify_video(frames, max_pixels=56 * 56, min_pixels=56 * 56)
    assert grid.tolist() == [[2, 4, 4]]
    last, padded = pixels.reshape(2, 16, 3, 2, 14 * 14)[1].unbind(
        2
    )  # second temporal patch: frame 2, frame 2
    torch.testing.assert_close(last, padded)


def test_chat_text_matches_qwen_template() -> None:
    text = chat_text("SYS", "make it snow", 3)
    assert text == (
        "<|im_start|>system\nSYS<|im_end|>\n<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>"
        "make it snow<|object_ref_start|><|object_ref_start|><|object_ref_start|><|im_end|>\n"
    )
    with_ref = chat_text("SYS", "x", 1, ref_image=True)
    assert "x Use the reference input from last frame.<|vision_start|><|image_pad|><|vision_end|>" in with_ref
    assert SYSTEM_PROMPT.startswith("You will be given an image and instruction.")


def test_queries_replace_placeholders_like_a_reference_forward(parts: dict) -> None:
    """encode() == embeddings with placeholders overwritten by the queries, stock forward, last Q states."""
    enc, tok = parts["mllm_encoder"], parts["tokenizer"]
    frames = make_pair(1, num_frames=9, height=64, width=64).source
    captured: dict = {}
    handle = enc.mllm.register_forward_pre_hook(lambda m, a, k: captured.update(k), with_kwargs=True)
    try:
        context = enc.encode(tok, frames, "snowy forest")
    finally:
        handle.remove()
    ids = captured["input_ids"]
    placeholder = tok.convert_tokens_to_ids(PLACEHOLDER)
    q = enc.video_queries.shape[0]
    assert int((ids == placeholder).sum()) == q and context.shape == (1, q, 16)
    embeds = enc.mllm.get_input_embeddings()(ids).clone()
    embeds[ids == placeholder] = enc.video_queries.detach()
    with torch.no_grad():
        out = enc.mllm(
            input_ids=ids,
            inputs_embeds=embeds,
            attention_mask=captured["attention_mask"],
            pixel_values_videos=captured["pixel_values_videos"],
            video_grid_thw=captured["video_grid_thw"],
            output_hidden_states=True,
        )
        expected = enc.connector(out.hidden_states[-1][:, -q:])
    torch.testing.assert_close(context, expected)
    # the queries matter: other query vectors give another context
    with torch.no_grad():
        enc.video_queries.add_(1.0)
        try:
            moved = enc.encode(tok, frames, "snowy forest")
        finally:
            enc.video_queries.sub_(1.0)
    assert (moved - context).abs().max() > 1e-4


def test_reference_context_prepends_reference_states(parts: dict) -> None:
    enc, tok = parts["mllm_encoder"], parts["tokenizer"]
    frames = make_pair(2, num_frames=9, height=64, width=64).source
    ref = make_pair(3, num_frames=1, height=40, width=90).source[0]
    context = enc.encode(tok, frames, "use the reference", ref_image=ref)
    _, grid = patchify_image(ref, max_pixels=enc.config.max_ref_pixels)
    ref_tokens = int(grid.prod()) // 4
    assert context.shape == (1, ref_tokens + enc.ref_queries.shape[0], 16)


def test_reference_is_padded_not_stretched() -> None:
    wide = np.zeros((32, 64, 3), np.uint8)
    out = pad_to_size(wide, 64, 64)
    assert out.shape == (64, 64, 3)
    assert (out[:16] == 255).all() and (out[-16:] == 255).all() and (out[16:48] == 0).all()


def test_single_frame_takes_the_image_path(parts: dict) -> None:
    """One frame, no reference: an image message with the image queries (as the released encoder)."""
    enc, tok = parts["mllm_encoder"], parts["tokenizer"]
    frames = make_pair(4, num_frames=9, height=64, width=64).source
    captured: dict = {}
    handle = enc.mllm.register_forward_pre_hook(lambda m, a, k: captured.update(k), with_kwargs=True)
    try:
        image_context = enc.encode(tok, frames[:1], "snowy forest")
        assert "pixel_values" in captured and "pixel_values_videos" not in captured
        text = tok.decode(captured["input_ids"][0])
        assert "<|image_pad|>" in text and "<|video_pad|>" not in text
        pixels, grid = patchify_image(frames[0], max_pixels=enc.config.max_image_pixels)
        torch.testing.assert_close(captured["pixel_values"], pixels)
        assert captured["image_grid_thw"].tolist() == grid.tolist()
        captured.clear()
        video_context = enc.encode(tok, frames, "snowy forest")
        assert "pixel_values_videos" in captured and "pixel_values" not in captured
    finally:
        handle.remove()
    assert image_context.shape == (1, enc.config.num_image_queries, 16)
    assert video_context.shape == (1, enc.config.num_video_queries, 16)
    assert enc.config.num_image_queries != enc.config.num_video_queries
    # a single frame with a reference image stays on the reference (video) path
    ref = make_pair(3, num_frames=1, height=40, width=90).source[0]
    with_ref = enc.encode(tok, frames[:1], "use the reference", ref_image=ref)
    assert with_ref.shape[1] > enc.config.num_ref_queries


def test_reference_budget_defaults_to_768_tokens() -> None:
    from sparkle_video.commands.model import add_commands
    from sparkle_video.models import SparkleMLLMEncoder, full_size_components
    from sparkle_video.pipelines.convert import convert_checkpoint

    assert full_size_components("meta")["mllm_encoder"].config.max_ref_pixels == 768 * 28 * 28
    assert (
        inspect.signature(SparkleMLLMEncoder.__init__).parameters["max_ref_pixels"].default == 768 * 28 * 28
    )
    assert inspect.signature(convert_checkpoint).parameters["max_ref_tokens"].default == 768
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    args = parser.parse_args(
        [
            "convert-checkpoint",
            "--ckpt",
            "c",
            "--base-transformer",
            "t",
            "--base-vae",
            "v",
            "--mllm",
            "m",
            "--out",
            "o",
        ]
    )
    assert args.max_ref_tokens == 768
