"""The shipped ``paper`` and ``tiny`` configs and the model backends' registration and option checks."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sparkle_video.generation.backends.protocols import ROLES, Resources
from sparkle_video.generation.backends.registry import (
    available_backends,
    backend_class,
    backend_config_from_mapping,
    backend_resources,
    load_backend_config,
)

MODEL_BACKENDS = {
    "vlm": "qwen-vl",
    "image_editor": "flux2-klein",
    "image_to_video": "wan-i2v",
    "segmenter": "sam3",
    "control_video": "wan-vace",
    "scorer": "editscore",
}


def test_model_backends_are_registered_with_gpu_resources():
    for role, name in MODEL_BACKENDS.items():
        assert name in available_backends(role)
        cls = backend_class(role, name)
        assert callable(cls.from_config) and callable(cls.tiny)
        resources = backend_resources(role, name)
        assert isinstance(resources, Resources) and resources.num_gpus >= 1 and resources.gpu_memory_gb > 0
        # each class implements its role's methods
        for method in (m for m in vars(ROLES[role]) if not m.startswith("_")):
            assert callable(getattr(cls, method)), (role, method)


def test_paper_config_is_the_papers_choice():
    config = load_backend_config("paper")
    assert {role: spec.backend for role, spec in config.backends.items()} == MODEL_BACKENDS
    assert (config.thresholds.frame0, config.thresholds.erase, config.thresholds.final) == (8.0, 8.5, 8.0)
    opts = {role: spec.options for role, spec in config.backends.items()}
    assert opts["vlm"]["model_id"].startswith("Qwen/Qwen3-VL")
    assert opts["image_editor"]["model_id"] == "black-forest-labs/FLUX.2-klein-9B"
    assert opts["image_to_video"]["model_id"] == "Wan-AI/Wan2.2-I2V-A14B-Diffusers"
    assert opts["segmenter"]["model_id"] == "facebook/sam3"
    assert "VACE" in opts["control_video"]["model_id"]
    assert opts["scorer"]["adapter_id"] == "EditScore/EditScore-7B"
    assert config.pipeline.fine_camera_check and config.pipeline.final_frame_indices == (1, 26, 51, 76)
    for role in ROLES:
        assert config.resources(role).num_gpus == 1
    config.check()  # every option is one its backend takes


def test_reading_the_paper_config_imports_no_model_library():
    code = (
        "import sys, json\n"
        "from sparkle_video.generation.backends.registry import load_backend_config\n"
        "load_backend_config('paper').check()\n"
        "print(json.dumps([m for m in ('torch', 'diffusers', 'transformers', 'peft') if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_unknown_option_is_refused_by_name():
    config = backend_config_from_mapping({"segmenter": {"backend": "sam3", "model_id": "x", "num_steps": 3}})
    with pytest.raises(ValueError, match="'num_steps'"):
        config.check()
    for role, name in MODEL_BACKENDS.items():
        with pytest.raises(ValueError, match="'bogus'"):
            backend_class(role, name).from_config({"tiny": True, "bogus": 1})
