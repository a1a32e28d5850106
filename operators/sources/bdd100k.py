"""BDD100K driving videos in their release layout: ``{root}/videos/{train,val,test}/*.mov``.

Each video is a ~40 s clip named by its id (``b1c66a42-6f7d68ca.mov``); that name, without the
extension, is the ``video_id``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any, Literal

from pydantic import Field, field_validator

from operators.config import StrictModel
from operators.io import filesystem, join
from operators.sources.common import make_row, normalize_extensions, reject_duplicates, relative_id
from operators.sources.files import list_files, to_uri

logger = logging.getLogger(__name__)

Split = Literal["train", "val", "test"]


class BDD100KSource(StrictModel):
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


def list_rows(config: BDD100KSource) -> Iterator[dict[str, Any]]:
    """One row per video of the chosen splits, split by split, sorted by name."""
    videos = _videos_dir(config.root, list(config.splits))
    rows = []
    for split in config.splits:
        try:
            fs, root, paths = list_files(join(videos, split), config.extensions, recursive=False)
        except ValueError:
            logger.warning("bdd100k: no %s split under %s", split, videos)
            continue
        logger.info("bdd100k %s: %d videos", split, len(paths))
        rows.extend(make_row(relative_id(p, root), config.kind, to_uri(fs, p)) for p in paths)
    return reject_duplicates(rows)


#: The config model of this source kind (the registry in ``operators.sources`` reads it).
CONFIG = BDD100KSource
