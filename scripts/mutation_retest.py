"""Re-test the mutants mutmut left alive (or never ran) against each module's own unit-test files.

mutmut checks a mutant against every test that calls the mutated function; for a function every test
reaches (the video reader), one survivor costs minutes, and re-testing a few hundred after adding
tests takes hours on 2 cores. This re-runs only the named test files of the mutant's module (two at a
time, each stopping at its first failure; a failure counts only if that test fails again alone and
passes without the mutant) and records the verdict where mutmut keeps it (the
``mutants/**/*.py.meta`` files, mutmut 3.8's exit codes: 1 killed, 0 survived, 36 timeout), so
``mutmut results`` and ``scripts/mutation_report.py`` count it. A kill here is a real kill; a mutant
that survives here may still fall to a test outside the list, so the rate is a lower bound. Mutants
listed as equivalent are not re-tested. Needs a ``mutants/`` folder from a ``make mutate`` run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mutation_report import EQUIVALENTS, KILLED, module_of, read_equivalents, read_results

ROOT = Path(__file__).resolve().parents[1]
MUTANTS = ROOT / "mutants"
GENERATION = ["test_generation_units.py", "test_generation_algorithms.py"]

#: The unit-test files that pin each mutated module (all under tests/).
MODULE_TESTS: dict[str, list[str]] = {
    "sparkle_video.bench.judge": [
        "test_bench_judge.py",
        "test_judge_units.py",
        "test_bench_official.py",
        "test_rubric.py",
    ],
    "sparkle_video.bench.rubric": ["test_rubric.py", "test_judge_units.py", "test_bench_judge.py"],
    "sparkle_video.bench.metrics": ["test_metrics_units.py", "test_bench_metrics.py", "test_bench_score.py"],
    "sparkle_video.pipelines.convert": ["test_convert_units.py", "test_convert.py"],
    "sparkle_video.generation.camera": GENERATION,
    "sparkle_video.generation.bait": GENERATION,
    "sparkle_video.generation.edges": GENERATION,
    "sparkle_video.data.layout": ["test_layout.py", "test_load_errors.py"],
    "sparkle_video.data.masks": ["test_masks.py"],
    "sparkle_video.models.configs": ["test_model_configs.py"],
    "sparkle_video.pipelines.pipeline_sparkle_edit": [
        "test_pipeline_units.py",
        "test_pipeline_math.py",
        "test_pipeline_blocks.py",
        "test_pipeline.py",
    ],
    "sparkle_video.data.records": ["test_records.py", "test_load_errors.py"],
    "sparkle_video.data.shards": ["test_shards.py", "test_load_errors.py"],
    "sparkle_video.training.loss": ["test_training_loss.py"],
    "sparkle_video.data.video": ["test_video.py", "test_video_sources.py", "test_writing_atomic.py"],
}
TIMEOUT_EXIT = 36  # mutmut's code for a run that ran out of time (counted as killed)
SUSPICIOUS_EXIT = 35  # mutmut's "suspicious": a failure that did not repeat (not counted as killed)


def pytest_command(tests: list[str], first_failure: bool = True) -> list[str]:
    marks = ["-m", "not slow and not e2e"]  # as [tool.mutmut] pytest_add_cli_args
    return [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        *marks,
        *(["-x"] * first_failure),
        *tests,
    ]


def run_pytest(name: str, tests: list[str], limit_s: float) -> subprocess.CompletedProcess | None:
    """pytest with mutant ``name`` switched on (mutmut's trampoline reads the variable); None on timeout."""
    env = {
        **os.environ,
        "MUTANT_UNDER_TEST": name,
        "PYTHONPATH": os.pathsep.join([str(MUTANTS / "src"), str(MUTANTS / "loaders")]),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
    }
    command = pytest_command(tests, first_failure=name != "")
    try:
        return subprocess.run(command, cwd=MUTANTS, env=env, capture_output=True, text=True, timeout=limit_s)
    except subprocess.TimeoutExpired:
        return None


def run_mutant(name: str, module: str, limit_s: float) -> int:
    """mutmut's exit code for mutant ``name`` checked against the module's test files.

    A failure counts as a kill only when it is the mutant's doing: the first failing test is run again
    alone, and it must fail with the mutant and pass without it (else the verdict is "suspicious", 35,
    which is not counted as killed). A machine under load must not turn a flaky test into kills.
    """
    files = [f"tests/{f}" for f in MODULE_TESTS[module]]
    run = run_pytest(name, files, limit_s)
    if run is None:  # a hang must repeat with twice the time to count
        run = run_pytest(name, files, 2 * limit_s)
        if run is None:
            return TIMEOUT_EXIT
    if run.returncode != 1:
        return run.returncode
    failed = [  # "FAILED tests/x.py::test[id] - message" (an id may hold spaces)
        ln.split(" ", 1)[1].split(" - ", 1)[0]
        for ln in run.stdout.splitlines()
        if ln.startswith(("FAILED ", "ERROR "))
    ]
    if not failed:
        return SUSPICIOUS_EXIT
    again, clean = run_pytest(name, failed[:1], limit_s), run_pytest("", failed[:1], limit_s)
    if again is not None and again.returncode == 1 and clean is not None and clean.returncode == 0:
        return 1
    return SUSPICIOUS_EXIT


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help="only these modules (default: every one with survivors)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    os.chdir(ROOT)  # mutmut reads mutants/ from the working directory
    if not (MUTANTS / "src").is_dir():
        print("no mutants/ folder: run `make mutate` first")
        return 2
    equivalents = read_equivalents(EQUIVALENTS)
    todo: dict[str, list[str]] = {}
    for name, status in read_results(str(Path(sys.executable).with_name("mutmut"))).items():
        module = module_of(name)
        if status in KILLED or name in equivalents or (args.modules and module not in args.modules):
            continue
        todo.setdefault(module, []).append(name)
    for module, names in sorted(todo.items(), key=lambda item: len(item[1])):
        if module not in MODULE_TESTS:
            print(f"{module}: no test files listed in MODULE_TESTS, skipped")
            continue
        start = time.monotonic()
        if (
            baseline := run_pytest("", [f"tests/{f}" for f in MODULE_TESTS[module]], 3600)
        ) is None or baseline.returncode:
            print(f"{module}: its tests fail without a mutant; fix that first")
            return 2
        baseline_s = time.monotonic() - start
        limit_s = max(30.0, 4 * baseline_s + 20)  # a hanging mutant counts as killed, as in mutmut
        with ThreadPoolExecutor(args.workers) as pool:
            runs = pool.map(run_mutant, names, [module] * len(names), [limit_s] * len(names))
            codes = dict(zip(names, runs, strict=True))
        meta_path = MUTANTS / "src" / (module.replace(".", "/") + ".py.meta")
        meta = json.loads(meta_path.read_text())
        meta["exit_code_by_key"].update(codes)
        meta_path.write_text(json.dumps(meta, indent=4))
        killed = sum(code in (1, TIMEOUT_EXIT) for code in codes.values())
        print(f"{module}: {killed}/{len(names)} killed ({time.monotonic() - start:.0f}s)")
        for name, code in codes.items():
            if code not in (1, TIMEOUT_EXIT):
                print(f"  {'survived' if code == 0 else f'not killed (exit {code})'} {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
