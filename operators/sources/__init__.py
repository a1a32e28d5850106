"""Input sources: where the videos come from, listed as rows with a stable ``video_id``.

Every source kind has a config model (selected by its ``kind``) and a ``list_rows`` that only
lists files and parses metadata; no video is opened. A kind whose listing can be split also has
``partitions(config)`` (small, JSON-able descriptions of listing tasks: chunks of a CSV, folder
prefixes, shards) and ``list_partition(config, part)``; the job runs one task per partition. Rows have exactly the columns
in :data:`ROW_COLUMNS`. Webdataset shards are listed one row per shard and expanded into one
row per sample by the :class:`ExpandShards` operator, so that shards are read in parallel.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Annotated, Any, Union, get_args

from pydantic import Field, TypeAdapter

from operators.sources.bdd100k import BDD100KSource
from operators.sources.common import ROW_COLUMNS, make_row
from operators.sources.ego4d import Ego4DSource
from operators.sources.folder import FolderSource
from operators.sources.manifest import ManifestSource
from operators.sources.panda70m import Panda70MSource
from operators.sources.webdataset import ExpandShards, WebDatasetSource

#: The source kinds, one line each: the module under ``operators/sources/`` that defines the
#: kind's config model (``CONFIG``, with a ``kind`` literal), ``list_rows(config)`` and, when
#: its listing can be split, ``partitions(config)`` and ``list_partition(config, part)``.
SOURCE_MODULES: tuple[str, ...] = (
    "folder",
    "manifest",
    "panda70m",
    "ego4d",
    "bdd100k",
    "webdataset",
)

_MODULES = {name: importlib.import_module(f"operators.sources.{name}") for name in SOURCE_MODULES}
_LISTERS: dict[str, Callable[[Any], Iterator[dict[str, Any]]]] = {
    get_args(m.CONFIG.model_fields["kind"].annotation)[0]: m.list_rows for m in _MODULES.values()
}

_BY_KIND = {get_args(m.CONFIG.model_fields["kind"].annotation)[0]: m for m in _MODULES.values()}

SourceConfig = Annotated[
    Union[tuple(m.CONFIG for m in _MODULES.values())],  # noqa: UP007 (built from the registry)
    Field(discriminator="kind"),
]


def parse_source_config(data: Any) -> SourceConfig:
    """Validate one source's config (a mapping with a ``kind``)."""
    return TypeAdapter(SourceConfig).validate_python(data)


def list_source_rows(config: SourceConfig) -> Iterator[dict[str, Any]]:
    """The rows of one source: cheap listing and metadata parsing, no video decoding."""
    return iter(_LISTERS[config.kind](config))


def source_partitions(config: SourceConfig) -> list[dict[str, Any]]:
    """The listing tasks of one source (one task for a kind that cannot be split)."""
    module = _BY_KIND[config.kind]
    return list(module.partitions(config)) if hasattr(module, "partitions") else [{}]


def list_source_partition(config: SourceConfig, part: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The rows of one listing task of a source, as :func:`source_partitions` described it."""
    module = _BY_KIND[config.kind]
    if hasattr(module, "list_partition"):
        return iter(module.list_partition(config, part))
    return iter(module.list_rows(config))


def needs_shard_expansion(config: SourceConfig) -> bool:
    """True when the listed rows are shards that :class:`ExpandShards` must turn into samples."""
    return config.kind == "webdataset"


__all__ = [
    "ROW_COLUMNS",
    "BDD100KSource",
    "Ego4DSource",
    "ExpandShards",
    "FolderSource",
    "ManifestSource",
    "Panda70MSource",
    "SourceConfig",
    "WebDatasetSource",
    "list_source_partition",
    "list_source_rows",
    "make_row",
    "needs_shard_expansion",
    "parse_source_config",
    "source_partitions",
]
