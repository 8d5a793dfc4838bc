"""Challenge data: shard files, the SentencePiece tokenizer, documents -> shards, the hub download and the manifest.

Shard format (challenge): 256 little-endian int32 header words ([0] magic 20240520, [1] version 1, [2] token count),
then ``count`` little-endian uint16 token ids; file size = 1024 + 2 * count. Every document starts with BOS (id 1).
A data folder is complete when its ``manifest.json`` exists: it is always written last.
"""

from __future__ import annotations

import argparse
import glob
import gzip
import io
import itertools
import json
import lzma
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path

import numpy as np
import sentencepiece as spm

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
# Encoding batches: at most this many documents / characters per sentencepiece call.
ENCODE_BATCH_DOCS = 4096
ENCODE_BATCH_CHARS = 32 << 20

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


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


def _open_text(path: Path) -> io.TextIOBase:
    """Open a (possibly .xz / .gz compressed) UTF-8 text file."""
    if path.suffix == ".xz":
        return lzma.open(path, "rt", encoding="utf-8")
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def iter_documents(docs_path: str | os.PathLike, max_docs: int | None = None) -> Iterator[str]:
    """Yield the ``text`` of each JSON line of a documents file, in file order (blank lines are skipped)."""
    path = Path(docs_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: documents file not found")
    if max_docs is not None and max_docs <= 0:
        return
    n = 0
    with _open_text(path) as f:
        try:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{lineno}: not valid JSON ({e})") from None
                text = obj.get("text") if isinstance(obj, dict) else None
                if not isinstance(text, str):
                    raise ValueError(f"{path}:{lineno}: expected a JSON object with a string field 'text'")
                yield text
                n += 1
                if max_docs is not None and n >= max_docs:
                    return
        except (lzma.LZMAError, gzip.BadGzipFile, EOFError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: cannot read ({type(e).__name__}: {e})") from None


def _batches(texts: Iterator[str]) -> Iterator[list[str]]:
    batch: list[str] = []
    chars = 0
    for text in texts:
        batch.append(text)
        chars += len(text)
        if len(batch) >= ENCODE_BATCH_DOCS or chars >= ENCODE_BATCH_CHARS:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


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


def _pb_fields(data: bytes) -> Iterator[tuple[int, bytes, bytes]]:
    """Split a protobuf message into (field number, raw key+value bytes, payload of length-delimited fields)."""
    i = 0
    while i < len(data):
        start = i
        key = 0
        shift = 0
        while True:
            b = data[i]
            i += 1
            key |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                break
        field, wire = key >> 3, key & 7
        payload = b""
        if wire == 0:
            while data[i] & 0x80:
                i += 1
            i += 1
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        elif wire == 2:
            length = 0
            shift = 0
            while True:
                b = data[i]
                i += 1
                length |= (b & 0x7F) << shift
                shift += 7
                if b < 0x80:
                    break
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


def docs_to_shards(
    docs_path: str | os.PathLike,
    tokenizer_model: str | os.PathLike,
    out_dir: str | os.PathLike,
    prefix: str,
    val_docs: int,
    shard_tokens: int = 100_000_000,
    max_docs: int | None = None,
    threads: int | None = None,
) -> dict:
    """Tokenize documents into ``{prefix}_val_*.bin`` (the first ``val_docs`` documents) and ``{prefix}_train_*.bin``.

    Each document becomes [BOS] + ids (no EOS); documents may cross shard boundaries. Streams in batches (bounded
    memory), encoding with all cores. Old shards of the same prefix beyond the new ones and the folder's manifest
    are removed (the data set changes).
    """
    docs_path, out_dir = Path(docs_path), Path(out_dir)
    _check_name(prefix, "prefix")
    if val_docs < 1:
        raise ValueError(f"val_docs must be at least 1, got {val_docs}")
    if not 0 < shard_tokens <= MAX_SHARD_TOKENS:
        raise ValueError(f"shard_tokens must be in 1..{MAX_SHARD_TOKENS}, got {shard_tokens}")
    sp = _load_tokenizer(Path(tokenizer_model))
    if sp.vocab_size() > 65536:
        raise ValueError(f"{tokenizer_model}: vocab size {sp.vocab_size()} does not fit uint16 shards")
    threads = threads or cpu_count()

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST_NAME).unlink(missing_ok=True)
    t0 = time.perf_counter()
    writers = {
        "val": _ShardWriter(out_dir, prefix, "val", shard_tokens),
        "train": _ShardWriter(out_dir, prefix, "train", shard_tokens),
    }
    docs = {"val": 0, "train": 0}
    text_bytes = {"val": 0, "train": 0}
    for batch in _batches(iter_documents(docs_path, max_docs)):
        encoded = sp.encode(batch, out_type=int, num_threads=threads)
        start = docs["val"] + docs["train"]
        n_val = max(0, min(len(batch), val_docs - start))
        for split, lo, hi in (("val", 0, n_val), ("train", n_val, len(batch))):
            if hi > lo:
                writers[split].add(_with_bos(encoded[lo:hi]))
                docs[split] += hi - lo
                text_bytes[split] += sum(len(t.encode("utf-8")) for t in batch[lo:hi])
    if docs["train"] == 0:
        raise ValueError(
            f"{docs_path}: {docs['val']} documents read; need more than val_docs={val_docs} to leave training data"
        )
    for split, writer in writers.items():
        writer.flush()
        _remove_stale_shards(out_dir, prefix, split, set(writer.files))
    elapsed = time.perf_counter() - t0
    tokens = writers["val"].tokens + writers["train"].tokens
    return {
        "docs": docs["val"] + docs["train"],
        "val_docs": docs["val"],
        "train_docs": docs["train"],
        "val_tokens": writers["val"].tokens,
        "train_tokens": writers["train"].tokens,
        "tokens": tokens,
        "val_files": writers["val"].files,
        "train_files": writers["train"].files,
        "text_bytes": text_bytes["val"] + text_bytes["train"],
        "val_text_bytes": text_bytes["val"],
        "val_bytes_per_token": text_bytes["val"] / max(1, writers["val"].tokens),
        "elapsed_s": elapsed,
        "tokens_per_s": tokens / elapsed if elapsed > 0 else 0.0,
        "threads": threads,
    }


# ---------------------------------------------------------------------------------------------------------------------
# Manifest


def _split_files(out_dir: Path, prefix: str, split: str) -> list[Path]:
    """The shards ``{prefix}_{split}_*.bin`` of a folder, checked to be named NNNNNN and numbered 0, 1, ... ."""
    pattern = re.compile(rf"^{re.escape(prefix)}_{split}_(\d{{6}})\.bin$")
    files = sorted(out_dir.glob(f"{prefix}_{split}_*.bin"))
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

    Each shard is header-checked and hashed; its largest token id must be below the tokenizer's vocab size.
    Paths are stored relative to the folder.
    """
    out_dir = Path(out_dir)
    tokenizer_path = Path(tokenizer_path)
    _check_name(prefix, "prefix")
    sp = _load_tokenizer(tokenizer_path)
    vocab_size = int(sp.vocab_size())
    splits = {split: _split_files(out_dir, prefix, split) for split in ("train", "val")}
    all_files = splits["train"] + splits["val"]
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
                {"path": path.name, "tokens": scan["tokens"], "bytes": scan["bytes"], "sha256": scan["sha256"]}
            )
        manifest[split] = {
            "files": entries,
            "tokens": sum(e["tokens"] for e in entries),
            "bytes": sum(e["bytes"] for e in entries),
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
    ``train_tokens`` / ``val_tokens``.
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
    for split in ("train", "val"):
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
        pattern = str(folders.pop() / f"{m['prefix']}_{split}_*.bin")
        matched = sorted(Path(p) for p in glob.glob(pattern))
        _require(
            matched == sorted(resolved),
            path,
            f"glob {pattern} matches {len(matched)} files but the manifest lists {len(resolved)} {split} shards",
        )
        out[f"{split}_files"] = [str(p) for p in resolved]
        out[f"{split}_glob"] = pattern
        out[f"{split}_tokens"] = sum(e["tokens"] for e in files)
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Hub download


def variant_vocab_size(variant: str) -> int:
    """Vocabulary size named by a variant such as ``sp1024``."""
    m = re.fullmatch(r"sp(\d+)", variant)
    if not m:
        raise ValueError(f"variant {variant!r} must look like sp<vocab>, e.g. sp1024")
    return int(m.group(1))


def hub_files(variant: str, train_shards: int, remote_root: str = "datasets") -> list[tuple[str, str]]:
    """(remote path, kind) of the files a variant needs; kind is 'model', 'vocab' or 'shard'."""
    vocab = variant_vocab_size(variant)
    root = remote_root.strip("/")
    base = f"{root}/" if root else ""
    shards = f"{base}datasets/fineweb10B_{variant}"
    files = [
        (f"{base}tokenizers/fineweb_{vocab}_bpe.model", "model"),
        (f"{base}tokenizers/fineweb_{vocab}_bpe.vocab", "vocab"),
        (f"{shards}/fineweb_val_000000.bin", "shard"),
    ]
    files += [(f"{shards}/fineweb_train_{i:06d}.bin", "shard") for i in range(train_shards)]
    return files


def _check_hub_file(path: Path, kind: str, vocab_size: int) -> None:
    """ValueError naming ``path`` unless it is a valid file of its kind."""
    if kind == "shard":
        shard_token_count(path)
    elif kind == "model":
        sp = _load_tokenizer(path)
        if sp.vocab_size() != vocab_size:
            raise ValueError(f"{path}: tokenizer has vocab {sp.vocab_size()}, expected {vocab_size}")
    elif kind == "vocab":
        with open(path, encoding="utf-8") as f:
            lines = sum(1 for _ in f)
        if lines != vocab_size:
            raise ValueError(f"{path}: {lines} lines, expected {vocab_size}")
    else:  # pragma: no cover - internal
        raise AssertionError(kind)


def _is_valid(path: Path, kind: str, vocab_size: int) -> bool:
    if not path.is_file():
        return False
    try:
        _check_hub_file(path, kind, vocab_size)
    except (ValueError, OSError):
        return False
    return True


def download_from_hub(
    out_dir: str | os.PathLike,
    repo_id: str = "willdepueoai/parameter-golf",
    revision: str = "main",
    variant: str = "sp1024",
    train_shards: int = 80,
    remote_root: str = "datasets",
    endpoint: str | None = None,
    max_workers: int = 8,
    name: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> dict:
    """Download a challenge data set from a Hugging Face dataset repo into ``out_dir`` (flat) and write its manifest.

    Files already present and valid are kept. Each file is downloaded into a hidden staging folder, checked, then
    renamed into place; the staging folder is removed at the end, whatever happens. Any hub error is a RuntimeError
    naming the file and the repo.
    """
    from huggingface_hub import hf_hub_download

    out_dir = Path(out_dir)
    vocab = variant_vocab_size(variant)
    if train_shards < 1:
        raise ValueError(f"train_shards must be at least 1, got {train_shards}")
    files = hub_files(variant, train_shards, remote_root)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST_NAME).unlink(missing_ok=True)
    t0 = time.perf_counter()
    todo = [(remote, kind) for remote, kind in files if not _is_valid(out_dir / Path(remote).name, kind, vocab)]
    present = [Path(remote).name for remote, kind in files if (remote, kind) not in todo]
    where = f"dataset {repo_id}@{revision}" + (f" on {endpoint}" if endpoint else "")
    staging = out_dir / ".hub-staging"

    def fetch(remote: str, kind: str) -> str:
        try:
            local = Path(
                hf_hub_download(
                    repo_id,
                    remote,
                    repo_type="dataset",
                    revision=revision,
                    endpoint=endpoint,
                    local_dir=staging,
                    cache_dir=cache_dir,
                )
            )
        except Exception as e:  # every hub/network failure becomes one error naming the file and the repo
            raise RuntimeError(f"{remote}: download from {where} failed: {type(e).__name__}: {e}") from e
        try:
            _check_hub_file(local, kind, vocab)
        except (ValueError, OSError) as e:
            raise RuntimeError(f"{remote} from {where} is not valid: {e}") from e
        dest = out_dir / Path(remote).name
        os.replace(local, dest)
        return dest.name

    futures = []
    try:
        with ThreadPoolExecutor(max_workers=max(1, max_workers)) as pool:
            futures = [pool.submit(fetch, remote, kind) for remote, kind in todo]
            wait(futures, return_when=FIRST_EXCEPTION)
            for fut in futures:  # after the first failure, start nothing new; running downloads finish
                fut.cancel()
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    finished = [f for f in futures if not f.cancelled()]
    errors = [f.exception() for f in finished if f.exception() is not None]
    if errors:
        raise errors[0]
    downloaded = [f.result() for f in finished]

    source = {
        "kind": "hub",
        "repo_id": repo_id,
        "revision": revision,
        "variant": variant,
        "remote_root": remote_root,
        "endpoint": endpoint,
        "train_shards": train_shards,
    }
    tokenizer = out_dir / Path(files[0][0]).name
    manifest = write_manifest(out_dir, name or f"fineweb10B_{variant}", source, tokenizer, "fineweb")
    return {
        "out_dir": str(out_dir),
        "downloaded": sorted(downloaded),
        "present": sorted(present),
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
    print(
        f"{out / MANIFEST_NAME}: {name}: {stats['docs']} docs -> {manifest['train']['tokens']} train tokens"
        f" ({len(stats['train_files'])} shards) + {manifest['val']['tokens']} val tokens"
        f" ({len(stats['val_files'])} shards), vocab {manifest['tokenizer']['vocab_size']},"
        f" {stats['val_bytes_per_token']:.3f} val bytes/token"
    )
    print(
        f"elapsed {elapsed:.1f} s (tokenizer {t_tok:.1f} s, shards {stats['elapsed_s']:.1f} s,"
        f" {stats['tokens_per_s']:,.0f} tokens/s on {stats['threads']} threads)"
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
    )
    m = result["manifest"]
    print(
        f"{Path(args.out) / MANIFEST_NAME}: {m['name']}: {len(m['train']['files'])} train shards"
        f" ({m['train']['tokens']} tokens) + {len(m['val']['files'])} val ({m['val']['tokens']} tokens);"
        f" downloaded {len(result['downloaded'])} files, {len(result['present'])} already present,"
        f" {result['elapsed_s']:.1f} s"
    )
    return 0


def _positive_int(value: str) -> int:
    n = int(value)
    if n <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return n


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
    docs.add_argument("--threads", type=_positive_int, default=None, help="default: all available cores")
    docs.set_defaults(func=_cmd_documents)

    hub = sub.add_parser("hub", help="download the challenge's shards + tokenizer from the Hugging Face hub")
    hub.add_argument("--out", required=True, help="output data folder (files are placed flat)")
    hub.add_argument("--repo-id", default="willdepueoai/parameter-golf")
    hub.add_argument("--revision", default="main")
    hub.add_argument("--variant", default="sp1024")
    hub.add_argument("--train-shards", type=_positive_int, default=80)
    hub.add_argument("--remote-root", default="datasets")
    hub.add_argument("--endpoint", default=None, help="hub URL (default: huggingface_hub's, i.e. HF_ENDPOINT)")
    hub.add_argument("--max-workers", type=_positive_int, default=8)
    hub.add_argument("--name", default=None, help="data set name (default fineweb10B_<variant>)")
    hub.set_defaults(func=_cmd_hub)
