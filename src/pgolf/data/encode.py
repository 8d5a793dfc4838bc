"""Documents -> shards: a documents file cut into chunks, encoded by a pool of spawned worker processes (each dies with
the process that started it), written in file order as BOS-separated documents in full shards."""

from __future__ import annotations

import itertools
import multiprocessing
import os
import re
import signal
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import numpy as np
import sentencepiece as spm

from pgolf import procs
from pgolf.data.common import check_name, cpu_count
from pgolf.data.documents import Chunk, chunks, doc_text
from pgolf.data.manifest import MANIFEST_NAME
from pgolf.data.shards import BOS_ID, MAX_SHARD_TOKENS, shard_name, write_shard
from pgolf.data.tokenizer import load_tokenizer

# The file is cut into chunks of at most this many documents / raw bytes, encoded by a pool of worker processes; at
# most CHUNKS_IN_FLIGHT_PER_WORKER chunks per worker are read ahead (this bounds the memory).
CHUNK_DOCS = 1024
CHUNK_BYTES = 4 << 20
CHUNKS_IN_FLIGHT_PER_WORKER = 2

T = TypeVar("T")


class _ShardWriter:
    """Accumulates tokens of one split and writes full shards of ``shard_tokens`` tokens as they fill."""

    def __init__(self, out_dir: Path, prefix: str, split: str, shard_tokens: int):
        self.out_dir, self.prefix, self.split = out_dir, prefix, split
        self.buf = np.empty(shard_tokens, dtype=np.uint16)  # pages are only touched as they fill
        self.fill = 0
        self.files: list[str] = []
        self.tokens = 0

    def add(self, tokens: np.ndarray) -> None:
        pos = 0
        while pos < tokens.size:
            n = min(tokens.size - pos, self.buf.size - self.fill)
            self.buf[self.fill : self.fill + n] = tokens[pos : pos + n]
            self.fill += n
            pos += n
            if self.fill == self.buf.size:
                self.flush()

    def flush(self) -> None:
        if self.fill == 0:
            return
        name = shard_name(self.prefix, self.split, len(self.files))
        write_shard(self.out_dir / name, self.buf[: self.fill])
        self.files.append(name)
        self.tokens += self.fill
        self.fill = 0


def _with_bos(encoded: list[list[int]]) -> np.ndarray:
    """Concatenate documents' token ids, each preceded by BOS."""
    if not encoded:
        return np.zeros(0, dtype=np.uint16)
    lens = np.fromiter((len(ids) for ids in encoded), dtype=np.int64, count=len(encoded))
    starts = np.zeros(len(encoded), dtype=np.int64)
    np.cumsum(lens[:-1] + 1, out=starts[1:])
    out = np.empty(int(lens.sum()) + len(encoded), dtype=np.uint16)
    body = np.ones(out.size, dtype=bool)
    body[starts] = False
    out[starts] = BOS_ID
    out[body] = np.fromiter(itertools.chain.from_iterable(encoded), dtype=np.uint16, count=int(lens.sum()))
    return out


def _remove_stale_shards(out_dir: Path, prefix: str, split: str, keep: set[str]) -> None:
    pattern = re.compile(rf"^{re.escape(prefix)}_{split}_\d{{6}}\.bin$")
    for path in out_dir.glob(f"{prefix}_{split}_*.bin"):
        if pattern.match(path.name) and path.name not in keep:
            path.unlink()


class _Encoded(NamedTuple):
    split: str
    tokens: np.ndarray  # uint16, each document preceded by BOS
    docs: int
    text_bytes: int  # UTF-8 bytes of the documents' text


def _encode_chunk(sp: spm.SentencePieceProcessor, chunk: Chunk) -> _Encoded:
    texts = [doc_text(chunk.docs_path, lineno, line) for lineno, line in chunk.lines]
    encoded = sp.encode(texts, out_type=int, num_threads=1)
    text_bytes = sum(len(t.encode("utf-8")) for t in texts)
    return _Encoded(chunk.split, _with_bos(encoded), len(texts), text_bytes)


# ---------------------------------------------------------------------------------------------------------------------
# The worker pool

_worker_sp: spm.SentencePieceProcessor | None = None


def _init_encoder(model_path: str) -> None:
    global _worker_sp
    # a worker dies with the process that started it (`pgolf data`): a killed data step leaves no encoder behind
    procs.die_with_parent(signal.SIGKILL)
    _worker_sp = spm.SentencePieceProcessor(model_file=model_path)


def _encode_in_worker(chunk: Chunk) -> _Encoded:
    assert _worker_sp is not None, "worker not initialised"
    return _encode_chunk(_worker_sp, chunk)


def bounded_map(submit: Callable[[T], Future], items: Iterable[T], window: int) -> Iterator[Any]:
    """Results of ``submit(item).result()`` in input order, with at most ``window`` items submitted but not yet
    yielded: the input is read only as fast as results are consumed (``Pool.imap`` would read all of it ahead)."""
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    pending: deque[Future] = deque()
    for item in items:
        pending.append(submit(item))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _process_context() -> multiprocessing.context.BaseContext:
    """Worker processes are spawned (safe when the parent has threads), as children of this process, so that they die
    with it (a fork server outlives a killed parent, and so do the workers it forked)."""
    return multiprocessing.get_context("spawn")


def _encode_into(
    consume: Callable[[Iterator[_Encoded]], None],
    docs_path: Path,
    tokenizer_model: Path,
    sp: spm.SentencePieceProcessor,
    chunked: Iterator[Chunk],
    workers: int,
) -> None:
    """``consume`` the chunks encoded, in file order: in this process (one worker) or by ``workers`` spawned processes
    (shut down before this returns or raises)."""
    if workers == 1:
        consume(_encode_chunk(sp, c) for c in chunked)
        return
    pool = ProcessPoolExecutor(
        workers,
        mp_context=_process_context(),
        initializer=_init_encoder,
        initargs=(str(tokenizer_model.resolve()),),
    )
    try:
        window = CHUNKS_IN_FLIGHT_PER_WORKER * workers
        consume(bounded_map(lambda c: pool.submit(_encode_in_worker, c), chunked, window))
    except BrokenProcessPool as e:
        raise RuntimeError(
            f"{docs_path}: a worker process died while encoding ({e}); out of memory? (try fewer threads)"
        ) from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# ---------------------------------------------------------------------------------------------------------------------
# Documents -> shards


def docs_to_shards(
    docs_path: str | os.PathLike,
    tokenizer_model: str | os.PathLike,
    out_dir: str | os.PathLike,
    prefix: str,
    val_docs: int,
    shard_tokens: int = 100_000_000,
    max_docs: int | None = None,
    threads: int | None = None,
    chunk_docs: int = CHUNK_DOCS,
    chunk_bytes: int = CHUNK_BYTES,
) -> dict:
    """Tokenize documents into ``{prefix}_val_*.bin`` (the first ``val_docs`` documents) and ``{prefix}_train_*.bin``.

    Each document becomes [BOS] + ids (no EOS); documents may cross shard boundaries. The file is streamed in chunks
    (``chunk_docs`` documents or ``chunk_bytes`` bytes) that ``threads`` worker processes parse and encode (all
    available cores by default; 1 = in this process); results are written in file order, so the shards do not depend on
    the number of workers or the chunk size. Memory is bounded: at most 2 chunks per worker are in flight, plus one
    shard buffer per split. Old shards of the same prefix beyond the new ones and the folder's manifest are removed
    (the data set changes).
    """
    docs_path, out_dir = Path(docs_path), Path(out_dir)
    check_name(prefix, "prefix")
    if val_docs < 1:
        raise ValueError(f"val_docs must be at least 1, got {val_docs}")
    if not 0 < shard_tokens <= MAX_SHARD_TOKENS:
        raise ValueError(f"shard_tokens must be in 1..{MAX_SHARD_TOKENS}, got {shard_tokens}")
    if chunk_docs < 1 or chunk_bytes < 1:
        raise ValueError(f"chunk_docs and chunk_bytes must be positive, got {chunk_docs} and {chunk_bytes}")
    if max_docs is not None and max_docs < 1:
        raise ValueError(f"max_docs must be positive, got {max_docs}")
    if not docs_path.is_file():
        raise FileNotFoundError(f"{docs_path}: documents file not found")
    sp = load_tokenizer(Path(tokenizer_model))
    if sp.vocab_size() > 65536:
        raise ValueError(f"{tokenizer_model}: vocab size {sp.vocab_size()} does not fit uint16 shards")
    workers = threads or cpu_count()

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST_NAME).unlink(missing_ok=True)
    t0 = time.perf_counter()
    writers = {split: _ShardWriter(out_dir, prefix, split, shard_tokens) for split in ("val", "train")}
    docs = {"val": 0, "train": 0}
    text_bytes = {"val": 0, "train": 0}

    def consume(results: Iterator[_Encoded]) -> None:
        for r in results:
            writers[r.split].add(r.tokens)
            docs[r.split] += r.docs
            text_bytes[r.split] += r.text_bytes

    chunked = chunks(docs_path, val_docs, max_docs, chunk_docs, chunk_bytes)
    _encode_into(consume, docs_path, Path(tokenizer_model), sp, chunked, workers)
    if docs["train"] == 0:
        raise ValueError(
            f"{docs_path}: {docs['val']} documents read; need more than val_docs={val_docs} to leave training data"
        )
    for split, writer in writers.items():
        writer.flush()
        _remove_stale_shards(out_dir, prefix, split, set(writer.files))
    elapsed = time.perf_counter() - t0
    tokens = writers["val"].tokens + writers["train"].tokens
    total_bytes = text_bytes["val"] + text_bytes["train"]
    return {
        "docs": docs["val"] + docs["train"],
        "val_docs": docs["val"],
        "train_docs": docs["train"],
        "val_tokens": writers["val"].tokens,
        "train_tokens": writers["train"].tokens,
        "tokens": tokens,
        "val_files": writers["val"].files,
        "train_files": writers["train"].files,
        "text_bytes": total_bytes,
        "val_text_bytes": text_bytes["val"],
        "val_bytes_per_token": text_bytes["val"] / max(1, writers["val"].tokens),
        "elapsed_s": elapsed,
        "docs_per_s": (docs["val"] + docs["train"]) / elapsed if elapsed > 0 else 0.0,
        "tokens_per_s": tokens / elapsed if elapsed > 0 else 0.0,
        "text_mb_per_s": total_bytes / 1e6 / elapsed if elapsed > 0 else 0.0,
        "threads": workers,
    }
