"""The released ShareCaptioner-Video prompt strings and image layouts (``llm.prompts: sharecaptioner``).

Taken from the ShareGPT4Video repository's captioner demo (``captioner/app.py``) and batch
scripts (``captioner/*_lmdeploy.py``), so a server hosting ShareCaptioner-Video gets the inputs
its model was trained on:

- sliding captioning: keyframe 0 alone with ``FIRST_FRAME``; each later call one image, the
  previous and the current frame stacked vertically with a 50 px white gap (the previous one on
  top), and ``DIFFERENTIAL`` with both frames' index and time and the previous caption;
- the summary: ``SUMMARY_HEAD`` then one ``SUMMARY_LINE`` per caption, numbered from 1;
- fast captioning: the keyframes tiled row by row into one grid image with ``FAST``;
- prompt re-captioning: ``RECAPTION_TO_DETAILED``.

The released strings are kept verbatim, spelling included ("happend", "discribe"): the model was
trained on them. The release numbers frames by position and writes times as whole seconds
(``{}.00``, frames sampled every 2 s); here the keyframes' real positions and times are used, in
the same ``X.XX Second(s)`` form.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

FIRST_FRAME = "This is the first frame of a video, describe it in detail."
DIFFERENTIAL = (
    "Here are the Video frame {prev_index} at {prev_timestamp} Second(s) and Video frame {frame_index} "
    "at {timestamp} Second(s) of a video, describe what happend between them. What happend before "
    "is: {prev_caption}"
)
SUMMARY_HEAD = "Summarize the following per frame descriptions:\n"
SUMMARY_LINE = "Video frame {number} at {timestamp} Second(s) description: {text}\n"
FAST = "Here are a few key frames of a video, discribe this video in detail."
RECAPTION_TO_DETAILED = "Translate this brief generation prompt into a detailed caption: {text}"
#: White rows between the two stacked frames of a sliding-captioning image.
STACK_GAP_PX = 50


def _seconds(t: float) -> str:
    return f"{float(t):.2f}"


def differential_text(
    prev_caption: str, prev_index: int, prev_timestamp: float, frame_index: int, timestamp: float
) -> str:
    return DIFFERENTIAL.format(
        prev_index=prev_index,
        prev_timestamp=_seconds(prev_timestamp),
        frame_index=frame_index,
        timestamp=_seconds(timestamp),
        prev_caption=prev_caption,
    )


def summary_text(captions: Sequence[Mapping[str, Any]]) -> str:
    lines = [
        SUMMARY_LINE.format(number=n, timestamp=_seconds(float(c["timestamp"])), text=c["text"])
        for n, c in enumerate(captions, start=1)
    ]
    return SUMMARY_HEAD + "".join(lines)


def _jpeg(image: Any, quality: int) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def stack_frames(top: bytes, bottom: bytes, quality: int = 90) -> bytes:
    """The two frames in one JPEG, ``top`` above ``bottom`` with a white gap, as the release
    builds them (``Image.new('RGB', (w, 2*h + 50), 'white')``); a bottom frame of another size
    is resized to the top one's."""
    from PIL import Image

    with Image.open(io.BytesIO(top)) as a, Image.open(io.BytesIO(bottom)) as b:
        a, b = a.convert("RGB"), b.convert("RGB")
        if b.size != a.size:
            b = b.resize(a.size, Image.Resampling.BILINEAR)
        w, h = a.size
        canvas = Image.new("RGB", (w, 2 * h + STACK_GAP_PX), "white")
        canvas.paste(a, (0, 0))
        canvas.paste(b, (0, h + STACK_GAP_PX))
        return _jpeg(canvas, quality)


def tile_frames(frames: Sequence[bytes], columns: int = 0, quality: int = 90) -> bytes:
    """The frames in one JPEG grid, row by row, every tile at the first frame's size (as the
    release's fast captioner tiles them); ``columns`` 0 = ceil(sqrt(n))."""
    import math

    from PIL import Image

    if not frames:
        raise ValueError("no frames to tile")
    images = []
    for data in frames:
        with Image.open(io.BytesIO(data)) as im:
            images.append(im.convert("RGB"))
    w, h = images[0].size
    n = len(images)
    columns = max(1, min(n, columns or math.ceil(math.sqrt(n))))
    rows = math.ceil(n / columns)
    grid = Image.new("RGB", (columns * w, rows * h), "black")
    for i, im in enumerate(images):
        if im.size != (w, h):
            im = im.resize((w, h), Image.Resampling.BILINEAR)
        r, c = divmod(i, columns)
        grid.paste(im, (c * w, r * h))
    return _jpeg(grid, quality)
