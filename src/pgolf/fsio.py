"""Small file helpers: every product is written to a temporary name in the same folder, then renamed."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


class DiskFull(OSError, RuntimeError):
    """A write that ran out of space, naming the file being written and the space left (a RuntimeError too, so that
    the command line reports it as an error, without a traceback)."""


def is_disk_full(e: BaseException) -> bool:
    """ENOSPC/EDQUOT, or numpy's short write (``tofile``: "N requested and M written", no errno)."""
    return isinstance(e, OSError) and (
        e.errno in (errno.ENOSPC, errno.EDQUOT) or (e.errno is None and "requested and" in str(e))
    )


def disk_full(path: str | os.PathLike, what: str, e: BaseException) -> DiskFull:
    """The error for a write of ``path`` (``what`` it is) that ran out of space: the file and the free space."""
    folder = Path(path).parent
    try:
        free = f"{shutil.disk_usage(folder).free:,} bytes free in {folder}"
    except OSError:
        free = f"free space in {folder} unknown"
    return DiskFull(errno.ENOSPC, f"{path}: could not write the {what}: no space left on device ({free}; {e})")


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``, on error remove it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; products get the usual permissions
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException as e:
        tmp_path.unlink(missing_ok=True)
        if is_disk_full(e) and not isinstance(e, DiskFull):
            raise disk_full(path, "file", e) from None
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike) -> dict:
    """Read a JSON object; a missing or malformed file is an error that names it."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
