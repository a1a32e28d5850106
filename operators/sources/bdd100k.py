"""BDD100K driving videos in their release layout: ``{root}/videos/{train,val,test}/*.mov``.

Each video is a ~40 s clip named by its id (``b1c66a42-6f7d68ca.mov``); that name, without the
extension, is the ``video_id``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any, Literal

from pydantic import Field, field_validator

from operators.io import filesystem, join
from operators.sources.common import (
    SourceBase,
    file_ids,
    make_row,
    normalize_extensions,
    reject_duplicates,
)
from operators.sources.files import list_files, to_uri

logger = logging.getLogger(__name__)

Split = Literal["train", "val", "test"]


class BDD100KSource(SourceBase):
    """BDD100K videos from the splits of its `videos/` folder."""

    kind: Literal["bdd100k"] = Field(description="Source kind.")
    root: str = Field(
        description="The BDD100K folder or URI, the one holding `videos/` (or `videos/` itself)."
    )
    splits: list[Split] = Field(default=["train", "val", "test"], description="Splits to read.")
    extensions: list[str] = Field(default=[".mov"], description="Video file extensions, case-insensitive.")

    _normalize = field_validator("extensions")(normalize_extensions)


def _videos_dir(root: str, splits: list[str]) -> str:
    fs, path = filesystem(root)
    if fs.isdir(f"{path.rstrip('/')}/videos"):
        return join(root, "videos")
    if any(fs.isdir(f"{path.rstrip('/')}/{split}") for split in splits):
        return root
    raise ValueError(f"input.root {root!r} holds no videos/{{{','.join(splits)}}} folder")


def partitions(config: BDD100KSource) -> list[dict[str, Any]]:
    """One listing task per split."""
    videos = _videos_dir(config.root, list(config.splits))
    return [{"videos": videos, "split": split} for split in config.splits]


def list_partition(config: BDD100KSource, part: dict[str, Any]) -> list[dict[str, Any]]:
    """The videos of one split, sorted by name (ids keep their extension only if two collide)."""
    try:
        fs, root, paths = list_files(join(part["videos"], part["split"]), config.extensions, recursive=False)
    except ValueError:
        logger.warning("bdd100k: no %s split under %s", part["split"], part["videos"])
        return []
    logger.info("bdd100k %s: %d videos", part["split"], len(paths))
    ids = file_ids(paths, root)
    return [make_row(i, config.kind, to_uri(fs, p)) for i, p in zip(ids, paths, strict=True)]


def list_rows(config: BDD100KSource) -> Iterator[dict[str, Any]]:
    """One row per video of the chosen splits, split by split, sorted by name."""
    rows = [row for part in partitions(config) for row in list_partition(config, part)]
    return reject_duplicates(rows)


#: The config model of this source kind (the registry in ``operators.sources`` reads it).
CONFIG = BDD100KSource
