"""CPU cost of opening one sample of a webdataset shard: fsspec's ``tar://member::shard`` (which
indexes the shard on every open) against the ranged URI the listing writes
(``tar://member@offset+size::shard``: one range read).

Usage: ``python bench/shard_reads.py [--members 200 1000 4000] [--json bench/results/shard_reads.json]``.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.machine import cpu_name  # noqa: E402
from operators.io import open_binary  # noqa: E402
from operators.sources import WebDatasetSource, list_source_partition, source_partitions  # noqa: E402


def write_shard(path: Path, members: int, payload: int) -> None:
    with tarfile.open(path, "w") as tar:
        for k in range(members):
            for ext, data in (("mp4", b"v" * payload), ("json", json.dumps({"key": f"{k:06d}"}).encode())):
                info = tarfile.TarInfo(f"{k:06d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def cpu_ms_per_open(uri: str, repeat: int) -> float:
    start = time.process_time()
    for _ in range(repeat):
        with open_binary(uri) as f:
            f.read()
    return (time.process_time() - start) / repeat * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, nargs="+", default=[200, 1000, 4000])
    parser.add_argument("--payload", type=int, default=100_000, help="bytes per video member")
    parser.add_argument("--json", default=str(REPO / "bench" / "results" / "shard_reads.json"))
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as work:
        for members in args.members:
            shard = Path(work) / f"s{members}.tar"
            write_shard(shard, members, args.payload)
            config = WebDatasetSource(kind="webdataset", shards=str(shard))
            rows = list(list_source_partition(config, source_partitions(config)[0]))
            middle = rows[len(rows) // 2]["uri"]
            plain = "tar://" + middle.split("@", 1)[0][len("tar://"):] + "::" + str(shard)
            r = {"members": members, "fsspec_ms": round(cpu_ms_per_open(plain, 5), 2),
                 "ranged_ms": round(cpu_ms_per_open(middle, 50), 3)}
            results.append(r)
            print(f"{members:>5} members: fsspec tar:// {r['fsspec_ms']:8.2f} ms CPU per open, "
                  f"ranged {r['ranged_ms']:6.3f} ms", flush=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"machine": cpu_name(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
