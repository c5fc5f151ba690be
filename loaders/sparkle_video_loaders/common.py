"""Pieces shared by the two builders: the row schema and the split generator."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import datasets

from sparkle_video.data.catalog import LoadOptions, generate_examples, plan_units
from sparkle_video.data.sources import DataRoot
from sparkle_video.errors import SkipReport

#: Where a file's bytes are: a path/URL (with a byte range inside a tar shard) or the bytes themselves.
FILE_REF = {
    "path": datasets.Value("string"),
    "offset": datasets.Value("int64"),
    "size": datasets.Value("int64"),
    "bytes": datasets.Value("binary"),
    "member": datasets.Value("string"),  # the tar member (repo-relative path) when ``path`` is a shard
    "stamp": datasets.Value("string"),  # what the file was when indexed (size, mtime, header checksum)
}
TEXT_FIELDS = ("id", "theme", "prompt", "subtheme", "scene", "original_scene")


def features(file_fields: tuple[str, ...]) -> datasets.Features:
    schema: dict[str, Any] = {name: datasets.Value("string") for name in TEXT_FIELDS}
    schema.update({name: dict(FILE_REF) for name in file_fields})
    return datasets.Features(schema)


@dataclass
class SourceConfig(datasets.BuilderConfig):
    """Where to read and what to select (see ``sparkle_video.load_sparkle``)."""

    root_url: str | None = None
    storage_options: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    streaming: bool = False
    #: folder where skips made while generating are appended (read back by the caller's ``SkipReport``)
    skip_spool: str | None = None


class SourceBuilderMixin:
    """``_split_generators``/``_generate_examples`` for a ``SourceConfig`` builder."""

    config: SourceConfig
    split_name: str = "train"
    bench: bool = False

    def _options(self) -> LoadOptions:
        return LoadOptions(bench=self.bench, **self.config.options)

    def _root(self) -> DataRoot:
        if not self.config.root_url:
            raise ValueError("root_url is required: use sparkle_video.load_sparkle / load_sparkle_bench")
        return DataRoot(self.config.root_url, dict(self.config.storage_options))

    def _split_generators(self, dl_manager: Any) -> list[datasets.SplitGenerator]:
        self.skip_report = SkipReport()
        units = plan_units(self._root(), self._options(), self.config.streaming, self.skip_report)
        return [datasets.SplitGenerator(name=self.split_name, gen_kwargs={"units": units})]

    def _generate_examples(self, units: list) -> Any:
        if self.config.skip_spool:  # streaming: this may run in a DataLoader worker; skips go to the spool
            report = SkipReport.spooled(self.config.skip_spool)
        else:
            report = getattr(self, "skip_report", None)
            if report is None:
                report = self.skip_report = SkipReport()
        yield from generate_examples(self._root(), units, self._options(), report)
