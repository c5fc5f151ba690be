"""``sparkle-video bench``: infer, judge, metrics, score, report.

Heavy modules are imported inside the handlers so ``sparkle-video --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

BENCH_HELP = "Sparkle-Bench source: local folder, fsspec URL or Hub repo id (default stdKonjac/Sparkle-Bench)"


def _is_openve(args: argparse.Namespace) -> bool:
    """OpenVE-Bench when asked for, or (``auto``) when ``--bench`` is or holds ``benchmark_videos.csv``."""
    fmt = getattr(args, "bench_format", "sparkle")
    if fmt == "auto":
        from sparkle_video.bench.openve import is_openve_bench

        return is_openve_bench(args.bench)
    return fmt == "openve"


def _load_bench(args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """Bench rows as a list, plus the samples the loader had to skip (counted and named, never dropped)."""
    if _is_openve(args):
        from sparkle_video.bench.openve import load_openve_bench

        types = None if args.edited_types == ["all"] else args.edited_types
        rows, skipped = load_openve_bench(args.bench, types, limit=getattr(args, "limit", None))
        for key, reason in skipped:
            print(f"skipped {key}: {reason}", file=sys.stderr)
        return rows, skipped
    from ..data.loading import load_sparkle_bench
    from ..errors import SkipReport

    report = SkipReport()
    ds = load_sparkle_bench(
        args.bench,
        themes=args.themes,
        ids=getattr(args, "ids", None),
        limit=getattr(args, "limit", None),
        errors="skip",
        skip_report=report,
    )
    rows = [dict(r) for r in ds]
    if len(report):
        print(report.summary(), file=sys.stderr)
    return rows, list(report.skipped)


def _dump(obj: Any, path: str | None) -> None:
    """Write ``obj`` as JSON to ``path``, with any active API key redacted (reasons quote servers)."""
    from sparkle_video.errors import redact

    if path:
        from ..safe_write import write_text

        write_text(path, redact(json.dumps(obj, indent=2, ensure_ascii=False)) + "\n")


# -- infer ---------------------------------------------------------------------------------------
def cmd_infer(args: argparse.Namespace) -> int:
    from sparkle_video.bench.editors import BASELINES, import_editor, load_editor
    from sparkle_video.bench.runner import run_inference

    if (args.height is None) != (args.width is None):
        raise ValueError("--height and --width go together")
    if args.editor is not None:
        editor = import_editor(args.editor)
    elif args.model in BASELINES:
        editor = load_editor(args.model)
    else:
        editor = load_editor(
            args.model,
            dtype=args.dtype,
            device=args.device,
            num_inference_steps=args.steps,
            seed=args.seed,
            guidance_scale=args.guidance,
            size=(args.height, args.width) if args.height is not None else None,
            max_pixels=args.max_pixels,
        )
    rows, skipped = _load_bench(args)
    report = run_inference(
        rows,
        editor,
        args.out,
        rank=args.rank,
        num_ranks=args.num_ranks,
        fps=args.fps,
        overwrite=args.overwrite,
    )
    print(report.summary())
    if skipped:
        print(f"{len(skipped)} bench samples could not be loaded (see above)")
    return 1 if report.failed else 0


# -- judge ---------------------------------------------------------------------------------------
def cmd_judge(args: argparse.Namespace) -> int:
    from sparkle_video.bench.judge import (
        OFFICIAL_MAX_ATTEMPTS,
        JudgeConfigError,
        format_table,
        judge_results,
        make_backend,
        summary_file_name,
    )
    from sparkle_video.bench.judge_http import JudgeStopped
    from sparkle_video.bench.openve import OPENVE_MAX_ATTEMPTS, judge_openve
    from sparkle_video.errors import redact

    openve = _is_openve(args)
    extra = {"api_version": args.api_version} if args.backend == "azure" else {}
    if args.api_version and args.backend != "azure":
        print("error: --api-version applies to --backend azure only", file=sys.stderr)
        return 2
    try:  # the key is checked here, before the bench is loaded or anything is asked
        if openve and args.backend != "gemini":
            raise JudgeConfigError(
                "OpenVE-Bench is judged by native Gemini with uploaded files: use --backend gemini"
            )
        backend = make_backend(
            args.backend,
            args.model,
            base_url=args.base_url,
            api_key_env=args.api_key_env,
            media=args.media,
            num_frames=args.num_frames,
            timeout=args.timeout,
            **extra,
        )
    except JudgeConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rubric = Path(args.rubric).read_text(encoding="utf-8") if args.rubric else None
    rows, skipped = _load_bench(args)
    status = 0
    combined = []
    for save_dir in args.results:
        common = {
            "judge_model": args.judge_name,
            "rubric": rubric,
            "parse": args.parse,
            "concurrency": args.concurrency,
            "backoff_s": args.backoff,
        }
        try:
            if openve:
                run = judge_openve(
                    rows, save_dir, backend, max_attempts=args.max_attempts or OPENVE_MAX_ATTEMPTS, **common
                )
            else:
                run = judge_results(
                    rows,
                    save_dir,
                    backend,
                    protocol=args.protocol,
                    max_attempts=args.max_attempts or OFFICIAL_MAX_ATTEMPTS,
                    **common,
                )
        except JudgeConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except JudgeStopped as e:  # what was answered before is on disk; nothing more was asked
            print(f"error: {redact(e)}", file=sys.stderr)
            return 1
        report = run.report()
        report["bench_skipped"] = [{"id": k, "reason": r} for k, r in skipped]
        report["counts"]["bench_skipped"] = len(skipped)
        _dump(report, str(Path(save_dir) / summary_file_name(run.judge_model, run.protocol)))
        combined.append(report)
        print(f"== {save_dir} (judge {run.judge_model}, protocol {run.protocol}, parse {args.parse})")
        print(format_table(run.summary))
        if openve:
            figures = run.summary["openve"]
            cells = ", ".join(f"{k} {v:.2f}" for k, v in figures["per_edited_type"].items())
            overall = "-" if figures["all"] is None else f"{figures['all']:.2f}"
            print(f"official figures: all {overall}" + (f" ({cells})" if cells else ""))
        print("counts: " + ", ".join(f"{k}={v}" for k, v in report["counts"].items()))
        for sid, reason in run.failed + run.unreadable_edited:
            print(f"  not scored {sid}: {reason}")
        for sid, n_src, n_edit in run.truncated:
            print(f"  truncated {sid}: {n_edit} frames, source has {n_src}")
        if run.failed or run.unreadable_edited:
            status = 1
    _dump(combined if len(combined) > 1 else combined[0], args.json)
    return status


# -- metrics / score -----------------------------------------------------------------------------
def cmd_metrics(args: argparse.Namespace) -> int:
    from sparkle_video.bench.metrics import MetricConfig, compute_metrics
    from sparkle_video.data.masks import load_mask

    mask = load_mask(args.mask) if args.mask else None
    config = MetricConfig(work_height=args.work_height)
    result = compute_metrics(args.source, args.edited, mask=mask, config=config).as_dict()
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


def _rho(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def cmd_score(args: argparse.Namespace) -> int:
    from sparkle_video.bench.score import format_metrics_table, score_results

    rows, skipped = _load_bench(args)
    run = score_results(
        rows, args.results, masks_dir=args.masks, workers=args.workers, overwrite=args.overwrite
    )
    report = run.report()
    report["bench_skipped"] = [{"id": k, "reason": r} for k, r in skipped]
    report["counts"]["bench_skipped"] = len(skipped)
    print(format_metrics_table(run.summary))
    print("counts: " + ", ".join(f"{k}={v}" for k, v in report["counts"].items()))
    for model, corr in run.correlation.items():
        cells = ", ".join(
            f"{m} vs {c['judge_dimension']}: {_rho(c['spearman'])} (n={c['n']})" for m, c in corr.items()
        )
        print(f"rank correlation with judge {model}: {cells}")
    for sid, reason in run.failed:
        print(f"  not scored {sid}: {reason}")
    for item in report["problems"].get("truncated", []):
        print(f"  truncated {item['id']}: {item['edited_frames']} frames, source has {item['source_frames']}")
    _dump(report, args.json)
    return 1 if run.failed else 0


# -- report --------------------------------------------------------------------------------------
def cmd_report(args: argparse.Namespace) -> int:
    from sparkle_video.bench.report import build_report

    rows = _load_bench(args)[0] if args.bench else None
    html_path, md_path = build_report(
        args.results,
        args.out,
        names=args.names,
        bench_rows=rows,
        protocol=args.protocol,
        judge_model=args.judge_name,
        max_samples=args.max_samples,
        paper=args.paper_rows,
    )
    print(md_path.read_text(encoding="utf-8"))
    print(f"wrote {html_path} and {md_path}")
    return 0


# -- parser --------------------------------------------------------------------------------------
def _bench_selection(p: argparse.ArgumentParser, openve: bool = False) -> None:
    p.add_argument("--bench", required=True, help=BENCH_HELP)
    if openve:
        p.add_argument(
            "--bench-format",
            choices=("auto", "sparkle", "openve"),
            default="auto",
            help="bench layout (auto: OpenVE-Bench when --bench is or holds benchmark_videos.csv)",
        )
        p.add_argument(
            "--edited-types",
            nargs="+",
            default=["background_change"],
            help="OpenVE-Bench edited types to use ('all': every type the official scorer judges)",
        )
    p.add_argument("--themes", nargs="+", default=None, help="only these themes (default: all four)")
    p.add_argument("--ids", nargs="+", default=None, help="only these sample ids")
    p.add_argument("--limit", type=int, default=None, help="at most this many samples")


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    bench = subparsers.add_parser(
        "bench", help="Sparkle-Bench: run an editor, judge, score and report results"
    )
    sub = bench.add_subparsers(dest="bench_command", metavar="SUBCOMMAND")
    bench.set_defaults(func=lambda args: (bench.print_help(), 2)[1])

    p = sub.add_parser("infer", help="run an editor over the bench and save the official result layout")
    _bench_selection(p, openve=True)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--model",
        help="identity | static-background | a diffusers pipeline folder or Hub repo (SparkleEditPipeline, "
        "LucyEditPipeline or any pipeline taking video + prompt; dispatched on model_index.json)",
    )
    which.add_argument(
        "--editor", metavar="MODULE:FUNCTION", help="any (VideoReader, prompt) -> frames callable"
    )
    p.add_argument("--out", required=True, help="result folder (save_dir)")
    p.add_argument("--rank", type=int, default=0)
    p.add_argument("--num-ranks", type=int, default=1)
    p.add_argument("--fps", type=float, default=15.0, help="fps of saved videos (official: 15)")
    p.add_argument("--overwrite", action="store_true", help="redo ids that already have a result")
    p.add_argument("--dtype", default="bfloat16", help="torch dtype for a model editor")
    p.add_argument("--device", default=None, help="device for a model editor (default: cuda if available)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's, 50)")
    p.add_argument("--seed", type=int, default=None, help="sampling seed (default: 0)")
    p.add_argument(
        "--guidance", type=float, default=None, help="guidance scale (default: Sparkle 1.0, Lucy 5.0)"
    )
    p.add_argument("--height", type=int, default=None, help="working height (with --width)")
    p.add_argument("--width", type=int, default=None, help="working width (with --height)")
    p.add_argument(
        "--max-pixels",
        type=int,
        default=None,
        help="shrink each source to at most this many pixels (default: Sparkle 1280*720; Lucy 480x832)",
    )
    p.set_defaults(func=cmd_infer)

    p = sub.add_parser(
        "judge", help="score result folders with a VLM judge (Azure OpenAI, OpenAI-compatible or Gemini)"
    )
    _bench_selection(p, openve=True)
    p.add_argument("--results", nargs="+", required=True, help="result folders (save_dir)")
    p.add_argument(
        "--backend",
        choices=("openai", "azure", "gemini"),
        default="openai",
        help="azure: the official Sparkle-Bench client (openai.AzureOpenAI); gemini: native google-genai "
        "(required for OpenVE-Bench)",
    )
    p.add_argument("--model", required=True, help="judge model name, e.g. gemini-2.5-pro")
    p.add_argument("--judge-name", default=None, help="name used in record file names (default: --model)")
    p.add_argument(
        "--base-url",
        default=None,
        help="endpoint root (vLLM or any OpenAI-compatible server; for azure the Azure endpoint, "
        "default $AZURE_ENDPOINT)",
    )
    p.add_argument(
        "--api-key-env",
        default=None,
        help="environment variable holding the key (default OPENAI_API_KEY; GEMINI_API_KEY for azure; "
        "GEMINI_API_KEY/GOOGLE_API_KEY for gemini)",
    )
    p.add_argument(
        "--api-version", default=None, help="Azure API version (default 2024-03-01-preview, as official)"
    )
    p.add_argument(
        "--parse",
        choices=("official", "lenient"),
        default="official",
        help="reply parsing: the official scorer's rule (default) or a tolerant one",
    )
    p.add_argument(
        "--rubric", default=None, help="file with the rubric text ({edit_prompt} marks the instruction)"
    )
    p.add_argument("--protocol", choices=("sparkle", "openve"), default="sparkle")
    p.add_argument(
        "--media",
        choices=("video", "frames"),
        default="video",
        help="send base64 mp4 (official) or sampled JPEG frames",
    )
    p.add_argument("--num-frames", type=int, default=8, help="frames per video with --media frames")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument(
        "--max-attempts",
        type=int,
        default=None,
        help="attempts per sample (errors, bad replies); official: 20 for Sparkle-Bench, 3 for OpenVE-Bench",
    )
    p.add_argument(
        "--backoff", type=float, default=2.0, help="seconds before the first retry (doubles each time)"
    )
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per request (official: 60)")
    p.add_argument("--json", default=None, help="also write the summary and counts to this JSON file")
    p.set_defaults(func=cmd_judge)

    p = sub.add_parser("metrics", help="judge-free metrics of one (source, edited) pair, as JSON")
    p.add_argument("--source", required=True)
    p.add_argument("--edited", required=True)
    p.add_argument("--mask", default=None, help="BAIT foreground mask .npz of the source (optional)")
    p.add_argument("--work-height", type=int, default=144, help="working resolution (frame height)")
    p.add_argument("--json", action="store_true", help="print compact single-line JSON")
    p.set_defaults(func=cmd_metrics)

    p = sub.add_parser("score", help="judge-free metrics over a result folder, per theme and macro")
    _bench_selection(p)
    p.add_argument("--results", required=True, help="result folder (save_dir)")
    p.add_argument(
        "--masks", default=None, help="folder of BAIT masks ({theme}/{id}.npz, {id}.npz or Sparkle layout)"
    )
    p.add_argument("--workers", type=int, default=1)
    p.add_argument(
        "--overwrite", action="store_true", help="recompute metrics already in sparkle_metrics.jsonl"
    )
    p.add_argument(
        "--json", default=None, help="write the summary, counts and correlations to this JSON file"
    )
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("report", help="HTML leaderboard, per-theme charts and thumbnails; Markdown table")
    p.add_argument("results", nargs="+", help="result folders (save_dir)")
    p.add_argument("--out", required=True, help="report.html (the Markdown table goes beside it as .md)")
    p.add_argument("--names", nargs="+", default=None, help="display names, one per result folder")
    p.add_argument("--bench", default=None, help=BENCH_HELP + "; adds source thumbnails")
    p.add_argument("--themes", nargs="+", default=None)
    p.add_argument("--protocol", choices=("sparkle", "openve"), default="sparkle")
    p.add_argument(
        "--judge-name", default=None, help="which judge's records to show (default: the only/first)"
    )
    p.add_argument("--max-samples", type=int, default=24)
    p.add_argument(
        "--paper-rows",
        action="store_true",
        help="add the paper's published scores for this protocol as labelled reference rows",
    )
    p.set_defaults(func=cmd_report)
