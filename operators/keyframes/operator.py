"""Pick each video's keyframes from its frame embeddings and write their images."""

from __future__ import annotations

import hashlib
import io
import logging
import re
from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from operators.base import Batch, Operator, Resources, RowRejected, cell, object_column
from operators.dataset.archive import write_archive
from operators.dataset.schema import KEYFRAMES_DIR, SOURCE_BYTES
from operators.io import holding, join, write_bytes_atomic
from operators.keyframes.select import KeyframeConfig, select_keyframes
from operators.video.frames import decode_image, encode_jpeg

logger = logging.getLogger(__name__)

KEYFRAME_DIR = KEYFRAMES_DIR
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_video_dir(video_id: str) -> str:
    """A directory name for ``video_id``: unsafe characters replaced, plus a short hash of the
    original id whenever it was changed, so two ids never share a directory."""
    safe = _UNSAFE.sub("_", video_id).strip("._") or "video"
    if safe != video_id or len(safe) > 100:
        digest = hashlib.sha1(video_id.encode()).hexdigest()[:10]
        safe = f"{safe[:100]}-{digest}"
    return safe


def keyframe_name(video_id: str, k: int, timestamp_s: float, naming: str = "index") -> str:
    """Name of keyframe ``k``: its path under ``keyframes/``, or its member name in an archive
    (``naming``: see KeyframeConfig)."""
    if naming == "official":
        return f"{safe_video_dir(video_id)}/frame_{timestamp_s:.2f}.png"
    return f"{safe_video_dir(video_id)}/{k:03d}_{int(round(timestamp_s * 1000))}.jpg"


def keyframe_path(video_id: str, k: int, timestamp_s: float, naming: str = "index") -> str:
    """Path of keyframe ``k`` relative to the output root (``packing: files``)."""
    return f"{KEYFRAME_DIR}/{keyframe_name(video_id, k, timestamp_s, naming)}"


def keyframe_names(video_id: str, times: Sequence[float], naming: str = "index") -> list[str]:
    """Names of a video's keyframes. Two official names that round to the same 1/100 s (frames
    sampled less than 10 ms apart) would overwrite each other: the later ones get ``_<k>``."""
    paths = [keyframe_name(video_id, k, t, naming) for k, t in enumerate(times)]
    seen: set[str] = set()
    for k, path in enumerate(paths):
        if path in seen:
            paths[k] = path.replace(".png", f"_{k}.png")
        seen.add(paths[k])
    return paths


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) read from the header, without decoding."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return image.size


class _LazyFrames(Sequence):
    """Decodes a sampled JPEG only when the blank check asks for it."""

    def __init__(self, jpegs: Sequence[bytes]) -> None:
        self.jpegs = jpegs

    def __len__(self) -> int:
        return len(self.jpegs)

    def __getitem__(self, i):  # type: ignore[no-untyped-def]
        return decode_image(bytes(self.jpegs[i]))


class SelectKeyframes(Operator):
    """Keyframe selection (see :func:`select_keyframes`) and keyframe images for the API stage.

    Adds per row: ``keyframe_indices`` (list of int, into ``frames``), ``keyframe_timestamps``
    (list of float, seconds from the clip start, the sampled frames' own times) and
    ``keyframe_paths`` (list of str, relative to the output root; every one opens with
    ``operators.io.open_binary(join(output, path))``). With ``packing: archive`` (the default)
    the batch's images go into one tar and a path is a byte range of it,
    ``keyframes/part-<hash>.tar#offset=O&size=N&member=<video>/001_4004.jpg``; with ``files``
    it is ``keyframes/<video>/001_4004.jpg`` (= keyframe 1 at 4.004 s).

    Images have their longest side at ``image_longest_side`` (never upscaled). They are re-read
    from the source at ``clip_start + timestamp`` when the sampled frames are smaller than that
    and the source (``width``/``height``, as displayed) is larger than the sampled frames;
    otherwise the sampled JPEG is written as is, or shrunk and re-encoded when it is too big.
    ``rotation`` (degrees counterclockwise to turn decoded frames upright, as the probe writes
    it) is applied to re-read frames only: sampled frames are upright already. Times are seconds
    from the video stream's start time, the clock ``clip_start`` and the sampler use.

    ``output_dir`` is the job's output root (local path or fsspec URI).
    """

    name: ClassVar[str] = "select_keyframes"
    opens_source: ClassVar[bool] = True
    input_columns: ClassVar[tuple[str, ...]] = (
        "video_id",
        "uri",
        "clip_start",
        "frames",
        "frame_timestamps",
        "frame_embeddings",
        "width",
        "height",
        "rotation",
    )
    output_columns: ClassVar[tuple[str, ...]] = ("keyframe_indices", "keyframe_timestamps", "keyframe_paths")
    stateful: ClassVar[bool] = False

    def __init__(
        self,
        config: KeyframeConfig | None = None,
        resources: Resources | None = None,
        *,
        output_dir: str | None = None,
    ) -> None:
        super().__init__(config or KeyframeConfig(), resources)
        self.output_dir = output_dir

    def default_resources(self) -> Resources:
        return Resources(num_cpus=1.0, batch_size=8)

    def __call__(self, batch: Batch) -> Batch:
        if not self.output_dir:
            raise ValueError("SelectKeyframes needs output_dir (the job's output root)")
        images: dict[int, list[bytes]] = {}

        def one(i: int) -> dict:
            indices, times, images[i] = self._one(batch, i)
            return {"keyframe_indices": indices, "keyframe_timestamps": times}

        batch = self.map_rows(batch, one, ("keyframe_indices", "keyframe_timestamps"))
        batch["keyframe_paths"] = object_column(self._write_images(batch, images))
        return batch

    def _write_images(self, batch: Batch, images: dict[int, list[bytes]]) -> list[list[str] | None]:
        """Write the images of the rows that got keyframes; each row's paths (None: rejected)."""
        paths: list[list[str] | None] = [None] * len(batch["video_id"])
        naming = self.config.naming
        names = {i: keyframe_names(str(batch["video_id"][i]), list(batch["keyframe_timestamps"][i]), naming)
                 for i in images}
        if naming == "official":  # the released scripts read PNGs
            images = {i: [_png(data) for data in row] for i, row in images.items()}
        if self.config.packing == "files":
            for i, data in images.items():
                paths[i] = [f"{KEYFRAME_DIR}/{name}" for name in names[i]]
                for path, jpeg in zip(paths[i], data, strict=True):
                    write_bytes_atomic(join(self.output_dir, path), jpeg)
            return paths
        if not images:
            return paths
        rows = sorted(images)
        members = [(name, jpeg) for i in rows for name, jpeg in zip(names[i], images[i], strict=True)]
        uris = iter(write_archive(self.output_dir, [str(batch["video_id"][i]) for i in rows], members))
        for i in rows:
            paths[i] = [next(uris) for _ in images[i]]
        return paths

    def _one(self, batch: Batch, i: int) -> tuple[list[int], list[float], list[bytes]]:
        frames = list(batch["frames"][i]) if batch["frames"][i] is not None else []
        timestamps = [float(t) for t in (batch["frame_timestamps"][i] if frames else [])]
        embeddings = batch["frame_embeddings"][i]
        embeddings = np.asarray(list(embeddings) if embeddings is not None else [], dtype=np.float32)
        if not frames:
            raise RowRejected("no_frames", "no sampled frames to choose keyframes from")
        if embeddings.ndim != 2 or len(embeddings) != len(frames) or len(timestamps) != len(frames):
            raise RowRejected(
                "bad_embeddings",
                f"{len(frames)} frames, {len(timestamps)} timestamps, embeddings of shape {embeddings.shape}",
            )
        indices = select_keyframes(embeddings, timestamps, self.config, _LazyFrames(frames))
        times = [timestamps[k] for k in indices]
        return indices, times, self._images(batch, i, [frames[k] for k in indices], times)

    def _images(self, batch: Batch, i: int, jpegs: Sequence[bytes], times: Sequence[float]) -> list[bytes]:
        config = self.config
        sampled_longest = max(jpeg_size(bytes(jpegs[0])))
        source_longest = max(_int(batch, "width", i), _int(batch, "height", i))
        reread = config.reread == "always" or (
            config.reread == "auto"
            and sampled_longest < config.image_longest_side
            and source_longest > sampled_longest
        )
        if reread:
            return self._reread(batch, i, times)
        out = []
        for data in jpegs:
            data = bytes(data)
            if max(jpeg_size(data)) > config.image_longest_side:
                data = _shrink_jpeg(data, config.image_longest_side, config.jpeg_quality)
            out.append(data)
        return out

    def _reread(self, batch: Batch, i: int, times: Sequence[float]) -> list[bytes]:
        from operators.keyframes.reread import read_frames_at

        uri = str(batch["uri"][i])
        clip_start = batch["clip_start"][i]
        offset = float(clip_start) if clip_start is not None and not np.isnan(clip_start) else 0.0
        try:
            shown = (_int(batch, "width", i), _int(batch, "height", i))
            with holding(uri, cell(batch, SOURCE_BYTES, i)):
                frames = read_frames_at(
                    uri,
                    [offset + t for t in times],
                    self.config.image_longest_side,
                    _int(batch, "rotation", i),
                    display_size=shown if min(shown) > 0 else None,
                )
        except Exception as exc:  # unreadable source: this row's problem
            raise RowRejected("reread_failed", f"{uri}: {type(exc).__name__}: {exc}") from exc
        return [encode_jpeg(rgb, quality=self.config.jpeg_quality) for rgb in frames]


def _int(batch: Batch, column: str, i: int) -> int:
    """An integer cell (width, height, rotation); 0 when the probe left it missing."""
    value = cell(batch, column, i)
    return 0 if value is None else int(value)


def _png(jpeg: bytes) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(decode_image(jpeg), mode="RGB").save(out, format="PNG")
    return out.getvalue()


def _shrink_jpeg(data: bytes, longest_side: int, quality: int) -> bytes:
    from PIL import Image

    from operators.keyframes.reread import fit_longest

    rgb = decode_image(data)
    width, height = fit_longest(rgb.shape[1], rgb.shape[0], longest_side)
    resized = Image.fromarray(rgb, mode="RGB").resize((width, height), Image.Resampling.LANCZOS)
    return encode_jpeg(np.asarray(resized), quality=quality)
