"""Documents files: JSON lines with a ``text`` field (plain, .xz or .gz), read in file order, whole or in chunks."""

from __future__ import annotations

import gzip
import json
import lzma
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, NamedTuple


def _open_binary(path: Path) -> IO[bytes]:
    """Open a (possibly .xz / .gz compressed) file for reading bytes."""
    if path.suffix == ".xz":
        return lzma.open(path, "rb")
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    return open(path, "rb")


def read_lines(path: Path) -> Iterator[tuple[int, bytes]]:
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


def doc_text(path: str | os.PathLike, lineno: int, line: bytes) -> str:
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
    for n, (lineno, line) in enumerate(read_lines(path), start=1):
        yield doc_text(path, lineno, line)
        if max_docs is not None and n >= max_docs:
            return


class Chunk(NamedTuple):
    """A run of consecutive documents, all of one split: raw JSON lines with their line numbers."""

    split: str
    docs_path: str
    lines: list[tuple[int, bytes]]


def chunks(docs_path: Path, val_docs: int, max_docs: int | None, chunk_docs: int, chunk_bytes: int) -> Iterator[Chunk]:
    """Cut the documents file into chunks of at most ``chunk_docs`` documents / ``chunk_bytes`` raw bytes, the first
    ``val_docs`` documents in split "val", the rest (up to ``max_docs`` in all) in "train"; a chunk never straddles
    the val/train boundary."""
    lines: list[tuple[int, bytes]] = []
    size = 0
    n = 0
    split = "val"
    for lineno, line in read_lines(docs_path):
        lines.append((lineno, line))
        size += len(line)
        n += 1
        boundary = n == val_docs
        last = max_docs is not None and n >= max_docs
        if boundary or last or len(lines) >= chunk_docs or size >= chunk_bytes:
            yield Chunk(split, str(docs_path), lines)
            lines, size = [], 0
            if boundary:
                split = "train"
        if last:
            return
    if lines:
        yield Chunk(split, str(docs_path), lines)
