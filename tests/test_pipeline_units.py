"""The pipeline's pure helpers, value by value: video inputs to frames, the cover-and-crop geometry,
the squash resize, restoring the source size, reference padding and batch spreading.

No model is built here; the building blocks that need one are pinned in ``test_pipeline_blocks.py``.
"""

from __future__ import annotations

import re

import cv2
import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from sparkle_video import VideoReader
from sparkle_video.pipelines.pipeline_sparkle_edit import (
    _match_batch,
    cover_crop_frames,
    crop_box,
    fit_frames,
    image_to_array,
    pad_to_size,
    resize_frames,
    restore_frames,
    video_to_frames,
)


def ramp(t: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """``(t, h, w, 3) uint8`` frames where every frame, row, column and channel differs."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(t, h, w, 3), dtype=np.uint8)


class FakeReader(VideoReader):
    """A ``VideoReader`` with a given frame count that records which frames were asked for."""

    def __init__(self, frames: np.ndarray) -> None:  # no file behind it
        self.frames = frames
        self.asked: list[list[int]] = []

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    def get_frames(self, indices=None, size=None) -> np.ndarray:
        wanted = list(indices)
        self.asked.append(wanted)
        return self.frames[wanted]


# -- video_to_frames ---------------------------------------------------------------------------
def test_reader_is_read_up_to_max_frames() -> None:
    frames = ramp(7, 4, 6)
    reader = FakeReader(frames)
    out = video_to_frames(reader, max_frames=5)
    assert reader.asked == [[0, 1, 2, 3, 4]]
    np.testing.assert_array_equal(out, frames[:5])
    short = FakeReader(frames[:3])
    np.testing.assert_array_equal(video_to_frames(short, max_frames=5), frames[:3])
    assert short.asked == [[0, 1, 2]]


def test_one_frame_reader_is_a_video_and_an_empty_one_is_refused() -> None:
    one = ramp(1, 4, 6)
    np.testing.assert_array_equal(video_to_frames(FakeReader(one)), one)
    with pytest.raises(ValueError, match=r"^video is empty \(the file has no frames\)$"):
        video_to_frames(FakeReader(one[:0]))


def test_pil_frames_of_any_mode_become_rgb() -> None:
    rgba = ramp(2, 4, 6)
    alpha = np.full((4, 6, 1), 255, np.uint8)
    images = [Image.fromarray(np.concatenate([f, alpha], axis=-1), "RGBA") for f in rgba]
    np.testing.assert_array_equal(video_to_frames(images), rgba)
    grey = [Image.fromarray(f[..., 0], "L") for f in rgba]
    np.testing.assert_array_equal(video_to_frames(grey), np.repeat(rgba[..., :1], 3, axis=-1))


def test_list_and_tuple_of_arrays_are_stacked() -> None:
    frames = ramp(3, 4, 6)
    np.testing.assert_array_equal(video_to_frames(list(frames)), frames)
    np.testing.assert_array_equal(video_to_frames(tuple(frames), max_frames=2), frames[:2])


@pytest.mark.parametrize("empty", [[], ()])
def test_empty_list_is_refused(empty) -> None:
    with pytest.raises(ValueError, match=r"^video is empty$"):
        video_to_frames(empty)


def test_frames_of_different_sizes_are_named() -> None:
    with pytest.raises(ValueError, match=r"differ in size: \[\(4, 6, 3\), \(5, 6, 3\)\]"):
        video_to_frames([np.zeros((5, 6, 3), np.uint8), np.zeros((4, 6, 3), np.uint8)])
    same = [np.zeros((4, 6, 3), np.uint8)] * 2  # one shape: no error
    assert video_to_frames(same).shape == (2, 4, 6, 3)


def test_tensors_channels_first_or_last() -> None:
    frames = ramp(2, 5, 7)
    last = torch.from_numpy(frames)
    np.testing.assert_array_equal(video_to_frames(last), frames)
    np.testing.assert_array_equal(video_to_frames(last.permute(0, 3, 1, 2)), frames)
    # channels last with a height of 3 (and a width of 3 or 5): not to be permuted
    for h, w in ((3, 3), (3, 5)):
        narrow = ramp(2, h, w)
        np.testing.assert_array_equal(video_to_frames(torch.from_numpy(narrow)), narrow)
    # channels first with a height of 3
    flat = ramp(2, 3, 7)
    np.testing.assert_array_equal(video_to_frames(torch.from_numpy(flat).permute(0, 3, 1, 2)), flat)
    # a batch of channels-first clips is not a video
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\) frames, got shape \(1, 3, 2, 5, 7\)"):
        video_to_frames(last.permute(3, 0, 1, 2)[None])


def test_tensor_needing_grad_is_detached() -> None:
    t = torch.zeros(1, 2, 2, 3, requires_grad=True)
    np.testing.assert_array_equal(video_to_frames(t), np.zeros((1, 2, 2, 3), np.uint8))


def test_float_frames_are_clipped_scaled_and_rounded() -> None:
    values = np.array([-0.5, 0.0, 0.2, 0.5, 0.999, 1.0, 1.5], np.float64)
    arr = np.broadcast_to(values[None, None, :, None], (1, 1, 7, 3)).copy()
    out = video_to_frames(arr)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, 0, :, 0], [0, 0, 51, 128, 255, 255, 255])
    # the arithmetic is float32: 0.6098039 * 255 is exactly 155.5 there (-> 156; float64 gives 155.49...)
    tie = np.full((1, 1, 1, 3), 0.6098039, np.float32)
    assert video_to_frames(tie)[0, 0, 0, 0] == 156


def test_uint8_arrays_are_kept_and_cut_to_max_frames() -> None:
    frames = ramp(6, 4, 6)
    out = video_to_frames(frames, max_frames=4)
    np.testing.assert_array_equal(out, frames[:4])
    assert out.dtype == np.uint8


@pytest.mark.parametrize(
    "shape",
    [(4, 6, 3), (2, 4, 6, 4), (2, 4, 6, 1), (2, 3, 4, 6, 3)],
)
def test_not_a_frame_stack(shape: tuple[int, ...]) -> None:
    with pytest.raises(
        ValueError, match="^" + re.escape(f"video must be (T, H, W, 3) frames, got shape {shape}")
    ):
        video_to_frames(np.zeros(shape, np.uint8))


@pytest.mark.parametrize("shape", [(0, 4, 6, 3), (2, 0, 6, 3), (2, 4, 0, 3)])
def test_zero_sized_video_is_empty(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(f"video is empty (shape {shape})") + "$"):
        video_to_frames(np.zeros(shape, np.uint8))


def test_one_pixel_video_is_not_empty() -> None:
    assert video_to_frames(np.zeros((1, 1, 1, 3), np.uint8)).shape == (1, 1, 1, 3)


# -- image_to_array ----------------------------------------------------------------------------
def test_reference_image_kinds() -> None:
    img = ramp(1, 5, 7)[0]
    rgba = Image.fromarray(np.concatenate([img, np.full((5, 7, 1), 9, np.uint8)], axis=-1), "RGBA")
    np.testing.assert_array_equal(image_to_array(rgba), img)
    np.testing.assert_array_equal(image_to_array(img), img)
    np.testing.assert_array_equal(image_to_array(img.astype(np.float32) / 255.0), img)
    chw = torch.from_numpy(img).permute(2, 0, 1)
    np.testing.assert_array_equal(image_to_array(chw), img)
    np.testing.assert_array_equal(image_to_array(torch.from_numpy(img)), img)


# -- crop_box and cover_crop_frames ------------------------------------------------------------
@pytest.mark.parametrize(
    "args, box",
    [
        ((720, 1280, 704, 1280), (8, 0, 704, 1280)),
        ((100, 200, 64, 96), (0, 25, 100, 150)),  # wider than the target: columns go
        ((101, 201, 64, 96), (0, 25, 101, 151)),  # int(151.5) and floor-halved margins
        ((200, 100, 96, 64), (25, 0, 150, 100)),  # taller: rows go
        ((201, 101, 96, 64), (25, 0, 151, 101)),
        ((90, 100, 32, 64), (20, 0, 50, 100)),
        # equal aspect, where the float arithmetic loses one pixel: the rows side is the one cut
        ((15, 15, 11, 11), (0, 0, 14, 15)),
        ((30, 60, 11, 22), (0, 0, 29, 60)),
    ],
)
def test_crop_box_values(args: tuple[int, int, int, int], box: tuple[int, int, int, int]) -> None:
    out = crop_box(*args)
    assert out == box and all(isinstance(v, int) for v in out)


def test_cover_crop_frames_cuts_without_resizing_when_the_crop_is_the_target() -> None:
    frames = ramp(2, 10, 20)
    out = cover_crop_frames(frames, 10, 16)  # columns 2..17 exactly, no resampling
    np.testing.assert_array_equal(out, frames[:, :, 2:18])
    assert out.flags.c_contiguous
    tall = ramp(2, 20, 10)
    np.testing.assert_array_equal(cover_crop_frames(tall, 12, 10), tall[:, 4:16])


def test_cover_crop_frames_resizes_the_crop_with_pil_bicubic() -> None:
    frames = ramp(2, 30, 20)  # taller than 16x16: rows 5..24 kept, then 20x20 -> 16x16
    out = cover_crop_frames(frames, 16, 16)
    expected = [np.asarray(Image.fromarray(f[5:25]).resize((16, 16), Image.BICUBIC)) for f in frames]
    np.testing.assert_array_equal(out, np.stack(expected))
    same = ramp(1, 16, 16)
    assert cover_crop_frames(same, 16, 16) is same


# -- resize_frames and fit_frames ----------------------------------------------------------------
def test_resize_frames_is_area_averaging_and_a_no_op_at_size() -> None:
    frames = ramp(2, 20, 30)
    out = resize_frames(frames, 10, 12)
    expected = np.stack([cv2.resize(f, (12, 10), interpolation=cv2.INTER_AREA) for f in frames])
    np.testing.assert_array_equal(out, expected)
    assert resize_frames(frames, 20, 30) is frames
    one_row = ramp(2, 20, 30)[:, :1]  # (2, 1, 30, 3): same width, other height -> resized
    assert resize_frames(one_row, 30, 30).shape == (2, 30, 30, 3)


def test_fit_frames_default_is_the_crop() -> None:
    frames = ramp(2, 10, 20)
    np.testing.assert_array_equal(fit_frames(frames, 10, 16), frames[:, :, 2:18])
    np.testing.assert_array_equal(fit_frames(frames, 10, 16, "crop"), frames[:, :, 2:18])
    np.testing.assert_array_equal(fit_frames(frames, 10, 16, "resize"), resize_frames(frames, 10, 16))
    with pytest.raises(ValueError, match=r"resize_mode must be one of \('crop', 'resize'\), got 'pad'"):
        fit_frames(frames, 10, 16, "pad")


# -- restore_frames ------------------------------------------------------------------------------
def distinct_video(b: int = 2, f: int = 3, h: int = 4, w: int = 6) -> torch.Tensor:
    return torch.rand(b, 3, f, h, w, generator=torch.Generator().manual_seed(4))


def by_hand(video: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Per batch row and frame: bilinear (half-pixel centres) resize of the (3, h, w) image."""
    out = torch.empty(*video.shape[:3], *size)
    for i in range(video.shape[0]):
        for t in range(video.shape[2]):
            out[i, :, t] = torch.nn.functional.interpolate(
                video[i, :, t][None], size=size, mode="bilinear", align_corners=False
            )[0]
    return out


def test_restore_crop_of_rows_is_the_default() -> None:
    video = distinct_video()  # (2, 3, 3, 4, 6) output of a 10x12 source cropped to 8x12 (rows 1..8)
    assert crop_box(10, 12, 4, 6) == (1, 0, 8, 12)
    back = restore_frames(video, 10, 12)
    assert tuple(back.shape) == (2, 3, 3, 10, 12)
    inner = by_hand(video, (8, 12))
    torch.testing.assert_close(back[..., 1:9, :], inner)
    torch.testing.assert_close(back[..., :1, :], inner[..., :1, :])
    torch.testing.assert_close(back[..., 9:, :], inner[..., -1:, :])
    torch.testing.assert_close(restore_frames(video, 10, 12, "crop"), back)


def test_restore_crop_of_columns_and_uneven_margins() -> None:
    video = distinct_video(w=4)  # 4x4 output of an 8x11 source: columns 1..8 (1 left, 2 right)
    assert crop_box(8, 11, 4, 4) == (0, 1, 8, 8)
    back = restore_frames(video, 8, 11)
    assert tuple(back.shape) == (2, 3, 3, 8, 11)
    inner = by_hand(video, (8, 8))
    torch.testing.assert_close(back[..., 1:9], inner)
    torch.testing.assert_close(back[..., :1], inner[..., :1])
    torch.testing.assert_close(back[..., 9:], inner[..., -1:].expand(-1, -1, -1, -1, 2))


def test_restore_resize_stretches_the_whole_frame() -> None:
    video = distinct_video()
    back = restore_frames(video, 10, 12, "resize")
    torch.testing.assert_close(back, by_hand(video, (10, 12)))


def test_restore_casts_to_float32() -> None:
    video = distinct_video().to(torch.bfloat16)
    assert restore_frames(video, 10, 12).dtype == torch.float32


# -- pad_to_size ---------------------------------------------------------------------------------
def test_reference_is_fitted_inside_and_centred_on_white() -> None:
    wide = np.full((10, 20, 3), 7, np.uint8)
    out = pad_to_size(wide, 20, 20)  # 5 white rows above, 5 below
    assert out.shape == (20, 20, 3)
    assert (out[:5] == 255).all() and (out[15:] == 255).all() and (out[5:15] == 7).all()
    tall = np.full((20, 10, 3), 7, np.uint8)
    out = pad_to_size(tall, 20, 20)  # 5 white columns left, 5 right
    assert (out[:, :5] == 255).all() and (out[:, 15:] == 255).all() and (out[:, 5:15] == 7).all()
    img = ramp(1, 9, 13)[0]
    expected = ImageOps.pad(Image.fromarray(img), (32, 16), color="white", centering=(0.5, 0.5))
    np.testing.assert_array_equal(pad_to_size(img, 16, 32), np.asarray(expected))


# -- _match_batch ------------------------------------------------------------------------------------
def test_match_batch_repeats_whole_rows() -> None:
    x = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 4)
    assert _match_batch(x, 2) is x
    out = _match_batch(x, 6)
    assert tuple(out.shape) == (6, 3, 4)
    torch.testing.assert_close(out, torch.cat([x, x, x]))
    one = torch.arange(5.0).reshape(1, 5)
    torch.testing.assert_close(_match_batch(one, 3), one.expand(3, 5))
    with pytest.raises(ValueError, match=r"^a batch of 2 cannot be spread over 3 rows$"):
        _match_batch(x, 3)
    three = torch.zeros(3, 2)  # 3 rows, 2 columns: spread over 6 by rows, not columns
    assert tuple(_match_batch(three, 6).shape) == (6, 2)
