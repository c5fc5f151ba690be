"""The ``sparkle-video`` command line. Each area adds its sub-commands from ``sparkle_video.commands``."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from . import __version__
from .errors import RedactingFilter, SparkleDataError, SparkleHubError, redact
from .safe_write import SparkleWriteError, os_error_line

#: Modules that each define ``add_commands(subparsers)``; their parsers set ``func(args) -> int``.
COMMAND_MODULES = (
    "sparkle_video.commands.data",
    "sparkle_video.commands.model",
    "sparkle_video.commands.bench",
    "sparkle_video.commands.generate",
    "sparkle_video.commands.train",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sparkle-video",
        description="Sparkle: instruction-guided video background replacement data, benchmark and models.",
    )
    parser.add_argument("--version", action="version", version=f"sparkle-video {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:
                continue
            raise
        module.add_commands(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    for handler in logging.getLogger().handlers:  # no API key in any log line, ours or a library's
        handler.addFilter(RedactingFilter())
    if not args.verbose:  # one line per HTTP request is noise unless asked for
        for noisy in ("httpx", "httpx2", "httpcore", "huggingface_hub", "urllib3", "filelock", "fsspec"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (SparkleDataError, SparkleHubError, SparkleWriteError) as e:
        print(f"error: {redact(e)}", file=sys.stderr)
        return 1
    except OSError as e:  # a full disk, a read-only folder...: the path and the errno's meaning
        print(f"error: {redact(os_error_line(e))}", file=sys.stderr)
        return 1
    except ValueError as e:  # bad arguments found past argparse: one line, argparse's exit code
        print(f"error: {redact(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
