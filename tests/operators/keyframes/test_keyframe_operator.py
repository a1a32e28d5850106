"""SelectKeyframes on generated videos with hard scene cuts: keyframes land on the cuts, and the
keyframe images are re-read from the source at the keyframe times at a higher resolution."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from operators.base import object_column
from operators.io import join, open_binary, parse_range_uri
from operators.keyframes.operator import SelectKeyframes, keyframe_name, keyframe_path, safe_video_dir
from operators.keyframes.reread import read_frames_at, rotate_for_display
from operators.keyframes.select import KeyframeConfig, select_keyframes
from operators.video.frames import decode_image, encode_jpeg
from testing.media import make_video, read_index

FPS = Fraction(30000, 1001)  # 29.97: int(fps) would drift by a frame every ~33 s
CUTS = [(0, (200, 40, 40)), (75, (40, 200, 40)), (165, (40, 40, 200))]
NUM_FRAMES = 240


def sample(
    path: Path, step_s: float, size: tuple[int, int], start_s: float = 0.0
) -> tuple[list[bytes], list[float]]:
    """Frames every ``step_s`` from ``start_s`` (latest frame at or before each time), their times
    relative to ``start_s``: a stand-in for the frame sampler."""
    import av

    decoded = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            decoded.append(
                (float(frame.time), frame.to_ndarray(format="rgb24", width=size[0], height=size[1]))
            )
    jpegs, times, target = [], [], start_s
    while target <= decoded[-1][0] + 1e-9:
        t, rgb = [d for d in decoded if d[0] <= target + 1e-6][-1]
        jpegs.append(encode_jpeg(rgb))
        times.append(t - start_s)
        target += step_s
    return jpegs, times


def pixel_embedding(rgb: np.ndarray) -> np.ndarray:
    """A deterministic stand-in for CLIP: mean colour of a 4x4 grid below the index band."""
    h, w = rgb.shape[:2]
    body = rgb[h // 4 :].astype(np.float32) / 255.0
    cells = [
        c.mean(axis=(0, 1)) for row in np.array_split(body, 4, axis=0) for c in np.array_split(row, 4, axis=1)
    ]
    return np.concatenate(cells)


@pytest.fixture(scope="module")
def scene_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("video") / "cuts.mp4"
    return make_video(path, num_frames=NUM_FRAMES, fps=FPS, width=640, height=480, scenes=CUTS, gop=48)


def frame_time(index: int) -> float:
    return float(index / FPS)


def row_batch(
    video: Path,
    jpegs: list[bytes],
    times: list[float],
    clip_start: float | None = None,
    video_id: str = "cuts",
    width: int = 640,
    height: int = 480,
    rotation: int = 0,
) -> dict:
    embeddings = np.stack([pixel_embedding(decode_image(j)) for j in jpegs])
    return {
        "video_id": np.array([video_id], dtype=object),
        "uri": np.array([str(video)], dtype=object),
        "clip_start": np.array([clip_start], dtype=object),
        "frames": object_column([jpegs]),
        "frame_timestamps": object_column([times]),
        "frame_embeddings": object_column([embeddings]),
        "width": np.array([width]),
        "height": np.array([height]),
        "rotation": np.array([rotation]),
    }


def test_keyframes_land_on_scene_cuts(scene_video: Path) -> None:
    jpegs, times = sample(scene_video, 0.5, (160, 120))
    embeddings = np.stack([pixel_embedding(decode_image(j)) for j in jpegs])
    picked = select_keyframes(embeddings, times, KeyframeConfig(keep_last="min_gap", min_gap_s=99))
    # Sampled at the last frame at or before 0, 0.5, 1.0, ...: the first frame of each scene
    # sampled is the one at or right after the cut.
    cut_times = [next(t for t in times if t >= frame_time(first) - 1e-6) for first, _ in CUTS]
    assert [times[k] for k in picked] == cut_times


def read_keyframe(root: Path, rel: str) -> bytes:
    """A keyframe the way the API stage, the report and the exports read it."""
    with open_binary(join(str(root), rel)) as f:
        return f.read()


@pytest.mark.parametrize("packing", ["archive", "files"])
def test_select_keyframes_rereads_at_high_resolution(scene_video: Path, tmp_path: Path, packing: str) -> None:
    jpegs, times = sample(scene_video, 0.5, (160, 120))
    op = SelectKeyframes(KeyframeConfig(packing=packing), output_dir=str(tmp_path))
    out = op(row_batch(scene_video, jpegs, times))
    assert out.get("reject_reason") is None
    indices, stamps, paths = (out[c][0] for c in SelectKeyframes.output_columns)
    assert stamps == [times[k] for k in indices] and stamps[0] == 0.0 and stamps[-1] == times[-1]
    assert len(indices) == 4  # three scenes and the last frame
    for k, (t, rel) in enumerate(zip(stamps, paths, strict=True)):
        if packing == "files":
            assert rel == keyframe_path("cuts", k, t) and rel.startswith("keyframes/cuts/")
        else:
            ranged = parse_range_uri(rel)
            assert ranged.member == keyframe_name("cuts", k, t) and ranged.file.endswith(".tar")
        rgb = decode_image(read_keyframe(tmp_path, rel))
        assert rgb.shape == (480, 640, 3)  # source size: 1024 would upscale
        assert read_index(rgb) == round(t * FPS)  # the frame shown at that time, no drift


def test_clip_start_offset_longest_side_and_never(scene_video: Path, tmp_path: Path) -> None:
    start = frame_time(60)
    jpegs, times = sample(scene_video, 1.0, (160, 120), start_s=start)
    op = SelectKeyframes(KeyframeConfig(image_longest_side=320, jpeg_quality=80), output_dir=str(tmp_path))
    out = op(row_batch(scene_video, jpegs, times, clip_start=start))
    for t, rel in zip(out["keyframe_timestamps"][0], out["keyframe_paths"][0], strict=True):
        rgb = decode_image(read_keyframe(tmp_path, rel))
        assert rgb.shape == (240, 320, 3)
        assert read_index(rgb) == round((start + t) * FPS)

    never = SelectKeyframes(KeyframeConfig(reread="never"), output_dir=str(tmp_path / "never"))
    out = never(row_batch(scene_video, jpegs, times, clip_start=start))
    for k, rel in zip(out["keyframe_indices"][0], out["keyframe_paths"][0], strict=True):
        assert read_keyframe(tmp_path / "never", rel) == jpegs[k]  # written as sampled


def test_large_sampled_frames_are_shrunk_not_reread(scene_video: Path, tmp_path: Path) -> None:
    jpegs, times = sample(scene_video, 2.0, (640, 480))
    op = SelectKeyframes(KeyframeConfig(image_longest_side=256), output_dir=str(tmp_path))
    out = op(row_batch(scene_video, jpegs, times, video_id="a/b c"))
    rel = out["keyframe_paths"][0][0]
    assert parse_range_uri(rel).member.startswith(f"{safe_video_dir('a/b c')}/") and " " not in rel
    assert decode_image(read_keyframe(tmp_path, rel)).shape == (192, 256, 3)


def test_rotation_and_failed_reread(scene_video: Path, tmp_path: Path) -> None:
    jpegs, times = sample(scene_video, 2.0, (120, 160))
    batch = row_batch(scene_video, jpegs, times, width=480, height=640, rotation=-90)
    bad = row_batch(tmp_path / "missing.mp4", jpegs, times, video_id="gone")
    both = {k: np.concatenate([batch[k], bad[k]]) for k in batch}
    out = SelectKeyframes(KeyframeConfig(), output_dir=str(tmp_path))(both)
    rgb = decode_image(read_keyframe(tmp_path, out["keyframe_paths"][0][0]))
    assert rgb.shape == (640, 480, 3)  # upright portrait
    assert out["reject_reason"][1] == "reread_failed" and out["reject_stage"][1] == "select_keyframes"
    assert out["keyframe_paths"][1] is None and out["reject_reason"][0] is None


def test_read_frames_at_matches_pts_and_rotates(scene_video: Path) -> None:
    targets = [0.0, frame_time(75), frame_time(76) - 0.001, frame_time(200), 100.0]
    got = [read_index(f) for f in read_frames_at(str(scene_video), targets, 320)]
    assert got == [0, 75, 75, 200, NUM_FRAMES - 1]
    img = np.arange(6, dtype=np.uint8).reshape(2, 3, 1)
    assert rotate_for_display(img, 90)[0, 0, 0] == img[0, 2, 0]  # counterclockwise
    assert rotate_for_display(img, -90).shape == (3, 2, 1)


def test_needs_output_dir_and_declares_its_columns(scene_video: Path) -> None:
    jpegs, times = sample(scene_video, 4.0, (160, 120))
    with pytest.raises(ValueError, match="output_dir"):
        SelectKeyframes()(row_batch(scene_video, jpegs, times))
    batch = row_batch(scene_video, jpegs, times)
    assert set(SelectKeyframes.input_columns) == set(batch)
    out = SelectKeyframes(KeyframeConfig(reread="never"), output_dir="memory://kf")(batch)
    assert set(out) == set(batch) | set(SelectKeyframes.output_columns)


def test_official_naming_writes_pngs_named_by_timestamp(scene_video: Path, tmp_path: Path) -> None:
    """keyframes.naming=official: `frame_{t:.2f}.png` as the released keyframe example names
    them; the images are real PNGs showing the frame at that time."""
    from PIL import Image

    from operators.keyframes.operator import keyframe_names

    jpegs, times = sample(scene_video, 0.5, (160, 120))
    op = SelectKeyframes(KeyframeConfig(naming="official", packing="files"), output_dir=str(tmp_path))
    out = op(row_batch(scene_video, jpegs, times))
    for t, rel in zip(out["keyframe_timestamps"][0], out["keyframe_paths"][0], strict=True):
        assert rel == f"keyframes/cuts/frame_{t:.2f}.png"
        with Image.open(tmp_path / rel) as image:
            assert image.format == "PNG"
        assert read_index(decode_image((tmp_path / rel).read_bytes())) == round(t * FPS)
    # Two times that round to the same 1/100 s never share a file.
    assert keyframe_names("v", [1.001, 1.004], "official") == ["v/frame_1.00.png", "v/frame_1.00_1.png"]
    # Packed, the archive members carry the same names.
    packed = SelectKeyframes(KeyframeConfig(naming="official"), output_dir=str(tmp_path / "packed"))
    out = packed(row_batch(scene_video, jpegs, times))
    assert [parse_range_uri(p).member for p in out["keyframe_paths"][0]] == [
        f"cuts/frame_{t:.2f}.png" for t in out["keyframe_timestamps"][0]]
def test_one_archive_per_batch_readable_by_tar(scene_video: Path, tmp_path: Path) -> None:
    """A batch's keyframes land in one plain tar named after its ids; a rewrite of the same batch
    (a retried task) replaces that archive instead of adding one; every member reads back."""
    import tarfile

    jpegs, times = sample(scene_video, 2.0, (160, 120))
    rows = [row_batch(scene_video, jpegs, times, video_id=v) for v in ("v1", "v2", "v3")]
    batch = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
    op = SelectKeyframes(KeyframeConfig(reread="never"), output_dir=str(tmp_path))
    first = op({k: v.copy() for k, v in batch.items()})
    again = op({k: v.copy() for k, v in batch.items()})
    archives = sorted((tmp_path / "keyframes").iterdir())
    assert len(archives) == 1 and archives[0].suffix == ".tar"
    assert [list(p) for p in first["keyframe_paths"]] == [list(p) for p in again["keyframe_paths"]]
    with tarfile.open(archives[0]) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    for i, video in enumerate(("v1", "v2", "v3")):
        for k, rel in zip(first["keyframe_indices"][i], first["keyframe_paths"][i], strict=True):
            assert read_keyframe(tmp_path, rel) == jpegs[k] == members[parse_range_uri(rel).member]
            assert parse_range_uri(rel).member.startswith(f"{video}/")
