"""The data lock file: the sha256 of every file of a hub data set, keyed by ``<repo_id>@<revision>/<variant>``."""

from __future__ import annotations

import os
import re
from pathlib import Path

from pgolf.fsio import read_json, write_json

LOCK_FORMAT = "pgolf-data-lock"
LOCK_VERSION = 1
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


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
            if not isinstance(digest, str) or not SHA256_RE.fullmatch(digest):
                raise ValueError(
                    f"{path}: datasets[{key!r}].files[{remote!r}] must be a sha256 (64 lowercase hex), got {digest!r}"
                )
    return lock


def record_lock(
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
