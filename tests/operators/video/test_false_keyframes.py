"""A seek that lands on a picture flagged as a keyframe that does not decode alone.

cockatoo.mp4 (a real H.264 file) flags such a picture at 7.25 s: FFmpeg's frames after a seek
there are flagged corrupt (grey/green). Keyframe re-reads and sampling must decode from the
start instead, and give the same pictures as a decode from the start of the file.
"""

from __future__ import annotations

import numpy as np

from operators.keyframes.reread import read_frames_at


def frame_from_start(path: str, target: float, size: tuple[int, int]) -> np.ndarray:
    import av
    from PIL import Image

    with av.open(path) as container:
        stream = container.streams.video[0]
        best = None
        for frame in container.decode(stream):
            if frame.pts * float(stream.time_base) > target + 1e-6:
                break
            best = frame
    image = best.to_image().resize(size, Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.float32)


def test_reread_after_a_false_keyframe_matches_a_decode_from_the_start(real_videos):
    path = str(real_videos / "cockatoo.mp4")
    for target in (7.3, 7.5, 8.0):
        [reread] = read_frames_at(path, [target], 640)
        reference = frame_from_start(path, target, (reread.shape[1], reread.shape[0]))
        assert np.abs(reread.astype(np.float32) - reference).mean() < 6.0, target
