"""Peak memory and CPU time of ``sg4v report`` as the output grows.

    python bench/report.py                    # 2k, 20k, 60k kept videos
    python bench/report.py --sizes 1000 5000  # any sizes

Each size: a synthetic finished output (``testing.outputs``: files of 1,000 rows, three packed
keyframes per video, one rejection per ten kept), then the report in a fresh interpreter that
records its peak RSS over its own imports (``ru_maxrss``) and its CPU time (``process_time``).
A report that streams stays flat; one that holds every row grows ~10 KB a row.
Prints a markdown table and writes bench/results/report.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import cpu_name  # noqa: E402
from testing.outputs import write_synthetic_output  # noqa: E402

MEASURE = """
import json, resource, sys, time
from PIL import Image  # noqa: F401
import pyarrow.parquet  # noqa: F401
from operators.dataset.report import write_report
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.process_time()
write_report(sys.argv[1], sys.argv[2])
cpu = time.process_time() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"base_mib": base / 1024, "peak_mib": peak / 1024, "cpu_s": cpu}))
"""


def measure(rows: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        output = write_synthetic_output(Path(tmp) / "out", rows)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        result = subprocess.run([sys.executable, "-c", MEASURE, str(output), f"{tmp}/report/index.html"],
                                capture_output=True, text=True, env=env, check=True)
        figures = json.loads(result.stdout.strip().splitlines()[-1])
    figures.update(rows=rows, added_mib=figures["peak_mib"] - figures["base_mib"])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2_000, 20_000, 60_000])
    args = parser.parse_args()
    results = [measure(n) for n in args.sizes]
    print(f"machine: {cpu_name()}\n")
    print("| kept videos | peak RSS | of which over the imports' peak | CPU s | CPU us per video |")
    print("|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['rows']:,} | {r['peak_mib']:.0f} MiB | {r['added_mib']:.1f} MiB | {r['cpu_s']:.1f} | "
              f"{1e6 * r['cpu_s'] / r['rows']:.0f} |")
    out = ROOT / "bench" / "results" / "report.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"machine": cpu_name(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
