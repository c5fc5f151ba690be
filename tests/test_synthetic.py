"""The procedural pairs behave like Sparkle pairs: static source background, moving edited one."""

from __future__ import annotations

import numpy as np

from sparkle_video import qwen_box_to_pixels
from sparkle_video.data.synthetic import (
    anchor_frames,
    canny_edges,
    make_demo_records,
    make_pair,
    mask_qwen_box,
)


def test_pair_properties() -> None:
    p = make_pair(7, num_frames=9, height=64, width=96)
    assert p.source.shape == p.edited.shape == p.background.shape == (9, 64, 96, 3)
    assert p.mask.shape == (9, 64, 96) and p.mask.dtype == bool and 0 < p.mask.mean() < 0.5
    bg = ~p.mask[0] & ~p.mask[-1]
    assert (
        np.abs(p.source[0].astype(int) - p.source[-1].astype(int))[bg].max() == 0
    )  # static source background
    assert (
        np.abs(p.edited[0].astype(int) - p.edited[-1].astype(int))[bg].mean() > 5
    )  # lively edited background
    assert not np.array_equal(p.mask[0], p.mask[-1])  # the foreground moves
    np.testing.assert_array_equal(p.edited[3][~p.mask[3]], p.background[3][~p.mask[3]])
    x1, y1, x2, y2 = qwen_box_to_pixels(p.box_r1, 96, 64)
    ys, xs = np.nonzero(p.mask[0])
    assert (
        abs(x1 - xs.min()) <= 1
        and abs(x2 - xs.max() - 1) <= 1
        and abs(y1 - ys.min()) <= 1
        and abs(y2 - ys.max() - 1) <= 1
    )
    np.testing.assert_array_equal(make_pair(7, num_frames=9, height=64, width=96).edited, p.edited)


def test_demo_records() -> None:
    recs = make_demo_records(num_per_theme=3, num_frames=5, height=32, width=48)
    assert [r.theme for r in recs].count("style") == 3 and len({r.id for r in recs}) == 12
    loc = [r for r in recs if r.theme == "location"]
    assert {r.chosen_keyword.split(": ")[0] for r in loc} == {"urban", "rural"}


def test_fused_canny_takes_foreground_from_source_and_the_rest_from_background() -> None:
    p = make_pair(5, num_frames=5, height=64, width=96)
    canny = p.canny()
    assert canny.shape == (5, 64, 96, 3) and canny.dtype == np.uint8
    assert set(np.unique(canny)) <= {0, 255}
    src_edges, bg_edges = canny_edges(p.source), canny_edges(p.background)
    np.testing.assert_array_equal(canny[..., 0][p.mask], src_edges[p.mask])
    np.testing.assert_array_equal(canny[..., 0][~p.mask], bg_edges[~p.mask])
    assert (canny[..., 0][~p.mask] > 0).any()  # the new background has edges of its own
    assert not np.array_equal(canny[0], canny[-1])  # and they move


def test_grounding_boxes_follow_the_mask() -> None:
    assert anchor_frames(17, fps=16) == [0, 8, 16] and anchor_frames(5, fps=2) == [0, 1, 2, 3, 4]
    mask = np.zeros((10, 20), bool)
    mask[2:6, 5:15] = True
    assert mask_qwen_box(mask) == (250, 200, 750, 600)
    assert mask_qwen_box(np.zeros((4, 4), bool)) == (0, 0, 0, 0)
    rec = make_demo_records(num_per_theme=1, themes=("time",), num_frames=9, height=32, width=48, fps=8)[0]
    assert rec.grounding_r2["frame_indices"] == [0, 4, 8] and rec.fps == 8
    boxes = [objs[0]["bbox_2d"] for objs in rec.grounding_r2["frame_objects"]]
    assert boxes[0] == rec.grounding_r1["objects"][0]["bbox_2d"] and boxes[0] != boxes[-1]
    assert rec.canny.shape == rec.source.shape
    np.testing.assert_array_equal(rec.edited_frame0_foreground_removed, rec.background[0])
