"""Which listed rows a run still has to process, decided one hash bucket of ids at a time.

The job puts the listing's rows and the ids already decided (in ``dataset/`` and ``rejected/``)
into buckets by a hash of ``video_id`` and calls :func:`resolve_bucket` on each bucket, on the
workers: no process ever holds every id. Within a bucket:

- of two listed rows with one id (two sources, or one metadata file naming a video twice), the
  one listed first keeps the id; the others are rejected ``duplicate_id`` under an id of their
  own (``{id}~dup-{hash of the uri}``), so no id is written twice and the detail names both uris;
- a row whose id is already decided is left out (the anti-join of resume).
"""

from __future__ import annotations

import hashlib
import zlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from operators.dataset.schema import LISTING_PART, LISTING_ROW, LISTING_SCHEMA, URI, VIDEO_ID

#: Marks, in the bucketed rows, an id already decided by an earlier run (not a listed row).
DONE = "decided"
BUCKET = "id_bucket"
DUPLICATE_ID = "duplicate_id"


def bucket_of(video_ids: pa.Array | list, buckets: int) -> np.ndarray:
    """A stable bucket per id (CRC-32: the same on every worker and every run)."""
    ids = video_ids.to_pylist() if isinstance(video_ids, pa.Array | pa.ChunkedArray) else video_ids
    return np.fromiter((zlib.crc32(str(v).encode()) % buckets for v in ids), dtype=np.int64, count=len(ids))


def listed_for_buckets(table: pa.Table, buckets: int) -> pa.Table:
    """Listed rows with their bucket and ``decided`` = False."""
    table = table.select(LISTING_SCHEMA.names).cast(LISTING_SCHEMA)
    table = table.append_column(DONE, pa.array(np.zeros(table.num_rows, dtype=bool)))
    return table.append_column(BUCKET, pa.array(bucket_of(table.column(VIDEO_ID), buckets)))


def decided_for_buckets(table: pa.Table, buckets: int) -> pa.Table:
    """Ids an earlier run decided, shaped like listed rows (other columns null), ``decided`` = True."""
    ids = table.column(VIDEO_ID).cast(pa.string())
    n = len(ids)
    columns = [ids if f.name == VIDEO_ID else pa.nulls(n, f.type) for f in LISTING_SCHEMA]
    out = pa.Table.from_arrays(columns, schema=LISTING_SCHEMA)
    out = out.append_column(DONE, pa.array(np.ones(n, dtype=bool)))
    return out.append_column(BUCKET, pa.array(bucket_of(ids, buckets)))


def duplicate_id(video_id: str, uri: str) -> str:
    return f"{video_id}~dup-{hashlib.sha1(uri.encode()).hexdigest()[:10]}"


def resolve_bucket(table: pa.Table) -> pa.Table:
    """The rows of one bucket still to process: unique ids, none already decided (see module)."""
    decided = pc.fill_null(table.column(DONE), False)
    done_ids = set(pc.filter(table.column(VIDEO_ID), decided).to_pylist())
    listed = table.filter(pc.invert(decided))
    if listed.num_rows == 0:
        return listed.select(LISTING_SCHEMA.names[:-2])
    listed = listed.sort_by([(LISTING_PART, "ascending"), (LISTING_ROW, "ascending")])
    ids = listed.column(VIDEO_ID).to_pylist()
    uris = listed.column(URI).to_pylist()
    first_uri: dict[str, str] = {}
    new_ids, stage, reason, detail = [], [], [], []
    old_stage = listed.column("reject_stage").to_pylist()
    old_reason = listed.column("reject_reason").to_pylist()
    old_detail = listed.column("reject_detail").to_pylist()
    for i, (video_id, uri) in enumerate(zip(ids, uris, strict=True)):
        if video_id not in first_uri:
            first_uri[video_id] = uri or ""
            new_ids.append(video_id)
            stage.append(old_stage[i])
            reason.append(old_reason[i])
            detail.append(old_detail[i])
            continue
        new_ids.append(duplicate_id(video_id, f"{uri or ''}#{i if not uri else ''}"))
        stage.append("source")
        reason.append(DUPLICATE_ID)
        detail.append(f"video_id {video_id!r} of {uri!r} is already taken by {first_uri[video_id]!r}")
    keep = np.fromiter((v not in done_ids for v in new_ids), dtype=bool, count=len(new_ids))
    out = listed.select(LISTING_SCHEMA.names[:-2])
    replaced = {VIDEO_ID: new_ids, "reject_stage": stage, "reject_reason": reason, "reject_detail": detail}
    for name, values in replaced.items():
        out = out.set_column(out.schema.get_field_index(name), name, pa.array(values, type=pa.string()))
    return out.filter(pa.array(keep))
