"""Backend registry and config files: lazy registration, building, validation by name."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from sparkle_video.generation.backends import protocols
from sparkle_video.generation.backends.protocols import ROLES, EditScore, Resources
from sparkle_video.generation.backends.registry import (
    available_backends,
    backend_resources,
    build_backend,
    load_backend_config,
    register_backend,
)


@dataclass
class GpuScorer:
    """A stand-in model backend: declares a GPU and takes one option."""

    resources: ClassVar[Resources] = Resources(num_gpus=1.0, num_cpus=2.0, gpu_memory_gb=20.0)
    bias: float = 0.0

    @classmethod
    def from_config(cls, options):
        return cls(**options)

    def score(self, source, edited, prompt):
        return EditScore(9.0 + self.bias, 9.0, 9.0, 9.0)


def test_reference_config_builds_every_role() -> None:
    config = load_backend_config("reference")
    assert set(config.backends) == set(ROLES)
    assert (config.thresholds.frame0, config.thresholds.erase, config.thresholds.final) == (8.0, 8.5, 8.0)
    for role, proto in ROLES.items():
        assert isinstance(config.build(role), proto)
        assert config.resources(role).num_gpus == 0.0


def test_lazy_target_is_imported_only_when_built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = tmp_path / "lazy_scorer_mod.py"
    module.write_text(
        "from sparkle_video.generation.backends.protocols import EditScore, Resources\n"
        "class Lazy:\n"
        "    resources = Resources(num_gpus=0.5)\n"
        "    def __init__(self, *, level: float = 1.0):\n"
        "        self.level = level\n"
        "    @classmethod\n"
        "    def from_config(cls, options):\n"
        "        return cls(**options)\n"
        "    def score(self, source, edited, prompt):\n"
        "        return EditScore(self.level, 0, 0, self.level)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    register_backend("scorer", "lazy-test", "lazy_scorer_mod:Lazy", replace=True)
    assert "lazy_scorer_mod" not in sys.modules
    assert "lazy-test" in available_backends("scorer")
    scorer = build_backend("scorer", "lazy-test", {"level": 3.0})
    assert scorer.score(None, None, "").overall == 3.0
    assert backend_resources("scorer", "lazy-test").num_gpus == 0.5
    with pytest.raises(ValueError, match=r"unknown option .levle..*options: level"):
        build_backend("scorer", "lazy-test", {"levle": 3.0})


def test_register_refuses_bad_targets_and_duplicates() -> None:
    register_backend("scorer", "gpu-test", GpuScorer, replace=True)
    with pytest.raises(ValueError, match="already registered"):
        register_backend("scorer", "gpu-test", "x.y:Z")
    with pytest.raises(ValueError, match="unknown role 'judge'"):
        register_backend("judge", "x", GpuScorer)
    with pytest.raises(ValueError, match=r"module\.path:ClassName"):
        register_backend("scorer", "bad", "no_colon")
    with pytest.raises(TypeError, match="does not implement EditScorer"):
        register_backend("scorer", "wrong-role", protocols.Resources, replace=True)
        build_backend("scorer", "wrong-role", {})


def test_user_yaml_and_toml_configs(tmp_path: Path) -> None:
    register_backend("scorer", "gpu-test", GpuScorer, replace=True)
    yaml_file = tmp_path / "mine.yaml"
    yaml_file.write_text(
        "scorer: {backend: gpu-test, bias: 0.5, resources: {num_gpus: 2}}\n"
        "vlm: reference\n"
        "thresholds: {final: 7.5}\n"
        "pipeline: {seed: 3, num_frames: 49, camera: {max_translation: 0.6}}\n"
    )
    config = load_backend_config(yaml_file)
    assert config.backends["scorer"].options == {"bias": 0.5}
    assert config.resources("scorer").num_gpus == 2.0  # the override wins over the class's 1.0
    assert config.thresholds.final == 7.5 and config.thresholds.erase == 8.5
    assert config.pipeline.seed == 3 and config.pipeline.num_frames == 49
    assert config.pipeline.camera.max_translation == 0.6
    assert config.build("scorer").score(None, None, "").prompt_following == 9.5
    assert config.backends["segmenter"].backend == "reference"  # roles left out use the reference

    toml_file = tmp_path / "mine.toml"
    toml_file.write_text('[scorer]\nbackend = "gpu-test"\n[thresholds]\nframe0 = 9.0\n')
    config = load_backend_config(toml_file)
    assert config.thresholds.frame0 == 9.0
    assert config.resources("scorer") == GpuScorer.resources
    # to_dict round-trips (the Ray executor ships configs to workers this way)
    from sparkle_video.generation.backends.registry import backend_config_from_mapping

    assert backend_config_from_mapping(config.to_dict()).to_dict() == config.to_dict()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("judge: {backend: reference}\n", "unknown key 'judge'"),
        ("vlm: {backend: qwen-nonexistent}\n", "unknown vlm backend 'qwen-nonexistent'"),
        ("thresholds: {frame1: 8}\n", "unknown key 'frame1' in thresholds"),
        ("pipeline: {num_frame: 8}\n", "unknown key 'num_frame' in pipeline"),
        ("pipeline: {camera: {max_shift: 1}}\n", "unknown key 'max_shift' in pipeline.camera"),
        ("vlm: {backend: reference, resources: {gpus: 1}}\n", "unknown key 'gpus' in vlm.resources"),
        ("vlm: {model: x}\n", "needs a mapping with a 'backend' name"),
        ("pipeline: {seed: abc}\n", "pipeline.seed must be a number"),
        ("vlm: [unclosed\n", "cannot parse backend config"),
    ],
)
def test_bad_configs_are_refused_by_name(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_backend_config(path)


def test_unknown_option_key_is_named_at_check_time(tmp_path: Path) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text("segmenter: {backend: reference, work_widht: 128}\n")
    config = load_backend_config(path)  # model modules are not imported just to read a config
    with pytest.raises(ValueError, match="unknown option 'work_widht' for segmenter backend 'reference'"):
        config.check()
    with pytest.raises(ValueError, match="not a file and not a shipped config"):
        load_backend_config("no-such-config")
    with pytest.raises(ValueError, match="not found"):
        load_backend_config(tmp_path / "missing.yaml")


def test_reference_backends_follow_the_protocol_shapes() -> None:
    from sparkle_video.data.synthetic import make_pair

    pair = make_pair(1, 17, 96, 160)
    config = load_backend_config("reference")
    vlm, seg = config.build("vlm"), config.build("segmenter")
    objects = vlm.ground_clip(pair.source)
    assert objects and objects[0].label == "moving subject" and len(objects[0].bbox_2d) == 4
    found = vlm.relocate([pair.source[0], pair.source[8]], ["moving subject", "moving subject 2"])
    assert len(found) == 2 and all(len(f) == 2 for f in found)
    assert found[0][1].bbox_2d == ()  # only one thing moves: the second label is not found
    masks = seg.segment(pair.source, 0, [(40, 20, 100, 90)])
    assert masks.shape == (1, 17, 96, 160) and masks.dtype == bool
    video = config.build("image_to_video").animate(
        pair.source[0], "Move the subject to a sandy beach at low tide", num_frames=9
    )
    assert video.shape == (9, 96, 160, 3) and video.dtype == np.uint8
    assert not np.array_equal(video[0], video[8])  # the background moves
