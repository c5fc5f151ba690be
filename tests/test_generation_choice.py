"""Stage 2's choice: the VLM picks theme, subtheme and scene for frame 0 from the taxonomy (a choice
the parser checks), ``--themes`` restricts it, and the reference VLM reads frame 0, not the file order."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from sparkle_video.errors import SparkleDataError
from sparkle_video.generation import taxonomy
from sparkle_video.generation.backends.protocols import EditScore, Instruction, SceneChoice
from sparkle_video.generation.backends.qwen_vl import QwenVLM, parse_scene_choice
from sparkle_video.generation.backends.reference import ReferenceVLM, choose_by_look
from sparkle_video.generation.stages import edit_first_frame


def test_parser_accepts_only_scenes_of_the_allowed_themes() -> None:
    reply = (
        '```json\n{"theme": "Time", "subtheme": "night", "scene": "Moonlit beach.", "reason": "dark"}\n```'
    )
    assert parse_scene_choice(reply, ["time", "season"]) == SceneChoice(
        "time", "night: moonlit beach", "dark"
    )
    keyword = '{"theme": "season", "chosen_keyword": "winter: icy coastline"}'
    assert parse_scene_choice(keyword, ["season"]) == SceneChoice("season", "winter: icy coastline")
    assert parse_scene_choice(reply, ["season"]) is None  # theme not allowed
    assert parse_scene_choice('{"theme": "time", "subtheme": "night", "scene": "a disco"}', ["time"]) is None
    assert (
        parse_scene_choice('{"theme": "time", "subtheme": "winter", "scene": "icy coastline"}', ["time"])
        is None
    )
    assert parse_scene_choice("night: moonlit beach", ["time"]) is None  # no JSON


def test_options_text_lists_every_scene_of_the_allowed_themes_only() -> None:
    text = taxonomy.options_text(["time"])
    assert text.splitlines()[0] == "time / dawn: " + "; ".join(
        s.split(": ")[1] for s in taxonomy.scenes("time")[:4]
    )
    assert all(s.split(": ")[1] in text for s in taxonomy.scenes("time"))
    assert "location" not in text and len(text.splitlines()) == len(taxonomy.subthemes("time"))
    with pytest.raises(ValueError, match="unknown theme 'openve3m'"):
        taxonomy.options_text(["openve3m"])


class ScriptedChat:
    def __init__(self, reply: str):
        self.reply, self.asked = reply, []
        self.model = SimpleNamespace(config=SimpleNamespace(model_type="qwen3_vl"))

    def generate(self, chats, *, seed=0, **kw):
        self.asked.extend(text for _, text in chats)
        return [self.reply] * len(chats), [[(32, 32)]] * len(chats)


def test_qwen_vlm_asks_a_constrained_choice_and_refuses_an_invented_one() -> None:
    chat = ScriptedChat('{"theme": "season", "subtheme": "autumn", "scene": "misty pumpkin patch"}')
    vlm = QwenVLM(chat)
    frame = np.zeros((32, 32, 3), np.uint8)
    assert vlm.choose_scene(frame, ["season"]) == SceneChoice("season", "autumn: misty pumpkin patch")
    assert (
        "season / autumn: maple forest in full colour;" in chat.asked[0] and "location" not in chat.asked[0]
    )
    bad = QwenVLM(ScriptedChat('{"theme": "season", "subtheme": "autumn", "scene": "moon base"}'))
    with pytest.raises(SparkleDataError, match=r"the VLM chose no scene of the taxonomy \(season\)"):
        bad.choose_scene(frame, ["season"])


def frame(rgb: tuple[int, int, int]) -> np.ndarray:
    out = np.empty((72, 128, 3), np.uint8)
    out[:] = rgb
    out[20:, 50:78] = (200, 160, 140)  # a subject in the middle: ignored by the choice
    return out


def test_reference_choice_reads_frame0_colours() -> None:
    dark = choose_by_look(frame((15, 20, 45)), taxonomy.THEMES)
    assert (dark.theme, dark.chosen_keyword.split(": ")[0]) == ("time", "night")
    assert "nearest to the night look" in dark.reason
    snow = choose_by_look(frame((228, 233, 240)), ["season"])
    assert snow.chosen_keyword.startswith("winter: ")
    green = choose_by_look(frame((60, 110, 50)), ["location"])
    assert green.chosen_keyword.split(": ")[0] in ("forest", "rural", "waterside")
    # deterministic, restricted to the allowed themes, and the same for the same picture
    assert choose_by_look(frame((15, 20, 45)), ["style"]).theme == "style"
    assert choose_by_look(frame((15, 20, 45)), taxonomy.THEMES) == dark
    picks = {choose_by_look(frame((40 + 9 * i, 90, 140)), ["location"]).chosen_keyword for i in range(12)}
    assert len(picks) > 1  # similar frames do not all get the same scene


class OffTaxonomyVLM(ReferenceVLM):
    def choose_scene(self, frame0, themes, *, seed=0):
        return SceneChoice("location", "moon: crater rim")


class Editor:
    def edit(self, image, prompt, *, seed=0):
        return image


class Scorer:
    def score(self, source, edited, prompt):
        return EditScore(9.0, 9.0, 9.0, 9.0)


def test_stage2_composes_for_the_chosen_scene_and_refuses_an_invented_one() -> None:
    result = edit_first_frame(frame((15, 20, 45)), ["time"], ReferenceVLM(), Editor(), Scorer(), 8.0)
    assert result.choice.theme == "time" and result.choice.chosen_keyword.startswith("night: ")
    scene = result.choice.chosen_keyword.split(": ")[1]
    assert isinstance(result.instruction, Instruction) and scene in result.instruction.prompt
    with pytest.raises(
        ValueError, match="the VLM chose 'location' / 'moon: crater rim', not a scene of time"
    ):
        edit_first_frame(frame((15, 20, 45)), ["time"], OffTaxonomyVLM(), Editor(), Scorer(), 8.0)
