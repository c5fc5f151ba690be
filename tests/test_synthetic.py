"""The procedural pairs behave like Sparkle pairs: static source background, moving edited one."""

from __future__ import annotations

import numpy as np

from sparkle_video import qwen_box_to_pixels
from sparkle_video.synthetic import make_demo_records, make_pair


def test_pair_properties() -> None:
    p = make_pair(7, num_frames=9, height=64, width=96)
    assert p.source.shape == p.edited.shape == p.background.shape == (9, 64, 96, 3)
    assert p.mask.shape == (9, 64, 96) and p.mask.dtype == bool and 0 < p.mask.mean() < 0.5
    bg = ~p.mask[0] & ~p.mask[-1]
    assert np.abs(p.source[0].astype(int) - p.source[-1].astype(int))[bg].max() == 0  # static source background
    assert np.abs(p.edited[0].astype(int) - p.edited[-1].astype(int))[bg].mean() > 5  # lively edited background
    assert not np.array_equal(p.mask[0], p.mask[-1])  # the foreground moves
    np.testing.assert_array_equal(p.edited[3][~p.mask[3]], p.background[3][~p.mask[3]])
    x1, y1, x2, y2 = qwen_box_to_pixels(p.box_r1, 96, 64)
    ys, xs = np.nonzero(p.mask[0])
    assert abs(x1 - xs.min()) <= 1 and abs(x2 - xs.max() - 1) <= 1 and abs(y1 - ys.min()) <= 1 and abs(y2 - ys.max() - 1) <= 1
    np.testing.assert_array_equal(make_pair(7, num_frames=9, height=64, width=96).edited, p.edited)


def test_demo_records() -> None:
    recs = make_demo_records(num_per_theme=3, num_frames=5, height=32, width=48)
    assert [r.theme for r in recs].count("style") == 3 and len({r.id for r in recs}) == 12
    loc = [r for r in recs if r.theme == "location"]
    assert {r.chosen_keyword.split(": ")[0] for r in loc} == {"urban", "rural"}
