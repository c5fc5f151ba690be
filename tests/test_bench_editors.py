"""Any editor on the bench: dispatch on model_index.json, a tiny LucyEditPipeline, --editor module:function."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from bench_fixtures import write_bench

from sparkle_video.bench.editors import (
    LUCY_SIZE,
    DiffusersVideoEditor,
    PipelineEditor,
    import_editor,
    model_editor,
    orientation_size,
    read_model_index,
)
from sparkle_video.bench.results import find_edited_files
from sparkle_video.cli import main
from sparkle_video.data.video import VideoReader

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")


def tiny_lucy_pipeline(seed: int = 0):
    """A random-weight ``LucyEditPipeline``: one-layer UMT5, char-level tokenizer, tiny Wan DiT and VAE.

    The DiT sees the noisy latents and the source's latents concatenated on channels (Lucy's
    conditioning), so its input has twice the VAE's latent channels.
    """
    from diffusers import LucyEditPipeline, WanTransformer3DModel

    from sparkle_video.generation.backends.model_support import tiny_chat_tokenizer
    from sparkle_video.generation.backends.wan_i2v import (
        TINY_WAN_Z_DIM,
        tiny_wan_text_encoder,
        tiny_wan_vae,
        wan_flow_scheduler,
    )

    torch.manual_seed(seed)
    tokenizer = tiny_chat_tokenizer()
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=2 * TINY_WAN_Z_DIM,
        out_channels=TINY_WAN_Z_DIM,
        text_dim=16,
        freq_dim=16,
        ffn_dim=32,
        num_layers=1,
        rope_max_seq_len=32,
    )
    return LucyEditPipeline(
        tokenizer=tokenizer,
        text_encoder=tiny_wan_text_encoder(tokenizer),
        vae=tiny_wan_vae(TINY_WAN_Z_DIM),
        scheduler=wan_flow_scheduler(),
        transformer=transformer,
    )


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("bench")
    return root, write_bench(root, {"location": 1, "style": 1}, frames=9, height=64, width=96)


@pytest.fixture(scope="module")
def lucy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("lucy")
    tiny_lucy_pipeline().save_pretrained(out)
    return out


def test_model_index_dispatch(lucy_dir: Path, tmp_path: Path) -> None:
    assert read_model_index(str(lucy_dir))["_class_name"] == "LucyEditPipeline"
    editor = model_editor(str(lucy_dir), dtype="float32", device="cpu")
    assert isinstance(editor, DiffusersVideoEditor) and editor.name == "LucyEditPipeline"
    assert editor.pipe._progress_bar_config == {"disable": True}  # per-step bars only with -v
    # Lucy's own defaults unless told otherwise
    assert (editor.size, editor.num_inference_steps, editor.guidance_scale) == (LUCY_SIZE, 50, 5.0)
    told = model_editor(str(lucy_dir), dtype="float32", device="cpu", num_inference_steps=2, size=(64, 96))
    assert (told.size, told.num_inference_steps) == ((64, 96), 2)
    with pytest.raises(FileNotFoundError, match=r"no model_index\.json"):
        read_model_index(str(tmp_path))
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "NoSuchPipeline"}))
    with pytest.raises(ValueError, match=r"NoSuchPipeline.*--editor module:function"):
        model_editor(str(tmp_path), dtype="float32", device="cpu")
    with pytest.raises(ValueError, match="unknown torch dtype"):
        model_editor(str(lucy_dir), dtype="float33", device="cpu")


def test_sparkle_folder_gets_the_sparkle_editor(tmp_path: Path) -> None:
    from sparkle_video.pipelines import tiny_pipeline

    tiny_pipeline().save_pretrained(tmp_path)
    editor = model_editor(
        str(tmp_path), dtype="float32", device="cpu", num_inference_steps=3, seed=7, size=(64, 96)
    )
    assert isinstance(editor, PipelineEditor) and editor.seed == 7
    assert editor.call_kwargs == {"num_inference_steps": 3, "height": 64, "width": 96}


def test_orientation_and_working_size() -> None:
    assert orientation_size(720, 1280, LUCY_SIZE) == (480, 832)
    assert orientation_size(1280, 720, LUCY_SIZE) == (832, 480)

    class Pipe:
        def __call__(self, video, prompt, num_frames=81, height=480, width=832): ...

    assert DiffusersVideoEditor(Pipe(), max_pixels=1280 * 720).working_size(720, 1280) == (704, 1280)
    assert DiffusersVideoEditor(Pipe()).working_size(720, 1280) is None

    class NotAnEditor:
        def __call__(self, image, prompt): ...

    with pytest.raises(TypeError, match="no video \\+ prompt"):
        DiffusersVideoEditor(NotAnEditor())


def test_generic_editor_passes_only_declared_arguments(bench: tuple[Path, dict]) -> None:
    _, info = bench
    seen: dict = {}

    class Pipe:
        def __call__(
            self,
            video,
            prompt,
            num_frames=16,
            num_inference_steps=50,
            output_type="pil",
            height=None,
            width=None,
        ):
            seen.update(video=video, prompt=prompt, num_frames=num_frames, steps=num_inference_steps)
            seen.update(output_type=output_type, size=(height, width))

            out = type("Out", (), {})()
            out.frames = [np.full((num_frames, 32, 48, 3), 0.5, np.float32)]
            return out

    editor = DiffusersVideoEditor(Pipe(), num_inference_steps=3, guidance_scale=4.0, size=(32, 48))
    out = editor(VideoReader(str(next(iter(info.values()))["path"])), "snow")
    assert out.shape == (9, 32, 48, 3) and out.dtype == np.uint8 and int(out[0, 0, 0, 0]) == 128
    assert seen["num_frames"] == 9 and seen["steps"] == 3 and seen["output_type"] == "np"
    assert seen["size"] == (32, 48) and seen["prompt"] == "snow"
    assert len(seen["video"]) == 9 and seen["video"][0].size == (96, 64)  # PIL frames at source size


def test_tiny_lucy_runs_through_bench_infer(
    bench: tuple[Path, dict], lucy_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    root, info = bench
    out = tmp_path / "lucy_results"
    argv = ["bench", "infer", "--bench", str(root), "--model", str(lucy_dir), "--out", str(out)]
    argv += ["--steps", "2", "--height", "32", "--width", "48", "--dtype", "float32", "--device", "cpu"]
    assert main(argv) == 0
    assert "2 written" in capsys.readouterr().out
    files = find_edited_files(out)
    assert len(files) == len(info)
    for sid, row in info.items():
        path = next(p for p in files if Path(p).name == f"{sid}_edited.mp4")
        assert Path(path).parent.parent.name == row["theme"]  # {theme}/{subtheme}---{scene}/{id}_edited.mp4
        video = VideoReader(str(out / path))
        assert (video.num_frames, video.height, video.width) == (9, 32, 48)


def test_editor_module_function(bench: tuple[Path, dict], tmp_path: Path, monkeypatch, capsys) -> None:
    root, _ = bench
    (tmp_path / "my_editor.py").write_text(
        textwrap.dedent(
            """
            import numpy as np

            def invert(video, prompt):
                return 255 - video.get_frames()

            class Grey:
                def __call__(self, video, prompt):
                    return np.full((5, video.height, video.width, 3), 0.5)
            """
        )
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "my_editor", raising=False)
    assert callable(import_editor("my_editor:invert"))
    out = tmp_path / "res"
    assert (
        main(["bench", "infer", "--bench", str(root), "--editor", "my_editor:Grey", "--out", str(out)]) == 0
    )
    assert "2 written" in capsys.readouterr().out
    for path in find_edited_files(out):
        frames = VideoReader(str(out / path)).get_frames()
        assert frames.shape[0] == 5 and abs(float(frames.mean()) - 128) < 3
    for bad, message in [
        ("my_editor", "module:function"),
        ("no_such_module_xyz:f", "cannot import"),
        ("my_editor:missing", "has no missing"),
    ]:
        with pytest.raises(ValueError, match=message):
            import_editor(bad)
    assert (
        main(["bench", "infer", "--bench", str(root), "--editor", "my_editor:missing", "--out", str(out)])
        == 2
    )
    assert "error: --editor my_editor:missing" in capsys.readouterr().err
