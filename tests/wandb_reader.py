"""Read the records of an offline W&B run file (`run-<id>.wandb`) without the network.

The file is a LevelDB-style log: a 7-byte header, then 32 KiB blocks of chunks, each
`crc32 (4) | length (2, little endian) | type (1: full, 2: first, 3: middle, 4: last) | data`;
a record's data is a serialised `wandb.proto.wandb_internal_pb2.Record`.
"""

from __future__ import annotations

import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2

HEADER = 7
BLOCK = 32768
CHUNK_HEADER = 7


def records(path: Path) -> list[wandb_internal_pb2.Record]:
    data = path.read_bytes()
    out, pending, pos = [], b"", HEADER
    while pos + CHUNK_HEADER <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < CHUNK_HEADER:  # block trailer padding
            pos += left_in_block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + CHUNK_HEADER])
        chunk = data[pos + CHUNK_HEADER : pos + CHUNK_HEADER + length]
        pos += CHUNK_HEADER + length
        if kind == 0 and length == 0:
            continue
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            out.append(record)
            pending = b""
    return out


def logged_values(path: Path) -> dict[str, str]:
    """Every key logged to history or summary, with its last JSON value."""
    values = {}
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            items = record.history.item
        elif kind == "summary":
            items = record.summary.update
        else:
            continue
        for item in items:
            key = item.key or "/".join(item.nested_key)
            values[key] = item.value_json
    return values
