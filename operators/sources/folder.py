"""Videos in a folder or matching a glob, on local disk or any fsspec storage (s3://, gs://)."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Literal

from pydantic import Field, field_validator

from operators.config import StrictModel
from operators.sources.common import (
    DEFAULT_VIDEO_EXTENSIONS,
    SourceListing,
    make_row,
    normalize_extensions,
    reject_duplicates,
    relative_id,
)
from operators.sources.files import list_files, to_uri

logger = logging.getLogger(__name__)


class FolderSource(StrictModel):
    """Every video file under a directory or matching a glob."""

    kind: Literal["folder"] = Field(description="Source kind.")
    path: str = Field(
        description="A directory, a glob (`videos/**/*.mp4`) or a single file; local or any fsspec "
        "URI (`s3://bucket/videos/`, `gs://bucket/*.mp4`)."
    )
    extensions: list[str] = Field(
        default=list(DEFAULT_VIDEO_EXTENSIONS),
        description="File extensions taken as videos, case-insensitive; applied to globs too.",
    )
    recursive: bool = Field(default=True, description="Descend into subdirectories of a directory.")

    _normalize = field_validator("extensions")(normalize_extensions)


def list_rows(config: FolderSource) -> SourceListing:
    """One row per video file; ``video_id`` is the path relative to the folder, without extension.
    Files with other extensions are counted in the listing's ``skipped_by_extension``."""
    skipped: Counter = Counter()
    fs, root, paths = list_files(config.path, config.extensions, config.recursive, skipped)
    if not paths:
        raise ValueError(
            f"input.path {config.path!r} holds no file with extension in {config.extensions}"
            + (f" (skipped by extension: {_counts(skipped)})" if skipped else "")
        )
    logger.info("folder source %s: %d files", config.path, len(paths))
    if skipped:
        logger.warning(
            "folder source %s: %d files skipped by extension (%s); add their extensions to "
            "`extensions` if they are videos",
            config.path,
            sum(skipped.values()),
            _counts(skipped),
        )
    rows = (make_row(relative_id(p, root), config.kind, to_uri(fs, p)) for p in paths)
    return SourceListing(reject_duplicates(rows), skipped)


def _counts(skipped: Counter) -> str:
    return ", ".join(f"{ext} x{n}" for ext, n in skipped.most_common(8)) + (", ..." if len(skipped) > 8 else "")


#: The config model of this source kind (the registry in ``operators.sources`` reads it).
CONFIG = FolderSource
