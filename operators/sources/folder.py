"""Videos in a folder or matching a glob, on local disk or any fsspec storage (s3://, gs://)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from typing import Any, Literal

from pydantic import Field, field_validator

from operators.io import filesystem
from operators.sources.common import (
    DEFAULT_VIDEO_EXTENSIONS,
    SourceBase,
    SourceListing,
    file_ids,
    make_row,
    normalize_extensions,
    reject_duplicates,
)
from operators.sources.files import has_glob, list_files, to_uri

logger = logging.getLogger(__name__)


class FolderSource(SourceBase):
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


def _rows(config: FolderSource, fs, root: str, paths: list[str]) -> Iterator[dict[str, Any]]:
    ids = file_ids(paths, root)
    return (make_row(video_id, config.kind, to_uri(fs, p)) for video_id, p in zip(ids, paths, strict=True))


def partitions(config: FolderSource) -> list[dict[str, Any]]:
    """One listing task for the folder's own files and one per subfolder (a prefix, on object
    stores), so a tree of millions of files is listed in parallel. A glob or a file: one task."""
    fs, fs_path = filesystem(config.path)
    if has_glob(fs_path) or not config.recursive or not fs.isdir(fs_path):
        return [{"prefix": None}]
    subfolders = sorted(
        str(info["name"]).rstrip("/").rsplit("/", 1)[-1]
        for info in fs.ls(fs_path, detail=True)
        if info.get("type") == "directory"
    )
    return [{"prefix": ""}, *({"prefix": name} for name in subfolders if not name.startswith("."))]


def list_partition(config: FolderSource, part: dict[str, Any]) -> SourceListing:
    """The videos of one partition; ids relative to the configured folder, so they do not
    depend on how the folder was split. Files left out for their extension are counted in the
    listing's ``skipped_by_extension``."""
    prefix = part["prefix"]
    skipped: Counter = Counter()
    if prefix is None:
        fs, root, paths = list_files(config.path, config.extensions, config.recursive, skipped)
    else:
        fs, fs_path = filesystem(config.path)
        root = fs_path.rstrip("/")
        if prefix == "":
            _, _, paths = list_files(config.path, config.extensions, False, skipped)
        else:
            sub = f"{config.path.rstrip('/')}/{prefix}"
            _, _, paths = list_files(sub, config.extensions, True, skipped)
    if skipped:
        logger.warning(
            "folder source %s%s: %d files skipped by extension (%s); add their extensions to "
            "`extensions` if they are videos",
            config.path, f" ({prefix}/)" if prefix else "", sum(skipped.values()), _counts(skipped))
    return SourceListing(_rows(config, fs, root, paths), skipped)


def list_rows(config: FolderSource) -> SourceListing:
    """One row per video file; ``video_id`` is the path relative to the folder, without extension
    (with it when two files differ only by extension, as ``x.mp4`` and ``x.avi``). Files with
    other extensions are counted in the listing's ``skipped_by_extension``."""
    skipped: Counter = Counter()
    fs, root, paths = list_files(config.path, config.extensions, config.recursive, skipped)
    if not paths:
        raise ValueError(
            f"input.path {config.path!r} holds no file with extension in {config.extensions}"
            + (f" (skipped by extension: {_counts(skipped)})" if skipped else "")
        )
    logger.info("folder source %s: %d files", config.path, len(paths))
    return SourceListing(reject_duplicates(_rows(config, fs, root, paths)), skipped)


def _counts(skipped: Counter) -> str:
    return ", ".join(f"{ext} x{n}" for ext, n in skipped.most_common(8)) + (", ..." if len(skipped) > 8 else "")


#: The config model of this source kind (the registry in ``operators.sources`` reads it).
CONFIG = FolderSource
