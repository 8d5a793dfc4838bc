"""Challenge data: shard files, the SentencePiece tokenizer, documents -> shards, the hub download and the manifest.

Shard format (challenge): 256 little-endian int32 header words ([0] magic 20240520, [1] version 1, [2] token count),
then ``count`` little-endian uint16 token ids; file size = 1024 + 2 * count. Every document starts with BOS (id 1).
A data folder is complete when its ``manifest.json`` exists: it is always written last.

Hub downloads are checked against a lock file (sha256 of every file, keyed by repo@revision/variant): see
``download_from_hub``.
"""

from __future__ import annotations

import argparse
import glob
import gzip
import hashlib
import itertools
import json
import lzma
import multiprocessing
import os
import re
import shutil
import signal
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path, PurePosixPath
from typing import IO, Any, NamedTuple, TypeVar

import numpy as np
import sentencepiece as spm

from pgolf import procs
from pgolf.fsio import atomic_path, read_json, sha256_file, write_json

SHARD_MAGIC = 20240520
SHARD_VERSION = 1
HEADER_WORDS = 256
HEADER_BYTES = HEADER_WORDS * 4
MAX_SHARD_TOKENS = 2**31 - 1
BOS_ID = 1
# Data files are meant to be read by other users/containers: atomic temp files are created 0600, so widen them.
FILE_MODE = 0o644

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "pgolf-data-manifest"
MANIFEST_VERSION = 1

# Tokenizer training reads at most this many documents unless told otherwise (bounds the trainer's memory).
DEFAULT_TOKENIZER_MAX_DOCS = 1_000_000
# Documents longer than this (UTF-8 bytes) are left out of tokenizer training (SentencePiece skips them).
TOKENIZER_MAX_SENTENCE_BYTES = 1 << 20
# Documents -> shards: the file is cut into chunks of at most this many documents / raw bytes, encoded by a pool of
# worker processes; at most CHUNKS_IN_FLIGHT_PER_WORKER chunks per worker are read ahead (this bounds the memory).
CHUNK_DOCS = 1024
CHUNK_BYTES = 4 << 20
CHUNKS_IN_FLIGHT_PER_WORKER = 2

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
T = TypeVar("T")


def cpu_count() -> int:
    """CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _check_name(value: str, what: str) -> str:
    if not _NAME_RE.match(value):
        raise ValueError(f"{what} {value!r} must match {_NAME_RE.pattern}")
    return value


# ---------------------------------------------------------------------------------------------------------------------
# Shards


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
    header = np.zeros(HEADER_WORDS, dtype="<i4")
    header[0], header[1], header[2] = SHARD_MAGIC, SHARD_VERSION, arr.size
    data = np.ascontiguousarray(arr, dtype="<u2")
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
    header = np.frombuffer(head, dtype="<i4")
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
        return np.memmap(path, dtype="<u2", mode="r", offset=HEADER_BYTES, shape=(count,))
    tokens = np.fromfile(path, dtype="<u2", count=count, offset=HEADER_BYTES)
    if tokens.size != count:  # the file shrank between the check and the read
        raise ValueError(f"{path}: truncated while reading ({tokens.size} of {count} tokens)")
    return tokens.astype(np.uint16, copy=False)


def _scan_shard(path: Path) -> dict:
    """Header check, token count, size, sha256 and largest token id of one shard."""
    tokens = read_shard(path, mmap=True)
    return {
        "tokens": int(tokens.size),
        "bytes": path.stat().st_size,
        "sha256": sha256_file(path),
        "max_token": int(tokens.max()) if tokens.size else -1,
    }


# ---------------------------------------------------------------------------------------------------------------------
# Documents


def _open_binary(path: Path) -> IO[bytes]:
    """Open a (possibly .xz / .gz compressed) file for reading bytes."""
    if path.suffix == ".xz":
        return lzma.open(path, "rb")
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    return open(path, "rb")


def _read_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, raw bytes) of each non-blank line of a documents file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: documents file not found")
    with _open_binary(path) as f:
        try:
            for lineno, line in enumerate(f, start=1):
                if line.strip():
                    yield lineno, line
        except (lzma.LZMAError, gzip.BadGzipFile, EOFError) as e:
            raise ValueError(f"{path}: cannot read ({type(e).__name__}: {e})") from None


def _doc_text(path: str | os.PathLike, lineno: int, line: bytes) -> str:
    """The ``text`` field of one JSON line (ValueError naming the file and line otherwise)."""
    try:
        obj = json.loads(line)
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}:{lineno}: not valid UTF-8 ({e})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{lineno}: not valid JSON ({e})") from None
    text = obj.get("text") if isinstance(obj, dict) else None
    if not isinstance(text, str):
        raise ValueError(f"{path}:{lineno}: expected a JSON object with a string field 'text'")
    return text


def iter_documents(docs_path: str | os.PathLike, max_docs: int | None = None) -> Iterator[str]:
    """Yield the ``text`` of each JSON line of a documents file, in file order (blank lines are skipped)."""
    path = Path(docs_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: documents file not found")
    if max_docs is not None and max_docs <= 0:
        return
    for n, (lineno, line) in enumerate(_read_lines(path), start=1):
        yield _doc_text(path, lineno, line)
        if max_docs is not None and n >= max_docs:
            return


# ---------------------------------------------------------------------------------------------------------------------
# Tokenizer


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    """Decode the protobuf varint at data[i:]; return (value, index after it)."""
    value = shift = 0
    while True:
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return value, i


def _pb_fields(data: bytes) -> Iterator[tuple[int, bytes, bytes]]:
    """Split a protobuf message into (field number, raw key+value bytes, payload of length-delimited fields)."""
    i = 0
    while i < len(data):
        start = i
        key, i = _read_varint(data, i)
        field, wire = key >> 3, key & 7
        payload = b""
        if wire == 0:
            _, i = _read_varint(data, i)
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        elif wire == 2:
            length, i = _read_varint(data, i)
            payload = data[i : i + length]
            i += length
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if i > len(data):
            raise ValueError("truncated protobuf message")
        yield field, data[start:i], payload


# TrainerSpec fields that record where/how the trainer ran, not what it learned: input, model_prefix, num_threads.
_MACHINE_SPECIFIC_TRAINER_FIELDS = {1, 2, 16}


def _strip_machine_specific(model: bytes) -> bytes:
    """Drop the temp path and thread count from a model's TrainerSpec so its bytes depend only on data + settings."""
    out = bytearray()
    for field, raw, payload in _pb_fields(model):
        if field != 2:  # ModelProto.trainer_spec
            out += raw
            continue
        spec = b"".join(r for f, r, _ in _pb_fields(payload) if f not in _MACHINE_SPECIFIC_TRAINER_FIELDS)
        out += _varint((2 << 3) | 2) + _varint(len(spec)) + spec
    return bytes(out)


def tokenizer_settings(vocab_size: int, input_sentence_size: int, threads: int) -> dict:
    """SentencePiece trainer options of the challenge's sp tokenizers (sp1024 at vocab 1024)."""
    return {
        "model_type": "bpe",
        "vocab_size": vocab_size,
        "character_coverage": 0.999,
        "byte_fallback": True,
        "split_digits": True,
        "normalization_rule_name": "nmt_nfkc",
        "add_dummy_prefix": False,
        "pad_id": 0,
        "bos_id": 1,
        "eos_id": 2,
        "unk_id": 3,
        "hard_vocab_limit": False,
        # Deterministic input: file order, no sampling (sentencepiece wants 0 = no limit, or a limit above 100).
        "input_sentence_size": input_sentence_size if input_sentence_size > 100 else 0,
        "shuffle_input_sentence": False,
        "max_sentence_length": TOKENIZER_MAX_SENTENCE_BYTES,
        "num_threads": threads,
    }


def train_tokenizer(
    docs_path: str | os.PathLike,
    model_prefix: str | os.PathLike,
    vocab_size: int = 1024,
    max_docs: int | None = None,
    threads: int | None = None,
) -> Path:
    """Train the challenge-style SentencePiece BPE tokenizer on a documents file; return ``{model_prefix}.model``.

    Each document is one training sentence, read in file order (the first ``max_docs``, or at most
    DEFAULT_TOKENIZER_MAX_DOCS). The model and ``.vocab`` are trained in a temp folder and renamed into place; the
    model's bytes do not depend on the temp path or the thread count.
    """
    docs_path = Path(docs_path)
    model_prefix = Path(model_prefix)
    if not 260 <= vocab_size <= 65536:
        raise ValueError(f"vocab_size {vocab_size} must be in 260..65536 (4 specials + 256 bytes; uint16 ids)")
    if not docs_path.is_file():
        raise FileNotFoundError(f"{docs_path}: documents file not found")
    limit = max_docs if max_docs is not None else DEFAULT_TOKENIZER_MAX_DOCS
    if limit <= 0:
        raise ValueError(f"max_docs must be positive, got {max_docs}")
    threads = threads or cpu_count()

    errors: list[Exception] = []
    count = 0

    def sentences() -> Iterator[str]:
        nonlocal count
        try:
            for text in iter_documents(docs_path, limit):
                count += 1
                yield text
        except Exception as e:  # re-raised below: the trainer would only report a bare failure
            errors.append(e)

    model_prefix.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{model_prefix.name}.", suffix=".train", dir=model_prefix.parent))
    try:
        tmp_prefix = tmp_dir / "sp"
        spm.set_random_generator_seed(0)
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=sentences(),
                model_prefix=str(tmp_prefix),
                minloglevel=1,
                **tokenizer_settings(vocab_size, limit, threads),
            )
        except RuntimeError as e:
            if errors:
                raise errors[0] from None
            raise ValueError(f"{docs_path}: SentencePiece training failed ({count} documents read): {e}") from None
        if errors:
            raise errors[0]
        model_tmp, vocab_tmp = tmp_prefix.with_suffix(".model"), tmp_prefix.with_suffix(".vocab")
        model_tmp.write_bytes(_strip_machine_specific(model_tmp.read_bytes()))
        sp = spm.SentencePieceProcessor(model_file=str(model_tmp))
        if sp.vocab_size() != vocab_size:  # hard_vocab_limit=False lets a too-small corpus fall short
            raise ValueError(f"{docs_path}: trained vocab has {sp.vocab_size()} pieces, asked for {vocab_size}")
        model_path = model_prefix.parent / f"{model_prefix.name}.model"
        os.replace(vocab_tmp, model_prefix.parent / f"{model_prefix.name}.vocab")
        os.replace(model_tmp, model_path)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return model_path


def _load_tokenizer(path: Path) -> spm.SentencePieceProcessor:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: tokenizer model not found")
    try:
        return spm.SentencePieceProcessor(model_file=str(path))
    except (OSError, RuntimeError) as e:
        raise ValueError(f"{path}: not a SentencePiece model ({e})") from None


# ---------------------------------------------------------------------------------------------------------------------
# Documents -> shards


def _shard_name(prefix: str, split: str, index: int) -> str:
    return f"{prefix}_{split}_{index:06d}.bin"


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
        name = _shard_name(self.prefix, self.split, len(self.files))
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


class _Chunk(NamedTuple):
    """A run of consecutive documents, all of one split: raw JSON lines with their line numbers."""

    split: str
    docs_path: str
    lines: list[tuple[int, bytes]]


class _Encoded(NamedTuple):
    split: str
    tokens: np.ndarray  # uint16, each document preceded by BOS
    docs: int
    text_bytes: int  # UTF-8 bytes of the documents' text


def _chunks(
    docs_path: Path, val_docs: int, max_docs: int | None, chunk_docs: int, chunk_bytes: int
) -> Iterator[_Chunk]:
    """Cut the documents file into chunks; a chunk never straddles the val/train boundary."""
    lines: list[tuple[int, bytes]] = []
    size = 0
    n = 0
    split = "val"
    for lineno, line in _read_lines(docs_path):
        lines.append((lineno, line))
        size += len(line)
        n += 1
        boundary = n == val_docs
        last = max_docs is not None and n >= max_docs
        if boundary or last or len(lines) >= chunk_docs or size >= chunk_bytes:
            yield _Chunk(split, str(docs_path), lines)
            lines, size = [], 0
            if boundary:
                split = "train"
        if last:
            return
    if lines:
        yield _Chunk(split, str(docs_path), lines)


def _encode_chunk(sp: spm.SentencePieceProcessor, chunk: _Chunk) -> _Encoded:
    texts = [_doc_text(chunk.docs_path, lineno, line) for lineno, line in chunk.lines]
    encoded = sp.encode(texts, out_type=int, num_threads=1)
    text_bytes = sum(len(t.encode("utf-8")) for t in texts)
    return _Encoded(chunk.split, _with_bos(encoded), len(texts), text_bytes)


_worker_sp: spm.SentencePieceProcessor | None = None


def _init_encoder(model_path: str) -> None:
    global _worker_sp
    # a worker dies with the process that started it (`pgolf data`): a killed data step leaves no encoder behind
    procs.die_with_parent(signal.SIGKILL)
    _worker_sp = spm.SentencePieceProcessor(model_file=model_path)


def _encode_in_worker(chunk: _Chunk) -> _Encoded:
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
    _check_name(prefix, "prefix")
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
    sp = _load_tokenizer(Path(tokenizer_model))
    if sp.vocab_size() > 65536:
        raise ValueError(f"{tokenizer_model}: vocab size {sp.vocab_size()} does not fit uint16 shards")
    workers = threads or cpu_count()

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST_NAME).unlink(missing_ok=True)
    t0 = time.perf_counter()
    writers = {
        "val": _ShardWriter(out_dir, prefix, "val", shard_tokens),
        "train": _ShardWriter(out_dir, prefix, "train", shard_tokens),
    }
    docs = {"val": 0, "train": 0}
    text_bytes = {"val": 0, "train": 0}

    def consume(results: Iterator[_Encoded]) -> None:
        for r in results:
            writers[r.split].add(r.tokens)
            docs[r.split] += r.docs
            text_bytes[r.split] += r.text_bytes

    chunks = _chunks(docs_path, val_docs, max_docs, chunk_docs, chunk_bytes)
    if workers == 1:
        consume(_encode_chunk(sp, c) for c in chunks)
    else:
        pool = ProcessPoolExecutor(
            workers,
            mp_context=_process_context(),
            initializer=_init_encoder,
            initargs=(str(Path(tokenizer_model).resolve()),),
        )
        try:
            window = CHUNKS_IN_FLIGHT_PER_WORKER * workers
            consume(bounded_map(lambda c: pool.submit(_encode_in_worker, c), chunks, window))
        except BrokenProcessPool as e:
            raise RuntimeError(
                f"{docs_path}: a worker process died while encoding ({e}); out of memory? (try fewer threads)"
            ) from None
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
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


# ---------------------------------------------------------------------------------------------------------------------
# Manifest


# The validation byte sidecar: ``{prefix}_val_bytes_NNNNNN.bin``, one per val shard, in the shard format; entry i is
# the number of original UTF-8 bytes of val token i (0 for BOS). Upstream's CaseOps data sets ship it: their text is
# transformed before tokenization, so the pieces' bytes are not the text's.
SIDECAR_SPLIT = "val_bytes"
_SIDECAR_RE = re.compile(r"^.+_val_bytes_\d{6}\.bin$")


def _sidecar_files(out_dir: Path, prefix: str, val_files: list[Path]) -> list[Path]:
    """The folder's sidecar files (none, or exactly one per val shard, numbered like them)."""
    files = sorted(out_dir.glob(f"{prefix}_{SIDECAR_SPLIT}_*.bin"))
    if files and [p.name for p in files] != [f.name.replace("_val_", "_val_bytes_", 1) for f in val_files]:
        raise ValueError(
            f"{out_dir}: byte sidecar files {[p.name for p in files]} do not match the val shards"
            f" {[p.name for p in val_files]} (one {prefix}_val_bytes_NNNNNN.bin per {prefix}_val_NNNNNN.bin)"
        )
    return files


def _split_files(out_dir: Path, prefix: str, split: str) -> list[Path]:
    """The shards ``{prefix}_{split}_*.bin`` of a folder, checked to be named NNNNNN and numbered 0, 1, ... ."""
    pattern = re.compile(rf"^{re.escape(prefix)}_{split}_(\d{{6}})\.bin$")
    files = sorted(p for p in out_dir.glob(f"{prefix}_{split}_*.bin") if not _SIDECAR_RE.match(p.name))
    for i, path in enumerate(files):
        m = pattern.match(path.name)
        if not m:
            raise ValueError(f"{path}: unexpected file name (expected {prefix}_{split}_NNNNNN.bin)")
        if int(m.group(1)) != i:
            raise ValueError(f"{out_dir}: {split} shards are not numbered 0..{len(files) - 1}: {path.name} at {i}")
    if not files:
        raise ValueError(f"{out_dir}: no {prefix}_{split}_*.bin shards")
    return files


def write_manifest(
    out_dir: str | os.PathLike,
    name: str,
    source: dict | str,
    tokenizer_path: str | os.PathLike,
    prefix: str,
) -> dict:
    """Scan the folder's ``{prefix}_{val,train}_*.bin`` shards and write ``manifest.json`` (last); return it.

    Each shard is header-checked and hashed; its largest token id (recorded as ``max_token``) must be below the
    tokenizer's vocab size. Paths are stored relative to the folder.
    """
    out_dir = Path(out_dir)
    tokenizer_path = Path(tokenizer_path)
    _check_name(prefix, "prefix")
    sp = _load_tokenizer(tokenizer_path)
    vocab_size = int(sp.vocab_size())
    splits = {split: _split_files(out_dir, prefix, split) for split in ("train", "val")}
    sidecars = _sidecar_files(out_dir, prefix, splits["val"])
    all_files = splits["train"] + splits["val"] + sidecars
    with ThreadPoolExecutor(max_workers=min(len(all_files), cpu_count())) as pool:
        scans = dict(zip(all_files, pool.map(_scan_shard, all_files), strict=True))
    manifest: dict = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "name": name,
        "source": source,
        "prefix": prefix,
        "shard_format": {
            "magic": SHARD_MAGIC,
            "version": SHARD_VERSION,
            "header_bytes": HEADER_BYTES,
            "dtype": "<u2",
            "bos_id": BOS_ID,
        },
        "tokenizer": {
            "path": Path(os.path.relpath(tokenizer_path.resolve(), out_dir.resolve())).as_posix(),
            "sha256": sha256_file(tokenizer_path),
            "vocab_size": vocab_size,
        },
    }
    for split, files in splits.items():
        entries = []
        for path in files:
            scan = scans[path]
            if scan["max_token"] >= vocab_size:
                raise ValueError(
                    f"{path}: token id {scan['max_token']} is not below the tokenizer's vocab size {vocab_size}"
                    f" ({tokenizer_path})"
                )
            entries.append(
                {
                    "path": path.name,
                    "tokens": scan["tokens"],
                    "bytes": scan["bytes"],
                    "sha256": scan["sha256"],
                    "max_token": scan["max_token"],
                }
            )
        manifest[split] = {
            "files": entries,
            "tokens": sum(e["tokens"] for e in entries),
            "bytes": sum(e["bytes"] for e in entries),
        }
    if sidecars:
        entries = []
        for path, shard in zip(sidecars, manifest["val"]["files"], strict=True):
            scan = scans[path]
            if scan["tokens"] != shard["tokens"]:
                raise ValueError(
                    f"{path}: {scan['tokens']} byte counts, but {shard['path']} has {shard['tokens']} tokens"
                    " (the sidecar has one count per val token)"
                )
            entries.append(
                {"path": path.name, "tokens": scan["tokens"], "bytes": scan["bytes"], "sha256": scan["sha256"]}
            )
        manifest[SIDECAR_SPLIT] = {
            "files": entries,
            "tokens": sum(e["tokens"] for e in entries),
            "bytes": sum(e["bytes"] for e in entries),
            "text_bytes": int(sum(int(read_shard(p, mmap=True).sum(dtype=np.int64)) for p in sidecars)),
        }
    manifest["totals"] = {
        "files": len(all_files),
        "tokens": manifest["train"]["tokens"] + manifest["val"]["tokens"],
        "bytes": manifest["train"]["bytes"] + manifest["val"]["bytes"],
    }
    write_json(out_dir / MANIFEST_NAME, manifest)
    os.chmod(out_dir / MANIFEST_NAME, FILE_MODE)
    return manifest


def _require(cond: bool, manifest_path: Path, problem: str) -> None:
    if not cond:
        raise ValueError(f"{manifest_path}: {problem}")


def load_manifest(path: str | os.PathLike) -> dict:
    """Read and check a data manifest (or a folder holding one); return it with absolute paths added.

    Added keys: ``manifest_path``, ``root``, ``tokenizer_path``, ``vocab_size``, ``train_files`` / ``val_files``
    (absolute path strings), ``train_glob`` / ``val_glob`` (absolute patterns matching exactly those shards),
    ``train_tokens`` / ``val_tokens``; with a validation byte sidecar also ``val_bytes_files``, ``val_bytes_glob``
    and ``val_bytes_tokens``.
    """
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    m = read_json(path)
    root = path.resolve().parent
    _require(m.get("format") == MANIFEST_FORMAT, path, f"'format' is {m.get('format')!r}, expected {MANIFEST_FORMAT!r}")
    _require(m.get("version") == MANIFEST_VERSION, path, f"unsupported 'version' {m.get('version')!r}")
    for key in ("name", "prefix"):
        _require(isinstance(m.get(key), str) and m[key] != "", path, f"missing or bad key {key!r}")
    tok = m.get("tokenizer")
    _require(isinstance(tok, dict), path, "missing or bad key 'tokenizer'")
    _require(isinstance(tok.get("path"), str), path, "missing or bad key 'tokenizer.path'")
    _require(
        isinstance(tok.get("vocab_size"), int) and tok["vocab_size"] > 0, path, "missing or bad 'tokenizer.vocab_size'"
    )
    tokenizer_path = (root / tok["path"]).resolve()
    if not tokenizer_path.is_file():
        raise FileNotFoundError(f"{path}: tokenizer {tokenizer_path} not found")

    out = dict(m)
    out.update(manifest_path=str(path.resolve()), root=str(root), tokenizer_path=str(tokenizer_path))
    out["vocab_size"] = tok["vocab_size"]
    for split in ("train", "val", SIDECAR_SPLIT):
        if split == SIDECAR_SPLIT and split not in m:
            break
        section = m.get(split)
        _require(isinstance(section, dict), path, f"missing or bad key {split!r}")
        files = section.get("files")
        _require(isinstance(files, list) and len(files) > 0, path, f"'{split}.files' must be a non-empty list")
        resolved: list[Path] = []
        for i, entry in enumerate(files):
            where = f"{split}.files[{i}]"
            _require(isinstance(entry, dict), path, f"{where} must be an object")
            for key, typ in (("path", str), ("tokens", int), ("bytes", int), ("sha256", str)):
                _require(isinstance(entry.get(key), typ), path, f"missing or bad key {where}.{key}")
            shard = (root / entry["path"]).resolve()
            if not shard.is_file():
                raise FileNotFoundError(f"{path}: shard {shard} not found")
            size = shard.stat().st_size
            _require(size == entry["bytes"], path, f"{shard} has {size} bytes, manifest says {entry['bytes']}")
            _require(
                entry["bytes"] == HEADER_BYTES + 2 * entry["tokens"],
                path,
                f"{where}: {entry['bytes']} bytes do not match {entry['tokens']} tokens",
            )
            resolved.append(shard)
        folders = {p.parent for p in resolved}
        _require(len(folders) == 1, path, f"{split} shards must share one folder, found {len(folders)}")
        # val: six digits, so that the pattern does not match the byte sidecar's files as well
        name = f"{m['prefix']}_{split}_" + ("[0-9]" * 6 if split == "val" else "*") + ".bin"
        pattern = str(folders.pop() / name)
        matched = sorted(Path(p) for p in glob.glob(pattern))
        _require(
            matched == sorted(resolved),
            path,
            f"glob {pattern} matches {len(matched)} files but the manifest lists {len(resolved)} {split} shards",
        )
        out[f"{split}_files"] = [str(p) for p in resolved]
        out[f"{split}_glob"] = pattern
        out[f"{split}_tokens"] = sum(e["tokens"] for e in files)
    if SIDECAR_SPLIT in m:
        counts = [
            (e["tokens"], v["tokens"]) for e, v in zip(m[SIDECAR_SPLIT]["files"], m["val"]["files"], strict=False)
        ]
        _require(
            len(m[SIDECAR_SPLIT]["files"]) == len(m["val"]["files"]) and all(a == b for a, b in counts),
            path,
            f"'{SIDECAR_SPLIT}' must list one file per val shard with as many entries as its tokens",
        )
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Verification before use (train and evaluate)


class DataMismatch(ValueError):
    """A data folder's files (or its manifest) no longer match what the data step recorded; the message lists each
    file with the expected and the found value, and how to fix it."""


VERIFY_BLOCK_BYTES = 8 << 20


def _digest_and_max(path: Path, shard: bool) -> tuple[str, int]:
    """sha256 of a file and, for a shard, its largest token id (-1 for none), in one read of the file."""
    h = hashlib.sha256()
    top = -1
    tail = b""  # a block may end in the middle of a uint16
    with open(path, "rb") as f:
        head = f.read(HEADER_BYTES) if shard else b""
        h.update(head)
        while block := f.read(VERIFY_BLOCK_BYTES):
            h.update(block)
            if shard:
                data = tail + block if tail else block
                count = len(data) // 2
                tail = data[2 * count :]
                if count:
                    top = max(top, int(np.frombuffer(data, dtype="<u2", count=count).max()))
    return h.hexdigest(), top


def _fix_hint(m: dict) -> str:
    source = m.get("source")
    kind = source.get("kind") if isinstance(source, dict) else source
    root = m["root"]
    if kind == "hub":
        how = f"`pgolf data hub --out {root} ...` (the hub step re-fetches every file that does not match the lock)"
    else:
        how = f"`pgolf data documents --out {root} ...` (rebuilds the tokenizer, shards and manifest)"
    return (
        "Re-run the data step: `snakemake --forcerun data` (a plain run does not notice files changed in place),"
        f" or {how}."
        " Do not edit or replace files of a data folder by hand."
    )


def _lock_problems(m: dict, found: dict[str, str]) -> list[str]:
    """The manifest's files against the hub lock its source names (``source.lock``): every file (tokenizer, shards)
    must be in the lock under repo@revision/variant with the same sha256. ``found`` maps each file name to the sha256
    the manifest records (already checked against the file itself)."""
    source = m.get("source")
    if not isinstance(source, dict) or source.get("kind") != "hub" or not source.get("lock"):
        return []
    lock_path = Path(source["lock"])
    if not lock_path.is_file():
        return [f"{lock_path}: the lock file the manifest was checked against (source.lock) not found"]
    try:
        lock = read_lock(lock_path)
    except ValueError as e:
        return [str(e)]
    key = lock_key(str(source.get("repo_id")), str(source.get("revision")), str(source.get("variant")))
    entry = lock["datasets"].get(key)
    if entry is None:
        return [f"{lock_path}: no entry {key!r} (the manifest's source.repo_id@revision/variant)"]
    by_name: dict[str, list[tuple[str, str]]] = {}
    for remote, digest in entry["files"].items():
        by_name.setdefault(PurePosixPath(remote).name, []).append((remote, digest))
    problems = []
    for name, digest in found.items():
        hits = by_name.get(name, [])
        if not hits:
            problems.append(f"{name}: not in the lock {lock_path} under {key!r}")
        for remote, locked in hits:
            if locked != digest:
                problems.append(
                    f"{name}: the manifest's sha256 {digest} differs from the lock's {locked}"
                    f" ({lock_path}: {key}: {remote})"
                )
    return problems


def verify_manifest(path: str | os.PathLike, threads: int | None = None) -> dict:
    """Check a data folder against its manifest before it is used; return ``load_manifest``'s dict.

    - the tokenizer: sha256 as recorded, and its piece count equal to the manifest's ``vocab_size``;
    - every shard (train and val): size (``load_manifest``), then sha256 of the whole file and its largest token id,
      which must be below ``vocab_size`` (and equal to the recorded ``max_token`` where the manifest has one);
    - the validation byte sidecar, where there is one: sha256 of every file (its length was checked when the
      manifest was written, and ``load_manifest`` checks the recorded counts);
    - a hub data set: the manifest's sha256 of each file against the lock file it was downloaded with.

    Every shard is read once, fully, by ``threads`` threads (default: all CPUs): sha256 and the largest id run at
    about 1 GB/s per core (a 200 MB shard in 0.19 s here), so the 80-shard sp1024 set (16 GB) takes a few seconds on a
    pod's cores, and nothing cheaper (size, mtime, a sample) would catch an edit that keeps the size. Any mismatch is
    a DataMismatch listing every bad file with the expected and found values and how to fix it (re-run the data step).
    """
    m = load_manifest(path)
    manifest_path = m["manifest_path"]
    vocab = m["vocab_size"]
    problems: list[str] = []

    tok_path = Path(m["tokenizer_path"])
    tok = m["tokenizer"]
    files: list[tuple[Path, dict | None, str]] = [(tok_path, None, "tokenizer")]
    for split in ("train", "val", SIDECAR_SPLIT):
        if f"{split}_files" in m:
            files += [(Path(p), e, split) for p, e in zip(m[f"{split}_files"], m[split]["files"], strict=True)]
    workers = max(1, min(threads or cpu_count(), len(files)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        scans = list(pool.map(lambda f: _digest_and_max(f[0], f[2] != "tokenizer"), files))

    digest = scans[0][0]
    if not isinstance(tok.get("sha256"), str) or digest != tok["sha256"]:
        problems.append(f"{tok_path}: tokenizer sha256 {digest}, the manifest says {tok.get('sha256')}")
    try:
        pieces = int(_load_tokenizer(tok_path).vocab_size())
    except ValueError as e:
        problems.append(str(e))
    else:
        if pieces != vocab:
            problems.append(f"{tok_path}: tokenizer has {pieces} pieces, the manifest's vocab_size is {vocab}")

    for (shard, entry, split), (digest, top) in zip(files[1:], scans[1:], strict=True):
        assert entry is not None
        if digest != entry["sha256"]:
            problems.append(f"{shard}: sha256 {digest}, the manifest says {entry['sha256']} (the file changed)")
        if split == SIDECAR_SPLIT:
            continue
        if top >= vocab:
            problems.append(f"{shard}: token id {top} is not below the vocabulary size {vocab} ({tok_path})")
        elif "max_token" in entry and entry["max_token"] != top and digest == entry["sha256"]:
            problems.append(f"{shard}: largest token id {top}, the manifest says {entry['max_token']}")

    recorded = {tok_path.name: tok.get("sha256")}
    recorded.update({path.name: entry["sha256"] for path, entry, _ in files[1:] if entry is not None})
    problems += _lock_problems(m, recorded)
    if problems:
        listing = "\n  ".join(problems)
        raise DataMismatch(
            f"{manifest_path}: the data folder does not match its manifest ({len(problems)}"
            f" problem{'s' if len(problems) > 1 else ''}):\n  {listing}\n" + _fix_hint(m)
        )
    return m


# ---------------------------------------------------------------------------------------------------------------------
# Hub download

DEFAULT_REPO_ID = "willdepueoai/parameter-golf"
LOCK_FORMAT = "pgolf-data-lock"
LOCK_VERSION = 1
# Unfinished downloads live here (``<name>.part`` + ``<name>.part.json``) until they are complete and verified; a later
# run resumes them with an HTTP range request.
PARTIAL_DIR = ".partial"
PROGRESS_INTERVAL_S = 10.0
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
_REVISION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_VARIANT_RE = re.compile(r"^sp(\d+)(?:[_-][A-Za-z0-9_.-]+)?$")
_RETRY_STATUS = (408, 429, 500, 502, 503, 504)


class HubError(RuntimeError):
    """The hub step failed: unreachable hub, missing file, or a bad file; the message names the file or the repo."""


class _LockMismatch(ValueError):
    def __init__(self, digest: str):
        super().__init__(digest)
        self.digest = digest


class _Stopped(Exception):
    """A download stopped because another one failed."""


class HubFile(NamedTuple):
    remote: str  # path inside the repo
    kind: str  # "model", "vocab" or "shard"

    @property
    def name(self) -> str:
        return PurePosixPath(self.remote).name


def _log(message: str) -> None:
    print(message, flush=True)


def variant_vocab_size(variant: str) -> int:
    """Vocabulary size named by a variant such as ``sp1024`` (or ``sp8192_<suffix>``)."""
    m = _VARIANT_RE.fullmatch(variant)
    if not m:
        raise ValueError(f"variant {variant!r} must look like sp<vocab>, e.g. sp1024 or sp8192")
    return int(m.group(1))


def is_commit(revision: str) -> bool:
    """True for a full 40-hex commit hash (a pinned revision), False for a branch or tag name."""
    return bool(_COMMIT_RE.fullmatch(revision))


def check_revision(revision: str) -> str:
    if not (is_commit(revision) or (_REVISION_RE.fullmatch(revision) and ".." not in revision)):
        raise ValueError(f"revision {revision!r} must be a 40-hex commit hash (pinned) or a branch/tag name")
    return revision


def hub_offline() -> bool:
    """HF_HUB_OFFLINE (as huggingface_hub read it at import, or as the environment says now)."""
    from huggingface_hub import constants

    now = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}
    return bool(constants.HF_HUB_OFFLINE) or now


def _remote_base(remote_root: str) -> str:
    root = remote_root.strip("/")
    return f"{root}/" if root else ""


def hub_files(
    variant: str,
    train_shards: int,
    remote_root: str = "datasets",
    val_shards: int = 1,
    tokenizer_paths: list[str] | None = None,
    sidecar: bool = False,
) -> list[HubFile]:
    """The files a variant needs: tokenizer (.model, .vocab), then val shards (and with ``sidecar`` their byte
    sidecars ``fineweb_val_bytes_NNNNNN.bin``) and train shards, as paths in the repo.

    ``tokenizer_paths`` (relative to ``remote_root``) come from the repo's manifest.json when it names them; by default
    ``tokenizers/fineweb_<vocab>_bpe.{model,vocab}``.
    """
    vocab = variant_vocab_size(variant)
    base = _remote_base(remote_root)
    if tokenizer_paths is None:
        tokenizer_paths = [f"tokenizers/fineweb_{vocab}_bpe.model", f"tokenizers/fineweb_{vocab}_bpe.vocab"]
    files = []
    for path in dict.fromkeys(tokenizer_paths):
        if path.endswith(".model"):
            files.append(HubFile(base + path, "model"))
        elif path.endswith(".vocab"):
            files.append(HubFile(base + path, "vocab"))
    if not any(f.kind == "model" for f in files):
        raise ValueError(f"no SentencePiece .model among the tokenizer files {tokenizer_paths}")
    shards = f"{base}datasets/fineweb10B_{variant}"
    files += [HubFile(f"{shards}/fineweb_val_{i:06d}.bin", "shard") for i in range(val_shards)]
    if sidecar:
        files += [HubFile(f"{shards}/fineweb_val_bytes_{i:06d}.bin", "sidecar") for i in range(val_shards)]
    files += [HubFile(f"{shards}/fineweb_train_{i:06d}.bin", "shard") for i in range(train_shards)]
    return files


def _plan_from_repo_manifest(
    manifest: Any, variant: str, where: str
) -> tuple[int | None, int, list[str] | None, bool | None]:
    """(train shards the repo has, val shards, tokenizer paths, whether it has a byte sidecar) from a repo's
    manifest.json; (None, 1, None, None) when it does not list the variant's data set. The format is the challenge's:
    ``datasets[]`` with ``name``, ``tokenizer_name``, ``stats.files_train/files_val`` and, for data sets with a byte
    sidecar, ``val_bytes_glob``; ``tokenizers[]`` with ``name``, ``model_path``, ``vocab_path``."""
    name = f"fineweb10B_{variant}"
    datasets = manifest.get("datasets") if isinstance(manifest, dict) else None
    if not isinstance(datasets, list):
        raise ValueError(f"{where}: expected a JSON object with a 'datasets' list")
    entry = next((d for d in datasets if isinstance(d, dict) and d.get("name") == name), None)
    if entry is None:
        return None, 1, None, None
    stats = entry.get("stats") or {}
    files_train, files_val = stats.get("files_train"), stats.get("files_val", 1)
    for key, value in (("files_train", files_train), ("files_val", files_val)):
        if value is not None and (not isinstance(value, int) or value < 0):
            raise ValueError(f"{where}: datasets[{name}].stats.{key} must be a count, got {value!r}")
    paths = None
    tokenizers = manifest.get("tokenizers")
    tok_name = entry.get("tokenizer_name")
    if tok_name and isinstance(tokenizers, list):
        tok = next((t for t in tokenizers if isinstance(t, dict) and t.get("name") == tok_name), None)
        if tok is None:
            raise ValueError(f"{where}: tokenizer {tok_name!r} of {name} is not in 'tokenizers'")
        paths = [tok[k] for k in ("model_path", "vocab_path", "path") if isinstance(tok.get(k), str)] or None
    return files_train, files_val if files_val is not None else 1, paths, bool(entry.get("val_bytes_glob"))


# Lock file


def lock_key(repo_id: str, revision: str, variant: str) -> str:
    return f"{repo_id}@{revision}/{variant}"


def read_lock(path: str | os.PathLike) -> dict:
    """Read and check a data lock file (an empty lock when it does not exist yet)."""
    path = Path(path)
    if not path.exists():
        return {"format": LOCK_FORMAT, "version": LOCK_VERSION, "datasets": {}}
    lock = read_json(path)
    if lock.get("format") != LOCK_FORMAT:
        raise ValueError(f"{path}: 'format' is {lock.get('format')!r}, expected {LOCK_FORMAT!r}")
    if lock.get("version") != LOCK_VERSION:
        raise ValueError(f"{path}: unsupported 'version' {lock.get('version')!r} (expected {LOCK_VERSION})")
    datasets = lock.get("datasets")
    if not isinstance(datasets, dict):
        raise ValueError(f"{path}: 'datasets' must be an object keyed by <repo_id>@<revision>/<variant>")
    for key, entry in datasets.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("files"), dict):
            raise ValueError(f"{path}: datasets[{key!r}] must be an object with a 'files' object")
        for remote, digest in entry["files"].items():
            if not isinstance(digest, str) or not _SHA256_RE.fullmatch(digest):
                raise ValueError(
                    f"{path}: datasets[{key!r}].files[{remote!r}] must be a sha256 (64 lowercase hex), got {digest!r}"
                )
    return lock


# Verification


def _check_hub_file(path: Path, kind: str, vocab_size: int) -> None:
    """ValueError naming ``path`` unless it is a valid file of its kind (shards: header, size, ids below the vocab)."""
    if kind == "shard":
        tokens = read_shard(path, mmap=True)
        top = int(tokens.max()) if tokens.size else -1
        del tokens
        if top >= vocab_size:
            raise ValueError(f"{path}: token id {top} is not below the vocabulary size {vocab_size}")
    elif kind == "model":
        sp = _load_tokenizer(path)
        if sp.vocab_size() != vocab_size:
            raise ValueError(f"{path}: tokenizer has vocab {sp.vocab_size()}, expected {vocab_size}")
    elif kind == "sidecar":  # its length is checked against its val shard when the manifest is written
        read_shard(path, mmap=True)
    elif kind == "vocab":
        with open(path, encoding="utf-8") as f:
            lines = sum(1 for _ in f)
        if lines != vocab_size:
            raise ValueError(f"{path}: {lines} lines, expected {vocab_size}")
    else:  # pragma: no cover - internal
        raise AssertionError(kind)


def _verify(path: Path, kind: str, vocab_size: int, expected: str | None, etag: str | None = None) -> str:
    """Check a file's structure, then its sha256: against the hub's ETag when that is a sha256 (LFS files), and
    against ``expected`` (the lock). Returns the sha256; ValueError naming the file, _LockMismatch for the lock."""
    _check_hub_file(path, kind, vocab_size)
    digest = sha256_file(path)
    if etag and _SHA256_RE.fullmatch(etag) and digest != etag:
        raise ValueError(f"{path}: sha256 {digest} differs from the hub's ETag {etag} (corrupted in transfer)")
    if expected is not None and digest != expected:
        raise _LockMismatch(digest)
    return digest


# Progress


class _Progress:
    """One line per finished file (bytes, time, rate), and a summary line every ``interval`` seconds."""

    def __init__(self, files: int, total_bytes: int, log: Callable[[str], None], interval: float):
        self.files, self.total, self.log, self.interval = files, total_bytes, log, interval
        self.lock = threading.Lock()
        self.t0 = self.last = time.perf_counter()
        self.have = 0  # bytes on disk of the files being fetched (resumed bytes included)
        self.transferred = 0  # bytes received in this run
        self.done_files = 0

    def resumed(self, n: int) -> None:
        with self.lock:
            self.have += n

    def add(self, n: int) -> None:
        with self.lock:
            self.have += n
            self.transferred += max(n, 0)
            now = time.perf_counter()
            if now - self.last < self.interval:
                return
            self.last = now
            line = self._line(now)
        self.log(line)

    def _line(self, now: float) -> str:
        rate = self.transferred / max(now - self.t0, 1e-9)
        eta = f", ETA {(self.total - self.have) / rate:.0f} s" if rate > 0 and self.total >= self.have else ""
        return (
            f"progress: {self.done_files}/{self.files} files, {self.have / 1e9:.2f}/{self.total / 1e9:.2f} GB,"
            f" {rate / 1e6:.1f} MB/s{eta}"
        )

    def file_done(self, name: str, size: int, seconds: float, resumed: int) -> None:
        with self.lock:
            self.done_files += 1
        got = size - resumed
        rate = got / max(seconds, 1e-9) / 1e6
        extra = f", resumed at {resumed:,} bytes" if resumed else ""
        self.log(f"fetched {name}: {size:,} bytes, {got:,} in {seconds:.1f} s ({rate:.1f} MB/s){extra}")


# Hub access


class _Hub:
    """Requests to one dataset repo at one revision, with a timeout and retries of transient failures."""

    def __init__(
        self,
        repo_id: str,
        revision: str,
        endpoint: str | None,
        timeout: float,
        retries: int,
        log: Callable[[str], None],
        backoff: float = 0.5,
    ):
        from huggingface_hub import constants

        self.repo_id, self.revision, self.timeout, self.retries, self.log = repo_id, revision, timeout, retries, log
        self.endpoint = (endpoint or constants.ENDPOINT).rstrip("/")
        self.backoff = backoff
        self.where = f"dataset {repo_id}@{revision} on {self.endpoint}"

    def url(self, remote: str) -> str:
        from huggingface_hub import hf_hub_url

        return hf_hub_url(self.repo_id, remote, repo_type="dataset", revision=self.revision, endpoint=self.endpoint)

    def _wait(self, attempt: int) -> float:
        return min(8.0, self.backoff * 2**attempt)

    def call(self, what: str, fn: Callable[[], T]) -> T:
        """``fn()``, retried on network errors, timeouts and 408/429/5xx answers; HubError when they persist."""
        import httpx2
        from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

        err: Exception | None = None
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except RevisionNotFoundError:
                raise HubError(f"{what}: revision {self.revision!r} not found in {self.where}") from None
            except RepositoryNotFoundError:  # also gated repos
                raise HubError(
                    f"{what}: {self.where}: repository not found or not accessible (private or gated: set HF_TOKEN)"
                ) from None
            except HfHubHTTPError as e:
                if e.response is None or e.response.status_code not in _RETRY_STATUS:
                    raise
                err = e
            except httpx2.TransportError as e:  # connection refused/reset, DNS, timeouts
                err = e
            if attempt < self.retries:
                wait = self._wait(attempt)
                self.log(f"{what}: {type(err).__name__}: {err}; retry {attempt + 1}/{self.retries} in {wait:.1f} s")
                time.sleep(wait)
        raise HubError(
            f"{what}: cannot reach {self.where} ({self.retries + 1} attempts, timeout {self.timeout:g} s;"
            f" last error {type(err).__name__}: {err}). With the files in the local Hugging Face cache, set"
            " HF_HUB_OFFLINE=1 to use it."
        )

    def head(self, remote: str):
        from huggingface_hub import get_hf_file_metadata

        url = self.url(remote)
        return self.call(remote, lambda: get_hf_file_metadata(url, timeout=self.timeout, endpoint=self.endpoint))

    def read_small(self, remote: str) -> bytes | None:
        """A small file's bytes, None when the repo does not have it."""
        from huggingface_hub.errors import RemoteEntryNotFoundError
        from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

        def get() -> bytes:
            response = get_session().get(self.url(remote), headers=build_hf_headers(), timeout=self.timeout)
            hf_raise_for_status(response)
            return response.content

        try:
            return self.call(remote, get)
        except RemoteEntryNotFoundError:
            return None

    def download(self, f: HubFile, meta, part: Path, progress: _Progress, stop: threading.Event) -> int:
        """Fetch ``f`` into ``part``, resuming a previous partial download of the same content (same ETag and size)
        with a range request; dropped connections and timeouts resume where they stopped. Returns the bytes that
        were already there."""
        import httpx2
        from huggingface_hub.errors import HfHubHTTPError
        from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

        info_path = part.with_name(part.name + ".json")
        ident = {"repo_id": self.repo_id, "remote": f.remote, "etag": meta.etag, "size": meta.size}
        resumed = 0
        if part.exists():
            try:
                same = read_json(info_path) == ident
            except (OSError, ValueError):
                same = False
            size = part.stat().st_size
            if same and (meta.size is None or size <= meta.size):
                resumed = size
            else:
                part.unlink()
        write_json(info_path, ident)
        progress.resumed(resumed)
        failures = 0
        while True:
            offset = part.stat().st_size if part.exists() else 0
            if meta.size is not None and offset >= meta.size:
                break
            headers = build_hf_headers()
            headers["Accept-Encoding"] = "identity"
            if offset:
                headers["Range"] = f"bytes={offset}-"
            try:
                with get_session().stream("GET", meta.location, headers=headers, timeout=self.timeout) as response:
                    if response.status_code >= 400:
                        response.read()
                        hf_raise_for_status(response)
                    if offset and response.status_code != 206:  # the server ignored the range: start over
                        progress.add(-offset)
                        offset = 0
                    with open(part, "ab" if offset else "wb") as out:
                        for chunk in response.iter_bytes():
                            if stop.is_set():
                                raise _Stopped
                            out.write(chunk)
                            progress.add(len(chunk))
                if meta.size is None or part.stat().st_size >= meta.size:
                    break
                raise httpx2.RemoteProtocolError(f"response ended at {part.stat().st_size:,} of {meta.size:,} bytes")
            except (httpx2.TransportError, HfHubHTTPError) as e:
                status = getattr(getattr(e, "response", None), "status_code", None)
                if isinstance(e, HfHubHTTPError) and status not in _RETRY_STATUS:
                    raise HubError(f"{f.remote}: download from {self.where} failed: {e}") from None
                failures += 1
                have = part.stat().st_size if part.exists() else 0
                if failures > self.retries:
                    raise HubError(
                        f"{f.remote}: download from {self.where} failed after {failures} attempts"
                        f" ({type(e).__name__}: {e}); the {have:,} bytes received are kept in {part} and a new run"
                        " resumes from there"
                    ) from None
                wait = self._wait(failures - 1)
                self.log(
                    f"{f.remote}: {type(e).__name__}: {e}; resuming at {have:,} bytes in {wait:.1f} s"
                    f" (retry {failures}/{self.retries})"
                )
                time.sleep(wait)
        size = part.stat().st_size
        if meta.size is not None and size != meta.size:
            raise HubError(f"{f.remote}: received {size:,} bytes from {self.where}, expected {meta.size:,}")
        return resumed


def _cached_file(repo_id: str, remote: str, revision: str, cache_dir: str | os.PathLike | None) -> Path | None:
    """The file in the local Hugging Face cache (as ``hf_hub_download`` left it), or None."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, remote, cache_dir=cache_dir, revision=revision, repo_type="dataset")
    return Path(found) if isinstance(found, str) else None


def _place(src: Path, dest: Path, digest: str, staging: Path) -> str:
    """Put a verified cache file at ``dest``: a hard link (no second copy on disk) or a checked copy."""
    src = src.resolve()
    tmp = staging / f"{dest.name}.cache"
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
        how = "linked"
    except OSError:
        shutil.copyfile(src, tmp)
        os.chmod(tmp, FILE_MODE)
        if sha256_file(tmp) != digest:
            tmp.unlink()
            raise HubError(f"{src}: changed while being copied to {dest}; not used") from None
        how = "copied"
    os.replace(tmp, dest)
    return how


def _discard(part: Path) -> None:
    """Remove a partial download and its description."""
    part.unlink(missing_ok=True)
    part.with_name(part.name + ".json").unlink(missing_ok=True)


def _parallel(fn: Callable[[T], Any], items: list[T], workers: int) -> list[Any]:
    if not items:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(items)))) as pool:
        return list(pool.map(fn, items))


def _run_all(fn: Callable[[T], str], items: list[T], workers: int, stop: threading.Event) -> list[str]:
    """``fn`` over ``items`` on ``workers`` threads; the first failure (or an interrupt) sets ``stop``, which ends the
    other downloads at their next chunk (their partial files stay for a later run), and is raised."""
    errors: list[BaseException] = []
    done: list[str] = []
    pool = ThreadPoolExecutor(max_workers=max(1, min(workers, len(items))))
    try:
        futures = [pool.submit(fn, item) for item in items]
        for fut in as_completed(futures):
            try:
                done.append(fut.result())
            except (_Stopped, CancelledError):
                pass
            except Exception as e:
                errors.append(e)
                stop.set()
                for other in futures:
                    other.cancel()
    finally:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
    if errors:
        raise errors[0]
    return done


def _record_lock(
    lock_path: str | os.PathLike, lock: dict, key: str, about: dict, recorded: dict[str, str], commit: str | None
) -> None:
    """Add (or replace) the sha256 of ``recorded`` files under ``key`` and write the lock file (atomically)."""
    entry = lock["datasets"].setdefault(key, {})
    entry.update(about)
    if commit:
        entry["commit"] = commit
    entry["files"] = dict(sorted({**entry.get("files", {}), **recorded}.items()))
    lock["datasets"] = dict(sorted(lock["datasets"].items()))
    write_json(lock_path, lock)


def download_from_hub(
    out_dir: str | os.PathLike,
    repo_id: str = DEFAULT_REPO_ID,
    revision: str = "main",
    variant: str = "sp1024",
    train_shards: int = 80,
    remote_root: str = "datasets",
    endpoint: str | None = None,
    max_workers: int = 8,
    name: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    lock_path: str | os.PathLike | None = None,
    update_lock: bool = False,
    offline: bool | None = None,
    timeout: float = 30.0,
    retries: int = 5,
    threads: int | None = None,
    log: Callable[[str], None] = _log,
    progress_interval: float = PROGRESS_INTERVAL_S,
) -> dict:
    """Download a challenge data set from a Hugging Face dataset repo into ``out_dir`` (flat) and write its manifest.

    The repo's ``manifest.json`` gives the number of train shards it has (asking for more is an error before anything
    is fetched) and the tokenizer files; without it, a missing shard is found by its 404. Each file is taken, in this
    order, from ``out_dir`` (kept if valid), the local Hugging Face cache (hard-linked), or the hub (``max_workers``
    parallel downloads, each resumable: see ``_Hub.download``). Every file is checked before it is put in place:
    shards' headers, sizes and largest token id, the tokenizer's vocabulary, the sha256 against the hub's ETag (LFS
    files) and against the lock file ``lock_path``, keyed by ``repo_id@revision/variant``. A file without a locked
    hash gets one recorded (the lock is written on first download); a file whose hash differs is an error naming it
    and is never used, unless ``update_lock`` (then the new hash replaces the old one). Offline (``offline``, default
    HF_HUB_OFFLINE) only ``out_dir`` and the cache are used. Errors (unreachable hub after ``retries`` retries with
    ``timeout`` seconds each, missing file, bad file) are HubError naming the file or the repo; no file is left
    half-written in place and the manifest is only written when everything is there.
    """
    out_dir = Path(out_dir)
    vocab = variant_vocab_size(variant)
    check_revision(revision)
    if train_shards < 1:
        raise ValueError(f"train_shards must be at least 1, got {train_shards}")
    if timeout <= 0 or retries < 0 or max_workers < 1:
        raise ValueError(f"need timeout > 0, retries >= 0, max_workers >= 1; got {timeout}, {retries}, {max_workers}")
    offline = hub_offline() if offline is None else offline
    threads = threads or cpu_count()
    hub = _Hub(repo_id, revision, endpoint, timeout, retries, log)
    t0 = time.perf_counter()
    log(
        f"{hub.where}: variant {variant}, {train_shards} train shards -> {out_dir}"
        + (" (offline: HF_HUB_OFFLINE)" if offline else "")
    )
    if not is_commit(revision):
        log(
            f"note: revision {revision!r} is a branch or tag, not a commit: the files it names may change; pin a commit"
        )

    # 1. What to fetch: the repo's manifest.json (cache first) says how many shards there are and the tokenizer files.
    repo_manifest = f"{_remote_base(remote_root)}manifest.json"
    cached = _cached_file(repo_id, repo_manifest, revision, cache_dir)
    if cached is not None:
        raw = cached.read_bytes()
    else:
        raw = None if offline else hub.read_small(repo_manifest)
    available, val_shards, tokenizer_paths, sidecar = None, 1, None, None
    if raw is not None:
        try:
            parsed = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise HubError(f"{repo_manifest} of {hub.where}: not valid JSON ({e})") from None
        available, val_shards, tokenizer_paths, sidecar = _plan_from_repo_manifest(parsed, variant, f"{repo_manifest}")
    if sidecar is None:
        log(
            f"note: {'no ' + repo_manifest if raw is None else repo_manifest + ' does not list fineweb10B_' + variant}:"
            f" default file names, and the byte sidecar (fineweb_val_bytes_*.bin) is used only if the repo has it"
        )
    if available is not None and train_shards > available:
        raise HubError(
            f"{hub.where}: {repo_manifest} lists {available} train shards of fineweb10B_{variant},"
            f" asked for {train_shards} (train_shards)"
        )
    files = hub_files(variant, train_shards, remote_root, val_shards, tokenizer_paths, sidecar is not False)
    # A sidecar the repo's manifest does not announce is optional: used when the repo has it.
    optional = {f for f in files if f.kind == "sidecar"} if sidecar is None else set()

    lock = read_lock(lock_path) if lock_path is not None else None
    key = lock_key(repo_id, revision, variant)
    expected: dict[str, str] = dict(lock["datasets"].get(key, {}).get("files", {})) if lock else {}

    # 2. Files already in place: keep the valid ones (read-only so far).
    def check_local(f: HubFile) -> tuple[str | None, str | None]:
        path = out_dir / f.name
        if not path.is_file():
            return None, None
        try:
            return _verify(path, f.kind, vocab, expected.get(f.remote)), None
        except _LockMismatch as m:
            return None, f"sha256 {m.digest} differs from the lock's {expected[f.remote]}"
        except (ValueError, OSError) as e:
            return None, str(e)

    present: dict[HubFile, str] = {}
    bad: dict[HubFile, str] = {}
    for f, (digest, problem) in zip(files, _parallel(check_local, files, threads), strict=True):
        if digest:
            present[f] = digest
        elif problem:
            bad[f] = problem

    # 3. The local Hugging Face cache, for what is missing.
    def check_cache(f: HubFile) -> tuple[Path, str] | None:
        path = _cached_file(repo_id, f.remote, revision, cache_dir)
        if path is None:
            return None
        try:
            return path, _verify(path, f.kind, vocab, expected.get(f.remote))
        except _LockMismatch as m:
            log(f"cache: {path}: sha256 {m.digest} differs from the lock's {expected[f.remote]}; not used")
        except (ValueError, OSError) as e:
            log(f"cache: {path} is not valid, not used: {e}")
        return None

    missing = [f for f in files if f not in present]
    from_cache = {
        f: hit for f, hit in zip(missing, _parallel(check_cache, missing, threads), strict=True) if hit is not None
    }
    todo = [f for f in missing if f not in from_cache]

    def drop_optional(absent: list[HubFile], why: str) -> None:
        nonlocal files, todo
        if absent:
            log(f"no byte sidecar ({', '.join(f.remote for f in absent)} {why}): val_bpb counts the tokenizer's pieces")
        files = [f for f in files if f not in absent]
        todo = [f for f in todo if f not in absent]

    if offline:
        drop_optional([f for f in todo if f in optional], "neither here nor in the cache, offline")
    if todo and offline:
        from huggingface_hub import constants

        names = ", ".join(f.remote for f in todo[:5]) + (f" and {len(todo) - 5} more" if len(todo) > 5 else "")
        raise HubError(
            f"offline (HF_HUB_OFFLINE): {len(todo)} files of {hub.where} are neither valid in {out_dir} nor in the"
            f" Hugging Face cache {cache_dir or constants.HF_HUB_CACHE}: {names}"
        )

    # 4. Metadata of what must be downloaded (fails before anything is written: unreachable hub, missing files).
    metas: dict[HubFile, Any] = {}
    if todo:
        from huggingface_hub.errors import RemoteEntryNotFoundError

        def head(f: HubFile):
            try:
                return hub.head(f.remote)
            except RemoteEntryNotFoundError:
                return None

        results = [head(todo[0])]  # one request first: an unreachable hub fails once, not once per file
        results += _parallel(head, todo[1:], max_workers)
        metas = dict(zip(todo, results, strict=True))
        drop_optional([f for f in todo if f in optional and metas[f] is None], "not in the repo")
        absent = [f for f in todo if metas[f] is None]
        absent_sidecar = [f for f in absent if f.kind == "sidecar"]
        if absent_sidecar and len(absent_sidecar) == len(absent):
            raise HubError(
                f"{hub.where}: not found: {', '.join(f.remote for f in absent_sidecar)}: {repo_manifest} lists a byte"
                f" sidecar (val_bytes_glob) for fineweb10B_{variant}; without it val_bpb cannot be scored on the"
                " original bytes"
            )
        absent_train = [f for f in absent if "_train_" in f.name and f.kind == "shard"]
        if len(absent) > len(absent_train):  # the tokenizer or val: the variant is not there at all
            names = ", ".join(f.remote for f in absent[:4]) + (
                f" and {len(absent) - 4} more" if len(absent) > 4 else ""
            )
            raise HubError(
                f"{hub.where}: not found: {names} (is variant {variant} in this repo, under {remote_root!r}?)"
            )
        if absent_train:
            index = {f: int(f.name[: -len(".bin")].rsplit("_", 1)[1]) for f in absent_train}
            first = min(absent_train, key=index.__getitem__)
            raise HubError(
                f"{hub.where}: {first.remote} not found: the repo has {index[first]} train shards of {variant},"
                f" asked for {train_shards} (train_shards)"
            )
        metas = {f: metas[f] for f in todo}
    commits = sorted({m.commit_hash for m in metas.values() if m.commit_hash})
    if len(commits) > 1:
        log(f"note: {revision!r} resolved to several commits during this run: {', '.join(commits)}")
    commit = revision if is_commit(revision) else (commits[0] if len(commits) == 1 else None)
    if commit is None and not commits and not is_commit(revision):
        # Nothing was fetched, so no answer named the commit: the cache's snapshot folder does, or one request.
        snapshots = {
            m.group(1) for p, _ in from_cache.values() if (m := re.search(r"/snapshots/([0-9a-f]{40})/", str(p)))
        }
        if len(snapshots) == 1:
            commit = snapshots.pop()
        elif not offline:
            commit = hub.head(files[0].remote).commit_hash or None
    if commit and not is_commit(revision):
        log(f"note: {revision!r} is commit {commit} now; pin it as the revision for a reproducible download")

    # 5. Write: from here on the folder changes, so its manifest goes first.
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST_NAME).unlink(missing_ok=True)
    staging = out_dir / PARTIAL_DIR
    recorded: dict[str, str] = {}
    for f, problem in bad.items():
        log(f"removed {out_dir / f.name}: {problem}")
        (out_dir / f.name).unlink(missing_ok=True)
    wanted = {f.name for f in files}
    for stale in out_dir.glob(f"fineweb_{SIDECAR_SPLIT}_*.bin"):  # a sidecar of other data would be scored with
        if stale.name not in wanted:
            log(f"removed {stale}: a byte sidecar this data set does not have")
            stale.unlink()
    if present:
        log(f"kept {len(present)} files already in {out_dir} and verified")
    for f, digest in present.items():
        if expected.get(f.remote) != digest:
            recorded[f.remote] = digest

    progress = _Progress(len(todo), sum(m.size or 0 for m in metas.values()), log, progress_interval)
    stop = threading.Event()

    def fetch(f: HubFile) -> str:
        meta = metas[f]
        part = staging / f"{f.name}.part"
        t = time.perf_counter()
        resumed = hub.download(f, meta, part, progress, stop)
        want = None if update_lock else expected.get(f.remote)
        try:
            digest = _verify(part, f.kind, vocab, want, etag=meta.etag)
        except _LockMismatch as m:
            _discard(part)
            raise HubError(
                f"{f.remote}: sha256 {m.digest} does not match the lock {lock_path} ({key}: {want}); the file is not"
                " used. If the repo's content changed on purpose, run again with update_lock (--update-lock)"
            ) from None
        except (ValueError, OSError) as e:
            _discard(part)
            raise HubError(f"{f.remote} from {hub.where} is not valid and is not used: {e}") from None
        old = expected.get(f.remote)
        if old is not None and old != digest:
            log(f"lock: {f.remote}: sha256 {digest} replaces {old} (update_lock)")
        if old != digest:
            recorded[f.remote] = digest
        os.chmod(part, FILE_MODE)
        os.replace(part, out_dir / f.name)
        _discard(part)
        progress.file_done(f.name, (out_dir / f.name).stat().st_size, time.perf_counter() - t, resumed)
        return f.name

    downloaded: list[str] = []
    try:
        if from_cache or todo:
            staging.mkdir(exist_ok=True)
        for f, (src, digest) in from_cache.items():
            how = _place(src, out_dir / f.name, digest, staging)
            log(f"from cache: {f.name} ({how} {src})")
            if expected.get(f.remote) != digest:
                recorded[f.remote] = digest
        if todo:
            log(f"downloading {len(todo)} files ({progress.total / 1e9:.2f} GB) with {max_workers} parallel downloads")
            downloaded = _run_all(fetch, todo, max_workers, stop)
    finally:
        if lock is not None and recorded:  # what was verified is recorded, even when another file failed
            _record_lock(
                lock_path, lock, key, {"repo_id": repo_id, "revision": revision, "variant": variant}, recorded, commit
            )
            log(f"lock: recorded the sha256 of {len(recorded)} files under {key} in {lock_path}")
    shutil.rmtree(staging, ignore_errors=True)  # all in place: leftovers of other runs are of no use
    if lock is not None:
        log(f"lock: all {len(files)} files match {lock_path} ({key})")

    source = {
        "kind": "hub",
        "repo_id": repo_id,
        "revision": revision,
        "commit": commit,
        "variant": variant,
        "remote_root": remote_root,
        "endpoint": endpoint,
        "train_shards": train_shards,
        "lock": str(lock_path) if lock_path is not None else None,
    }
    tokenizer = out_dir / next(f for f in files if f.kind == "model").name
    try:
        manifest = write_manifest(out_dir, name or f"fineweb10B_{variant}", source, tokenizer, "fineweb")
    except ValueError as e:
        raise HubError(f"{hub.where}: the files do not make a data set: {e}") from None
    return {
        "out_dir": str(out_dir),
        "downloaded": sorted(downloaded),
        "from_cache": sorted(f.name for f in from_cache),
        "present": sorted(f.name for f in present),
        "removed": sorted(f.name for f in bad),
        "bytes_downloaded": progress.transferred,
        "commit": commit,
        "lock_recorded": sorted(recorded),
        "elapsed_s": time.perf_counter() - t0,
        "manifest": manifest,
    }


# ---------------------------------------------------------------------------------------------------------------------
# Command line


def _cmd_documents(args: argparse.Namespace) -> int:
    out = Path(args.out)
    name = _check_name(args.name, "--name")
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST_NAME).unlink(missing_ok=True)
    t0 = time.perf_counter()
    model = train_tokenizer(
        args.docs, out / f"tokenizer_sp{args.vocab_size}", args.vocab_size, args.tokenizer_max_docs, args.threads
    )
    t_tok = time.perf_counter() - t0
    _log(f"{model}: tokenizer trained in {t_tok:.1f} s")
    stats = docs_to_shards(
        args.docs, model, out, name, args.val_docs, args.shard_tokens, args.max_docs, threads=args.threads
    )
    source = {
        "kind": "documents",
        "docs": str(args.docs),
        "docs_sha256": sha256_file(args.docs),
        "vocab_size": args.vocab_size,
        "val_docs": args.val_docs,
        "max_docs": args.max_docs,
        "tokenizer_max_docs": args.tokenizer_max_docs,
        "shard_tokens": args.shard_tokens,
        "docs_read": stats["docs"],
        "text_bytes": stats["text_bytes"],
        "val_bytes_per_token": round(stats["val_bytes_per_token"], 6),
    }
    manifest = write_manifest(out, name, source, model, name)
    elapsed = time.perf_counter() - t0
    _log(
        f"{out / MANIFEST_NAME}: {name}: {stats['docs']} docs -> {manifest['train']['tokens']} train tokens"
        f" ({len(stats['train_files'])} shards) + {manifest['val']['tokens']} val tokens"
        f" ({len(stats['val_files'])} shards), vocab {manifest['tokenizer']['vocab_size']},"
        f" {stats['val_bytes_per_token']:.3f} val bytes/token"
    )
    _log(
        f"elapsed {elapsed:.1f} s (tokenizer {t_tok:.1f} s, shards {stats['elapsed_s']:.1f} s:"
        f" {stats['docs_per_s']:,.0f} docs/s, {stats['tokens_per_s']:,.0f} tokens/s,"
        f" {stats['text_mb_per_s']:.2f} MB/s of text on {stats['threads']} processes)"
    )
    return 0


def _cmd_hub(args: argparse.Namespace) -> int:
    result = download_from_hub(
        args.out,
        repo_id=args.repo_id,
        revision=args.revision,
        variant=args.variant,
        train_shards=args.train_shards,
        remote_root=args.remote_root,
        endpoint=args.endpoint,
        max_workers=args.max_workers,
        name=args.name,
        cache_dir=args.cache_dir,
        lock_path=args.lock,
        update_lock=args.update_lock,
        offline=True if args.offline else None,
        timeout=args.timeout,
        retries=args.retries,
        threads=args.threads,
    )
    m = result["manifest"]
    _log(
        f"{Path(args.out) / MANIFEST_NAME}: {m['name']}: {len(m['train']['files'])} train shards"
        f" ({m['train']['tokens']} tokens) + {len(m['val']['files'])} val ({m['val']['tokens']} tokens);"
        f" downloaded {len(result['downloaded'])} files ({result['bytes_downloaded']:,} bytes),"
        f" {len(result['from_cache'])} from the Hugging Face cache, {len(result['present'])} already present;"
        f" {result['elapsed_s']:.1f} s"
    )
    return 0


def _positive_int(value: str) -> int:
    n = int(value)
    if n <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return n


def _count(value: str) -> int:
    n = int(value)
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {value}")
    return n


def _seconds(value: str) -> float:
    x = float(value)
    if not x > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {value}")
    return x


def _revision(value: str) -> str:
    try:
        return check_revision(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def register(subparsers) -> None:
    """Add the ``data`` subcommand: ``pgolf data documents ...`` and ``pgolf data hub ...``."""
    parser = subparsers.add_parser("data", help="build or download a tokenized data set (shards + manifest)")
    sub = parser.add_subparsers(dest="data_command", required=True)

    docs = sub.add_parser("documents", help="train a tokenizer on a documents file and write shards + manifest")
    docs.add_argument("--docs", required=True, help="JSON lines with a 'text' field (.xz / .gz / plain)")
    docs.add_argument("--out", required=True, help="output data folder")
    docs.add_argument("--name", required=True, help="data set name, also the shard file prefix")
    docs.add_argument("--vocab-size", type=_positive_int, default=1024)
    docs.add_argument("--val-docs", type=_positive_int, required=True, help="the first N documents form val")
    docs.add_argument("--shard-tokens", type=_positive_int, default=100_000_000)
    docs.add_argument("--max-docs", type=_positive_int, default=None, help="read only the first N documents")
    docs.add_argument("--tokenizer-max-docs", type=_positive_int, default=None, help="train on the first N documents")
    docs.add_argument("--threads", type=_positive_int, default=None, help="CPUs to use (default: all available)")
    docs.set_defaults(func=_cmd_documents)

    hub = sub.add_parser("hub", help="download the challenge's shards + tokenizer from the Hugging Face hub")
    hub.add_argument("--out", required=True, help="output data folder (files are placed flat)")
    hub.add_argument("--repo-id", default=DEFAULT_REPO_ID, help="dataset repo holding the variant")
    hub.add_argument("--revision", type=_revision, default="main", help="a 40-hex commit (pinned) or a branch/tag")
    hub.add_argument("--variant", default="sp1024", help="sp<vocab>: the fineweb10B_<variant> shards")
    hub.add_argument("--train-shards", type=_positive_int, default=80)
    hub.add_argument("--remote-root", default="datasets", help="folder of the data inside the repo")
    hub.add_argument("--endpoint", default=None, help="hub URL (default: huggingface_hub's, i.e. HF_ENDPOINT)")
    hub.add_argument("--max-workers", type=_positive_int, default=8, help="parallel downloads")
    hub.add_argument("--name", default=None, help="data set name (default fineweb10B_<variant>)")
    hub.add_argument("--lock", default=None, help="lock file: sha256 of every file, checked, recorded when new")
    hub.add_argument(
        "--update-lock", action="store_true", help="accept files whose sha256 differs from the lock and record it"
    )
    hub.add_argument("--offline", action="store_true", help="no network: the folder and the HF cache only")
    hub.add_argument("--cache-dir", default=None, help="Hugging Face cache (default: HF_HUB_CACHE)")
    hub.add_argument("--timeout", type=_seconds, default=30.0, help="seconds to wait for the hub per request")
    hub.add_argument("--retries", type=_count, default=5, help="retries of a failed request or dropped download")
    hub.add_argument("--threads", type=_positive_int, default=None, help="CPUs for verification (default: all)")
    hub.set_defaults(func=_cmd_hub)
