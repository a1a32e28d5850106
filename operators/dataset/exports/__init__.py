"""Exports of a finished output, one module per format; the names are ``sg4v export --format``.

Each format module has ``export(output, dest, options) -> Tally``: it streams the dataset file
by file (:mod:`.rows`) and writes a self-contained folder (:mod:`.dest`) that the consumer's
own loader reads as it is: see docs/exports.md for each format's layout and loading snippet.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from operators.dataset import schema as col
from operators.dataset.exports import hf, llava, sharegpt4video, webdataset
from operators.dataset.exports.dest import Destination
from operators.dataset.exports.media import NO_CLIP_HINT
from operators.dataset.exports.options import ExportOptions
from operators.dataset.exports.rows import ExportError, Tally, check_captioned
from operators.io import join

logger = logging.getLogger(__name__)

Exporter = Callable[[str, Destination, ExportOptions], Tally]

#: Format name -> exporter, in the order ``--format`` lists them.
FORMATS: dict[str, Exporter] = {
    "sharegpt4video": sharegpt4video.export,
    "llava": llava.export,
    "webdataset": webdataset.export,
    "hf": hf.export,
}

__all__ = ["FORMATS", "ExportError", "ExportOptions", "ExportResult", "default_dest", "export"]


@dataclass(frozen=True)
class ExportResult:
    dest: str
    tally: Tally


def default_dest(output: str, fmt: str) -> str:
    return join(output, col.EXPORTS_DIR, fmt)


def export(output: str, fmt: str, dest: str | None = None,
           options: ExportOptions | None = None) -> ExportResult:
    """Export ``output`` as ``fmt`` into ``dest`` (default ``OUTPUT/exports/FMT``).

    Raises :class:`ExportError` (one line, nothing written) for an output that does not exist
    or has no captions, or a destination holding something else."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; expected one of {', '.join(FORMATS)}")
    options = options or ExportOptions()
    check_captioned(output)
    target = Destination(dest or default_dest(output, fmt), fmt, output, options.overwrite)
    tally = FORMATS[fmt](output, target, options)
    if tally.no_clip_file:
        logger.warning("%d videos left out: %s", tally.no_clip_file, NO_CLIP_HINT)
    target.finish(exported=tally.exported, uncaptioned=tally.uncaptioned,
                  no_clip_file=tally.no_clip_file)
    return ExportResult(dest=target.uri, tally=tally)
