"""The challenge's shard format, defined once: header words, magic, version, token dtype; writing, checking, reading.

A shard is 256 little-endian int32 header words ([0] magic 20240520, [1] version 1, [2] token count), then ``count``
little-endian uint16 token ids; file size = 1024 + 2 * count. Every document starts with BOS (id 1), no EOS.

The training script (``train_gpt.py``) ships as one self-contained file and cannot import this module: it carries its
own ``SHARD_MAGIC``, ``SHARD_VERSION``, ``SHARD_HEADER_WORDS`` and ``load_shard``, which tests/test_shard_format.py
checks against these.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pgolf.data.common import FILE_MODE
from pgolf.fsio import atomic_path, sha256_file

SHARD_MAGIC = 20240520
SHARD_VERSION = 1
HEADER_WORDS = 256
HEADER_DTYPE = "<i4"
HEADER_BYTES = HEADER_WORDS * 4
TOKEN_DTYPE = "<u2"
MAX_SHARD_TOKENS = 2**31 - 1
BOS_ID = 1
# The format as the manifest records it.
SHARD_FORMAT = {
    "magic": SHARD_MAGIC,
    "version": SHARD_VERSION,
    "header_bytes": HEADER_BYTES,
    "dtype": TOKEN_DTYPE,
    "bos_id": BOS_ID,
}


def shard_name(prefix: str, split: str, index: int) -> str:
    """``{prefix}_{split}_NNNNNN.bin``: the name of a split's ``index``-th shard."""
    return f"{prefix}_{split}_{index:06d}.bin"


def write_shard(path: str | os.PathLike, tokens: np.ndarray) -> None:
    """Write ``tokens`` as a challenge shard (atomically); ids must fit uint16."""
    path = Path(path)
    arr = np.asarray(tokens)
    if arr.ndim != 1:
        raise ValueError(f"{path}: tokens must be a 1-D array, got shape {arr.shape}")
    if arr.dtype != np.uint16:
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"{path}: tokens must be integers, got dtype {arr.dtype}")
        if arr.size and (int(arr.min()) < 0 or int(arr.max()) > 0xFFFF):
            raise ValueError(
                f"{path}: token ids must fit uint16 (0..65535), got range {int(arr.min())}..{int(arr.max())}"
            )
    if arr.size > MAX_SHARD_TOKENS:
        raise ValueError(f"{path}: {arr.size} tokens do not fit the int32 header count")
    header = np.zeros(HEADER_WORDS, dtype=HEADER_DTYPE)
    header[0], header[1], header[2] = SHARD_MAGIC, SHARD_VERSION, arr.size
    data = np.ascontiguousarray(arr, dtype=TOKEN_DTYPE)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(header.tobytes())
            data.tofile(f)
        os.chmod(tmp, FILE_MODE)


def shard_token_count(path: str | os.PathLike) -> int:
    """Check a shard's header and size; return its token count (ValueError naming the file otherwise)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(HEADER_BYTES)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: shard not found") from None
    if len(head) < HEADER_BYTES:
        raise ValueError(f"{path}: too short for a shard header ({len(head)} bytes, need {HEADER_BYTES})")
    header = np.frombuffer(head, dtype=HEADER_DTYPE)
    magic, version, count = int(header[0]), int(header[1]), int(header[2])
    if magic != SHARD_MAGIC:
        raise ValueError(f"{path}: bad magic {magic} (expected {SHARD_MAGIC}); not a challenge shard")
    if version != SHARD_VERSION:
        raise ValueError(f"{path}: unsupported shard version {version} (expected {SHARD_VERSION})")
    if count < 0:
        raise ValueError(f"{path}: negative token count {count} in header")
    expected = HEADER_BYTES + 2 * count
    if size < expected:
        raise ValueError(f"{path}: truncated: header says {count} tokens ({expected} bytes) but file has {size} bytes")
    if size > expected:
        raise ValueError(
            f"{path}: {size - expected} extra bytes: header says {count} tokens ({expected} bytes), file has {size}"
        )
    return count


def read_shard(path: str | os.PathLike, mmap: bool = False) -> np.ndarray:
    """Return a shard's tokens as uint16 (a read-only memory map when ``mmap``); ValueError naming a bad file."""
    path = Path(path)
    count = shard_token_count(path)
    if count == 0:
        return np.zeros(0, dtype=np.uint16)
    if mmap:
        return np.memmap(path, dtype=TOKEN_DTYPE, mode="r", offset=HEADER_BYTES, shape=(count,))
    tokens = np.fromfile(path, dtype=TOKEN_DTYPE, count=count, offset=HEADER_BYTES)
    if tokens.size != count:  # the file shrank between the check and the read
        raise ValueError(f"{path}: truncated while reading ({tokens.size} of {count} tokens)")
    return tokens.astype(np.uint16, copy=False)


def scan_shard(path: Path) -> dict:
    """Header check, token count, size, sha256 and largest token id (-1 for none) of one shard."""
    tokens = read_shard(path, mmap=True)
    return {
        "tokens": int(tokens.size),
        "bytes": path.stat().st_size,
        "sha256": sha256_file(path),
        "max_token": int(tokens.max()) if tokens.size else -1,
    }
