from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from html import unescape
from pathlib import Path

import pytest

from operators.dataset.report import dataset_summary, relative_root, write_report
from tests.ray_jobs.fake_output import REJECTED, UNCAPTIONED, VIDEOS, write_output

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(n)), None)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium not installed (Debian/Ubuntu: apt-get install -y chromium)")


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    output = write_output(tmp_path_factory.mktemp("report") / "out")
    return Path(write_report(str(output), page_size=2))


@pytest.fixture(scope="module")
def packed_report(tmp_path_factory) -> Path:
    """The same output with its keyframes packed into an archive (the pipeline's default)."""
    output = write_output(tmp_path_factory.mktemp("packed") / "out", packed=True)
    return Path(write_report(str(output), page_size=2))


def render(page: Path, fragment: str = "") -> str:
    """The page's DOM after its scripts ran, as headless Chromium sees it."""
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--virtual-time-budget=5000", "--dump-dom",
             page.as_uri() + fragment],
            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    return unescape(result.stdout)


def text_of(dom: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))


def test_report_files_and_pages(report):
    data = report.parent / "data"
    assert report.name == "index.html" and report.parent.name == "report"
    assert sorted(p.name for p in data.iterdir()) == ["ids-0000.js", "page-0000.js", "page-0001.js",
                                                       "page-0002.js", "summary.js"]
    assert (report.parent / "report.js").exists() and (report.parent / "report.css").exists()
    assert '"id":"alpha"' in (data / "page-0000.js").read_text()
    assert '"id":"pending"' in (data / "page-0002.js").read_text()


def test_dataset_summary_numbers():
    rows = [*VIDEOS, UNCAPTIONED]
    s = dataset_summary(rows, REJECTED, {"inputs": 9, "wall_seconds": 3.0, "other": 1})
    assert (s["kept"], s["captioned"], s["rejected"]) == (5, 4, 4)
    assert s["byReason"][0] == ["probe", "not_a_video", 2]
    assert sorted(map(tuple, s["byReason"][1:])) == [("duration_filter", "too_long", 1),
                                                     ("semantic_dedup", "duplicate", 1)]
    assert s["duplicates"] == [{"id": "alpha_copy", "uri": "/videos/alpha_copy.mp4", "nearest": "alpha",
                                "similarity": 0.9712}]
    assert s["keyframesHist"] == [(1, 1), (2, 2), (3, 1), (4, 1)] and s["keyframesTotal"] == 12
    assert s["usage"]["calls"] == 4 + 2 + 3 + 5
    assert s["usage"]["cost_usd"] == pytest.approx(0.0125 * 14)
    assert s["lastRun"] == {"inputs": 9, "wall_seconds": 3.0}


def test_relative_root():
    assert relative_root("/data/out", "/data/out/report") == ".."
    assert relative_root("/data/out", "/srv/www/sg4v") == "../../../data/out"
    assert relative_root("s3://b/out", "s3://b/out/report") == ".."
    assert relative_root("s3://b/out/", "s3://b/out/a/b") == "../.."
    assert relative_root("s3://b/out", "s3://other/r") == "s3://b/out"


@needs_chromium
def test_browser_shows_the_data(report):
    dom = render(report)
    text = text_of(dom)
    # Dataset-level numbers.
    assert re.search(r"Kept videos 5 4 with API captions", text)
    assert re.search(r"Rejected 4 1 duplicate\b", text)
    assert "probe not_a_video 2" in text and "duration_filter too_long 1" in text
    assert "alpha_copy /videos/alpha_copy.mp4 alpha 0.971" in text
    assert "$0.1750" in text  # 14 calls at $0.0125
    # First page: alpha and beta, with keyframes, timestamps, captions, summary, cost.
    assert "Page 1 of 3" in text and "videos 1–2 of 5" in text
    for needle in ["alpha", "/videos/alpha.mp4", "short caption of alpha", "#1 · 4.00 s", "#2 · 8.50 s",
                   "alpha caption 2 at 8.50s", "differential", "Summary of alpha: things happen.",
                   "$0.0500 · 4 calls · 4,000 in / 400 out tokens", "Summary of beta: things happen."]:
        assert needle in text, needle
    assert "gamma" not in text.split("Page 1 of 3")[1]  # later pages are not loaded
    sources = re.findall(r'<img[^>]* src="([^"]+)"', dom)
    assert len(sources) == 3 + 1
    for src in sources:
        assert (report.parent / src).resolve().is_file(), src


@needs_chromium
def test_browser_pages_and_links(report):
    text = text_of(render(report, "#page=3"))
    assert "Page 3 of 3" in text and "pending" in text and "No API captions yet." in text
    assert "no caption yet" in text and "no API cost yet" in text
    dom = render(report, "#video=clip.7")
    assert 'class="video focus" id="video-clip.7"' in dom
    text = text_of(dom)
    assert "Page 2 of 3" in text and "clip 10.00 s – 16.00 s" in text and "clip.7 caption 1 at 2.50s" in text


@needs_chromium
def test_browser_shows_packed_keyframes(packed_report):
    """Archive members cannot be shown from file:// by path: the report embeds them, and the
    browser decodes every one (naturalWidth > 0 once loaded)."""
    assert not list((packed_report.parents[1] / "keyframes").glob("*/*.jpg"))  # only the archive
    page = packed_report.parent / "data" / "page-0000.js"
    assert page.read_text().count("data:image/jpeg;base64,") == 3 + 1
    probe = packed_report.parent / "probe.html"
    probe.write_text(packed_report.read_text().replace(
        "</body>", "<script>setTimeout(function () { var ok = [].filter.call("
        "document.images, function (i) { return i.complete && i.naturalWidth === 64; });"
        " document.body.setAttribute('data-decoded', ok.length + '/' + document.images.length);"
        " }, 1500);</script></body>"))
    dom = render(probe)
    assert 'data-decoded="4/4"' in dom, re.findall(r"data-decoded=\"[^\"]*\"", dom)
    text = text_of(dom)
    assert "alpha caption 2 at 8.50s" in text and "Page 1 of 3" in text
    text = text_of(render(packed_report, "#video=gamma"))
    assert "Page 2 of 3" in text and "gamma caption 3 at 14.00s" in text


REPORT_PEAK = """
import json, resource, sys
from PIL import Image  # noqa: F401  (imported by the report for packed keyframes)
import pyarrow.parquet  # noqa: F401
from operators.dataset.report import write_report
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
write_report(sys.argv[1], sys.argv[2])
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"base_kib": base, "peak_kib": peak}))
"""


def report_peak_mib(output: Path, dest: Path) -> float:
    """Peak RSS the report adds over its imports, in a fresh interpreter."""
    import json
    import os
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    result = subprocess.run([sys.executable, "-c", REPORT_PEAK, str(output), str(dest / "index.html")],
                            capture_output=True, text=True, timeout=300, env=env, check=True)
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    return (figures["peak_kib"] - figures["base_kib"]) / 1024


def test_report_of_20k_rows_streams_in_bounded_memory(tmp_path):
    """20,000 kept videos (20 files, packed keyframes) and 2,000 rejected: the report holds one
    file and one page at a time. Holding every row (as before) took ~10 KB a row: ~200 MB here."""
    from testing.outputs import write_synthetic_output

    output = write_synthetic_output(tmp_path / "out", 20_000)
    added = report_peak_mib(output, tmp_path / "report")
    assert added < 60, f"the report added {added:.0f} MiB of peak RSS for 20k rows"
    data = tmp_path / "report" / "data"
    assert len(list(data.glob("page-*.js"))) == 400 and len(list(data.glob("ids-*.js"))) == 4
    summary = (data / "summary.js").read_text()
    assert '"kept":20000' in summary and '"rejected":2000' in summary and '"duplicatesTotal":200' in summary
    assert (data / "page-0399.js").read_text().count("data:image/jpeg;base64,") == 50 * 3
