"""Sparkle-Bench evaluation: inference runner, VLM judge, judge-free metrics and reports.

Typical flow: :func:`run_inference` writes a result set in the official layout, :func:`judge_results`
scores it with a VLM judge (:func:`judge_openve` for OpenVE-Bench), :func:`score_results` with the judge-free metrics, and :func:`build_report`
puts several result sets side by side.
"""

from __future__ import annotations

from .editors import (
    Editor,
    IdentityEditor,
    PipelineEditor,
    StaticBackgroundEditor,
    load_editor,
    pipeline_editor,
)
from .judge import (
    AzureJudge,
    GeminiJudge,
    JudgeBackend,
    JudgeConfigError,
    JudgeRun,
    OpenAIJudge,
    format_table,
    judge_results,
    load_judge_records,
    make_backend,
    summarize,
)
from .judge_http import MAX_REPLY_BYTES, JudgeStopped
from .metrics import METRIC_NAMES, MetricConfig, PairMetrics, compute_metrics, estimate_foreground, spearman
from .openve import judge_openve, load_openve_bench, openve_average
from .report import build_report, leaderboard_markdown
from .results import ResultSet, result_relpath, scan_results
from .rubric import (
    OPENVE,
    PARSE_MODES,
    PROTOCOLS,
    SPARKLE,
    JudgeProtocol,
    ReplyError,
    apply_cap,
    get_protocol,
    parse_scores,
    parse_scores_official,
)
from .runner import InferenceReport, run_inference, shard_rows
from .score import ScoreRun, judge_correlation, score_results, summarize_metrics

__all__ = [
    "MAX_REPLY_BYTES",
    "METRIC_NAMES",
    "OPENVE",
    "PARSE_MODES",
    "PROTOCOLS",
    "SPARKLE",
    "AzureJudge",
    "Editor",
    "GeminiJudge",
    "IdentityEditor",
    "InferenceReport",
    "JudgeBackend",
    "JudgeConfigError",
    "JudgeProtocol",
    "JudgeRun",
    "JudgeStopped",
    "MetricConfig",
    "OpenAIJudge",
    "PairMetrics",
    "PipelineEditor",
    "ReplyError",
    "ResultSet",
    "ScoreRun",
    "StaticBackgroundEditor",
    "apply_cap",
    "build_report",
    "compute_metrics",
    "estimate_foreground",
    "format_table",
    "get_protocol",
    "judge_correlation",
    "judge_openve",
    "judge_results",
    "leaderboard_markdown",
    "load_editor",
    "load_judge_records",
    "load_openve_bench",
    "make_backend",
    "openve_average",
    "parse_scores",
    "parse_scores_official",
    "pipeline_editor",
    "result_relpath",
    "run_inference",
    "scan_results",
    "score_results",
    "shard_rows",
    "spearman",
    "summarize",
    "summarize_metrics",
]
