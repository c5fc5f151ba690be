"""One call per generation role: the tiny random-weight model backend against the reference backend.

For each role the same call is timed on both backends in the same run (median of ``--repeats`` after a
warm-up), on a synthetic clip of ``--frames`` frames at ``--height`` x ``--width``:

  vlm             ground(frame 0)                       qwen-vl (tiny Qwen3-VL, 16 new tokens)
  image_editor    edit(frame 0) and erase(frame 0, box) flux2-klein (tiny, 2 steps)
  image_to_video  animate(frame 0, frames)              wan-i2v (tiny, two experts, 2 steps)
  segmenter       segment(clip, middle anchor, 2 boxes) sam3 (tiny tracker, both directions)
  control_video   generate(control inputs)              wan-vace (tiny, two experts, 2 steps)
  scorer          score(source, edited, prompt)         editscore (tiny Qwen2.5-VL; replies scripted to
                                                        the score format so one call = two generations)

The ratio ``model / reference`` says what the model path's plumbing costs over the classical backend
at toy size; it is not a statement about real checkpoints (those need a GPU).

Usage: python benchmarks/generation_backends.py [--repeats 3] [--frames 17] [--threads 1] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import platform
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from timing import median_time

from sparkle_video.data.synthetic import make_pair
from sparkle_video.generation.backends.protocols import ControlInputs
from sparkle_video.generation.backends.registry import build_backend, load_backend_config


def model_backends() -> dict[str, str]:
    """Role -> the model backend the ``paper`` config uses for it (each is timed here in its tiny form)."""
    return {role: spec.backend for role, spec in load_backend_config("paper").backends.items()}


def role_calls(
    role: str, backend: Any, clip: np.ndarray, edited: np.ndarray
) -> dict[str, Callable[[], object]]:
    """The calls timed for ``role`` (name -> zero-argument function)."""
    t, h, w = clip.shape[:3]
    frame0 = clip[0]
    box = (w * 0.2, h * 0.2, w * 0.6, h * 0.9)
    if role == "vlm":
        return {"ground": lambda: backend.ground(frame0)}
    if role == "image_editor":
        mask = np.zeros((h, w), bool)
        mask[int(box[1]) : int(box[3]), int(box[0]) : int(box[2])] = True
        return {
            "edit": lambda: backend.edit(frame0, "a snowy street", seed=0),
            "erase": lambda: backend.erase(frame0, mask, seed=0),
        }
    if role == "image_to_video":
        return {"animate": lambda: backend.animate(frame0, "snow falls", num_frames=t, seed=0)}
    if role == "segmenter":
        boxes = [box, (w * 0.5, h * 0.1, w * 0.9, h * 0.5)]
        return {"segment": lambda: backend.segment(clip, t // 2, boxes)}
    if role == "control_video":
        inputs = ControlInputs("a snowy street", edited, clip, clip, np.zeros((t, h, w), bool), clip)
        return {"generate": lambda: backend.generate(inputs, seed=0)}
    if role == "scorer":
        return {"score": lambda: backend.score(frame0, edited, "a snowy street")}
    raise ValueError(role)


def scripted_scores(scorer: Any) -> None:
    """Let the tiny scorer generate as usual, then answer in the score format (random text never parses)."""
    generate = scorer.chat.generate

    def run(chats, **kwargs):
        _, sizes = generate(chats, **kwargs)
        return ['{"reasoning": "ok", "score": [20, 20]}'] * len(chats), sizes

    scorer.chat.generate = run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--height", type=int, default=112)
    parser.add_argument("--width", type=int, default=192)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (tiny models: 1 is fastest)"
    )
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    pair = make_pair(0, args.frames, args.height, args.width)
    clip, edited = pair.source, pair.edited[0]
    rows = []
    for role, name in model_backends().items():
        reference = build_backend(role, "reference", {})
        model = build_backend(role, name, {"tiny": True})
        if role == "scorer":
            scripted_scores(model)
        ref_calls, model_calls = (
            role_calls(role, reference, clip, edited),
            role_calls(role, model, clip, edited),
        )
        for call in model_calls:
            ref_s = median_time(ref_calls[call], args.repeats)
            model_s = median_time(model_calls[call], args.repeats)
            rows.append(
                {
                    "role": role,
                    "call": call,
                    "backend": name,
                    "model_s": model_s,
                    "reference_s": ref_s,
                    "ratio": model_s / ref_s if ref_s > 0 else float("inf"),
                }
            )
            print(
                f"{role:15} {call:9} {name:12} {model_s * 1000:9.1f} ms   reference {ref_s * 1000:8.1f} ms"
                f"   ratio {rows[-1]['ratio']:6.1f}x",
                flush=True,
            )
    info = {
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": args.threads,
        "clip": [args.frames, args.height, args.width],
        "repeats": args.repeats,
    }
    print(json.dumps(info))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"info": info, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
