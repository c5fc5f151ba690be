"""``convert-checkpoint`` on a bad file: one ``error:`` line naming the file, exit 1, never a traceback,
and a pickle asking for more than tensors is refused, not run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from sparkle_video.pipelines.convert import CheckpointError, load_checkpoint


def _truncated_safetensors(path: Path) -> None:
    save_file({"video_queries": torch.ones(4, 8)}, str(path))
    path.write_bytes(path.read_bytes()[:40])


def _garbage_pth(path: Path) -> None:
    path.write_bytes(b"PK\x03\x04 this is not a torch zip archive at all")


class Payload:
    """A class a weights-only load must never import or build."""

    def __reduce__(self):
        return (print, ("this must never run",))


def _pickle_with_an_object(path: Path) -> None:
    torch.save({"a": torch.ones(1), "evil": Payload()}, path)


def _non_tensors(path: Path) -> None:
    torch.save({"a": torch.ones(1), "step": 5}, path)


CASES = [
    ("cut.safetensors", _truncated_safetensors, "is not a readable safetensors file (SafetensorError: "),
    ("garbage.pth", _garbage_pth, "is not a readable weights-only torch checkpoint (RuntimeError: "),
    (
        "object.pt",
        _pickle_with_an_object,
        "is not a readable weights-only torch checkpoint (UnpicklingError: Unsupported global: GLOBAL print was not an allowed global by default)",
    ),
    ("mixed.pth", _non_tensors, "does not hold a flat name -> tensor state dict"),
    ("missing.safetensors", None, ": no such checkpoint file"),
]


@pytest.mark.parametrize("name, make, expected", CASES)
def test_bad_checkpoint_is_one_line_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture, name: str, make, expected: str
) -> None:
    from sparkle_video.cli import main

    ckpt = tmp_path / name
    if make is not None:
        make(ckpt)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(ckpt)
    assert str(err.value).startswith(str(ckpt)) and expected in str(err.value) and "\n" not in str(err.value)
    argv = ["convert-checkpoint", "--ckpt", str(ckpt), "--base-transformer", str(tmp_path / "t")]
    argv += ["--base-vae", str(tmp_path / "v"), "--mllm", str(tmp_path / "m"), "--out", str(tmp_path / "out")]
    assert main(argv) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {ckpt}") and expected in lines[0]
    assert not (tmp_path / "out").exists() and "this must never run" not in captured.out
