"""Apply each bug that once shipped unnoticed (or was found by a mutation probe) and check the tests fail.

Every entry is a one-place edit of the source (``old`` must occur exactly once) and the test files that
pin the behaviour. For each, a copy of ``src/`` gets the edit and the named tests run against it in a
subprocess; the bug must make them fail. The unmodified tests are run first and must pass, so a
failure is the bug's doing. Not part of ``make test`` (a few minutes); run it with ``make known-bugs``
after changing a pinned module or its tests.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PIPE = "sparkle_video/pipelines/pipeline_sparkle_edit.py"
MATH = ("tests/test_pipeline_math.py", "tests/test_pipeline_blocks.py")
JUDGE = ("tests/test_bench_judge.py", "tests/test_judge_units.py", "tests/test_rubric.py")


@dataclass(frozen=True)
class KnownBug:
    name: str
    file: str  # under src/
    old: str
    new: str
    tests: tuple[str, ...]


BUGS: tuple[KnownBug, ...] = (
    KnownBug(
        "Euler step given the negated velocity",
        PIPE,
        "self.scheduler.step(pred, t,",
        "self.scheduler.step(-pred, t,",
        MATH,
    ),
    KnownBug(
        "guidance branches swapped",
        PIPE,
        "pred = uncond + guidance_scale * (cond - uncond)",
        "pred = cond + guidance_scale * (uncond - cond)",
        MATH,
    ),
    KnownBug(
        "latent normalisation inverted on encode",
        PIPE,
        "return (latents - mean) / std",
        "return latents * std + mean",
        MATH,
    ),
    KnownBug(
        "latent normalisation inverted on decode",
        PIPE,
        "z = latents.float() * std + mean",
        "z = (latents.float() - mean) / std",
        MATH,
    ),
    KnownBug(
        "reference frame dropped from the wrong end",
        PIPE,
        "pred = pred[:, :, 1:] if pad_first else pred[:, :, :-1]",
        "pred = pred[:, :, :-1] if pad_first else pred[:, :, 1:]",
        MATH,
    ),
    KnownBug(
        "DiT self-attention key and value swapped in conversion",
        "sparkle_video/pipelines/convert.py",
        '"self_attn.k": "attn1.to_k",\n    "self_attn.v": "attn1.to_v",',
        '"self_attn.k": "attn1.to_v",\n    "self_attn.v": "attn1.to_k",',
        ("tests/test_convert.py", "tests/test_convert_units.py"),
    ),
    KnownBug(
        "DiT cross-attention key and value swapped in conversion",
        "sparkle_video/pipelines/convert.py",
        '"cross_attn.k": "attn2.to_k",\n    "cross_attn.v": "attn2.to_v",',
        '"cross_attn.k": "attn2.to_v",\n    "cross_attn.v": "attn2.to_k",',
        ("tests/test_convert.py", "tests/test_convert_units.py"),
    ),
    KnownBug(
        "a dimension stated twice keeps the first value",
        "sparkle_video/bench/rubric.py",
        "found[name] = value  # a later line",
        "found.setdefault(name, value)  # a later line",
        JUDGE,
    ),
    KnownBug(
        "macro row weighted by theme sample counts",
        "sparkle_video/bench/judge.py",
        "macro[key] = sum(t[key] for t in themes.values()) / len(themes)",
        "macro[key] = sum(t[key] * t['count'] for t in themes.values()) / sum(counts.values())",
        (*JUDGE, "tests/test_bench_official.py"),
    ),
    KnownBug(
        "one judge attempt too many",
        "sparkle_video/bench/judge.py",
        "for attempt in range(max_attempts):",
        "for attempt in range(max_attempts + 1):",
        JUDGE,
    ),
    KnownBug(
        "one judge attempt too few",
        "sparkle_video/bench/judge.py",
        "for attempt in range(max_attempts):",
        "for attempt in range(max_attempts - 1):",
        JUDGE,
    ),
    KnownBug(
        "background motion left at the working width",
        "sparkle_video/bench/metrics.py",
        "return float(mag[bg].mean() * REFERENCE_WIDTH / width)",
        "return float(mag[bg].mean())",
        ("tests/test_bench_metrics.py", "tests/test_metrics_units.py"),
    ),
    KnownBug(
        "background motion scaled the wrong way",
        "sparkle_video/bench/metrics.py",
        "return float(mag[bg].mean() * REFERENCE_WIDTH / width)",
        "return float(mag[bg].mean() * width / REFERENCE_WIDTH)",
        ("tests/test_bench_metrics.py", "tests/test_metrics_units.py"),
    ),
    KnownBug(
        "packed masks read in little-endian bit order",
        "sparkle_video/data/masks.py",
        "bits = np.unpackbits(np.asarray(mask, dtype=np.uint8))",
        'bits = np.unpackbits(np.asarray(mask, dtype=np.uint8), bitorder="little")',
        ("tests/test_masks.py",),
    ),
    KnownBug(
        "masks packed in Fortran order",
        "sparkle_video/data/masks.py",
        "np.packbits(arr.astype(bool).reshape(-1))",
        'np.packbits(arr.astype(bool).reshape(-1, order="F"))',
        ("tests/test_masks.py",),
    ),
    KnownBug(
        "'..' refused only as the first path component",
        "sparkle_video/data/layout.py",
        'if ".." in parts:',
        'if parts[0] == "..":',
        ("tests/test_load_errors.py", "tests/test_layout.py", "tests/test_shards.py"),
    ),
    KnownBug(
        "a CSV repeating an id is accepted",
        "sparkle_video/data/records.py",
        "if sid in seen:\n                raise",
        "if sid in seen and False:\n                raise",
        ("tests/test_records.py", "tests/test_load_errors.py"),
    ),
    KnownBug(
        "unsorted frame indices returned in decoding order",
        "sparkle_video/data/video.py",
        "if len(distinct) == len(wanted) and distinct == wanted:",
        "if len(distinct) == len(wanted):",
        ("tests/test_video.py",),
    ),
    KnownBug(
        "video encoded straight to the final path",
        "sparkle_video/data/video.py",
        "        target = tmp\n",
        "        target = final\n",
        ("tests/test_writing_atomic.py", "tests/test_video.py"),
    ),
    KnownBug(
        "temporary file of a failed encode left behind",
        "sparkle_video/data/video.py",
        "        if tmp is not None and os.path.exists(tmp):\n            os.remove(tmp)",
        "        pass",
        ("tests/test_writing_atomic.py", "tests/test_video.py"),
    ),
    KnownBug(
        "bench infer skips an existing zero-byte result",
        "sparkle_video/bench/runner.py",
        "if target.is_file() and target.stat().st_size > 0 and not overwrite:",
        "if target.is_file() and not overwrite:",
        ("tests/test_writing_atomic.py", "tests/test_bench_runner.py"),
    ),
    KnownBug(
        "a write followed a symlink out of the output folder",
        "sparkle_video/safe_write.py",
        "if resolved != base and base not in resolved.parents:",
        "if False:",
        ("tests/test_safe_write.py",),
    ),
    KnownBug(
        "a full disk in bench infer counted as a failed sample and the run went on",
        "sparkle_video/bench/runner.py",
        "        except SparkleWriteError:  # a full disk or a link out of the folder: every sample would fail\n            raise\n",
        "",
        ("tests/test_enospc.py",),
    ),
    KnownBug(
        "a full-disk temporary file left beside its target",
        "sparkle_video/safe_write.py",
        "            os.unlink(tmp)",
        "            pass",
        ("tests/test_enospc.py",),
    ),
    KnownBug(
        "an allowed --lr change on resume recorded but not applied",
        "sparkle_video/training/loop.py",
        "            self._apply_hyperparameters()",
        "            pass",
        ("tests/test_train_resume_checks.py",),
    ),
)


def run_tests(src: Path, tests: tuple[str, ...]) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(src), str(ROOT / "loaders")]),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
    }
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", default="", help="only the bugs whose name contains this text")
    args = parser.parse_args(argv)
    bugs = [b for b in BUGS if args.k.lower() in b.name.lower()]
    missed = []
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        shutil.copytree(ROOT / "src", src)
        all_tests = tuple(sorted({t for b in bugs for t in b.tests}))
        clean = run_tests(src, all_tests)
        if clean.returncode != 0:
            print(clean.stdout[-3000:])
            print("the unmodified code fails these tests; fix that first")
            return 2
        for bug in bugs:
            path = src / bug.file
            original = path.read_text()
            if original.count(bug.old) != 1:
                print(f"STALE   {bug.name}: the edited text is not found once in {bug.file}")
                missed.append(bug.name)
                continue
            path.write_text(original.replace(bug.old, bug.new))
            try:
                result = run_tests(src, bug.tests)
            finally:
                path.write_text(original)
            caught = result.returncode == 1
            failed = [ln for ln in result.stdout.splitlines() if ln.startswith(("FAILED", "ERROR"))]
            print(f"{'CAUGHT' if caught else 'MISSED'}  {bug.name}" + (f"  ({failed[0]})" if failed else ""))
            if not caught:
                missed.append(bug.name)
    print(f"\n{len(bugs) - len(missed)}/{len(bugs)} known bugs caught")
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
