"""Reading official-style tar shards without extracting them.

Two access patterns: ``index_tar`` scans member headers of a seekable file (seeking over the data, so
only headers are read) and returns byte ranges that a ``VideoReader`` opens directly; ``iter_tar``
reads members in stream order for streaming, never seeking.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from .errors import SparkleDataError
from .layout import safe_relpath


@dataclass(frozen=True)
class TarMember:
    """Where one member's bytes live inside an uncompressed tar."""

    name: str
    offset: int
    size: int


def check_member_name(name: str, shard: str) -> str:
    """Normalise a member name, rejecting ``..`` and absolute names (they could escape on extraction)."""
    try:
        return safe_relpath(name)
    except ValueError as e:
        raise SparkleDataError(f"unsafe tar member name: {e}", path=shard) from e


def index_tar(fileobj: IO[bytes], shard: str) -> dict[str, TarMember]:
    """Map member name -> byte range for every regular file in an uncompressed tar."""
    members: dict[str, TarMember] = {}
    try:
        with tarfile.open(fileobj=fileobj, mode="r:") as tf:
            for info in tf:
                if not info.isfile():
                    continue
                name = check_member_name(info.name, shard)
                members[name] = TarMember(name, info.offset_data, info.size)
    except tarfile.TarError as e:
        raise SparkleDataError(f"not a readable uncompressed tar ({e})", path=shard) from e
    return members


def iter_tar(fileobj: IO[bytes], shard: str, wanted: set[str] | None = None) -> Iterator[tuple[str, bytes]]:
    """Yield ``(name, bytes)`` for regular members in stream order; others are read past, not kept."""
    try:
        with tarfile.open(fileobj=fileobj, mode="r|") as tf:
            for info in tf:
                if not info.isfile():
                    continue
                name = check_member_name(info.name, shard)
                if wanted is not None and name not in wanted:
                    continue
                extracted = tf.extractfile(info)
                if extracted is None:  # pragma: no cover - regular files always extract
                    continue
                yield name, extracted.read()
    except tarfile.TarError as e:
        raise SparkleDataError(f"not a readable uncompressed tar ({e})", path=shard) from e
