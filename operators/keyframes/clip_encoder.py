"""CLIP image embeddings of every sampled frame (the keyframe stage's GPU half)."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import numpy as np

from operators.base import Batch, Operator, Resources, object_column, reject
from operators.keyframes.clip_model import ClipConfig
from operators.video.frames import decode_image

logger = logging.getLogger(__name__)


class ClipEncode(Operator):
    """Embed each row's ``frames`` (JPEG bytes) with an open_clip image tower.

    Output ``frame_embeddings``: per row a float32 numpy array of shape [n_frames, d] with
    L2-normalized rows, in an object column (Ray may hand it on as a variable-shaped tensor
    column; readers should take ``np.asarray(value, dtype=np.float32)`` per row). A row with no
    frames gets a [0, d] array. Frames of all videos in a batch are pooled into forward passes
    of ``image_batch_size`` images, then split back per video.
    """

    name: ClassVar[str] = "clip_encode"
    input_columns: ClassVar[tuple[str, ...]] = ("frames",)
    output_columns: ClassVar[tuple[str, ...]] = ("frame_embeddings",)
    stateful: ClassVar[bool] = True

    def __init__(self, config: ClipConfig | None = None, resources: Resources | None = None) -> None:
        super().__init__(config or ClipConfig(), resources)
        self.encoder: Any = None

    def default_resources(self) -> Resources:
        return Resources(num_cpus=2.0, num_gpus=1.0, concurrency=(0, 8), batch_size=16)

    def setup(self) -> None:
        from operators.keyframes.clip_model import ClipImageEncoder

        self.encoder = ClipImageEncoder(self.config)

    def __call__(self, batch: Batch) -> Batch:
        if self.encoder is None:
            self.setup()
        n = len(batch["frames"])
        refs: list[tuple[int, Any]] = []  # (row, JPEG bytes) for every frame of the batch
        counts = []
        for i in range(n):
            frames = batch["frames"][i]
            frames = [] if frames is None else list(frames)
            refs.extend((i, f) for f in frames)
            counts.append(len(frames))
        failed: dict[int, str] = {}
        embeddings = self._embed_all(refs, failed)
        dim = self.encoder.embed_dim
        out, start = [], 0
        for i, count in enumerate(counts):
            if i in failed:
                reject(batch, i, self.name, "bad_frame", failed[i])
                out.append(np.zeros((0, dim), dtype=np.float32))
            else:
                out.append(embeddings[start : start + count])
            start += count
        batch["frame_embeddings"] = object_column(out)
        return batch

    def _embed_all(self, refs: list[tuple[int, Any]], failed: dict[int, str]) -> np.ndarray:
        """Decode JPEGs in threads (PIL releases the GIL), one chunk ahead of the model, so at
        most two chunks of decoded frames are in memory."""
        from concurrent.futures import ThreadPoolExecutor

        size = self.config.image_batch_size
        chunks = [refs[i : i + size] for i in range(0, len(refs), size)]
        if not chunks:
            return np.zeros((0, self.encoder.embed_dim), dtype=np.float32)
        workers = max(1, int(self.resources.num_cpus))
        parts = []
        with ThreadPoolExecutor(max_workers=workers) as pool:
            pending = [pool.submit(_decode, data) for _, data in chunks[0]]
            for k, chunk in enumerate(chunks):
                results = [f.result() for f in pending]
                if k + 1 < len(chunks):
                    pending = [pool.submit(_decode, data) for _, data in chunks[k + 1]]
                images = []
                for (row, _), (image, error) in zip(chunk, results, strict=True):
                    if error is not None:
                        failed.setdefault(row, error)
                    images.append(image)
                parts.append(self.encoder.encode(self.encoder.preprocess(images)))
        return np.concatenate(parts)


_PLACEHOLDER = np.zeros((8, 8, 3), dtype=np.uint8)


def _decode(data: Any) -> tuple[np.ndarray, str | None]:
    """RGB frame, or a placeholder and the error (the row is rejected afterwards)."""
    try:
        return decode_image(bytes(data)), None
    except Exception as exc:
        return _PLACEHOLDER, f"{type(exc).__name__}: {exc}"
