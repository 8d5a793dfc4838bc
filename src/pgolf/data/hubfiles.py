"""The files of a hub data set: variant and revision names, the files a variant needs (from the repo's manifest.json
when it lists them), and each file checked by its kind (shard, byte sidecar, tokenizer model or vocab) and hash."""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple

from pgolf.data.lock import SHA256_RE
from pgolf.data.shards import read_shard
from pgolf.data.tokenizer import load_tokenizer
from pgolf.fsio import sha256_file

DEFAULT_REPO_ID = "willdepueoai/parameter-golf"
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
_REVISION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")
_VARIANT_RE = re.compile(r"^sp(\d+)(?:[_-][A-Za-z0-9_.-]+)?$")


class LockMismatch(ValueError):
    """A file's sha256 differs from the lock's."""

    def __init__(self, digest: str):
        super().__init__(digest)
        self.digest = digest


class HubFile(NamedTuple):
    remote: str  # path inside the repo
    kind: str  # "model", "vocab", "shard" or "sidecar"

    @property
    def name(self) -> str:
        return PurePosixPath(self.remote).name


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
    """``revision`` when it is a 40-hex commit or a branch/tag name; ValueError otherwise."""
    if not (is_commit(revision) or (_REVISION_RE.fullmatch(revision) and ".." not in revision)):
        raise ValueError(f"revision {revision!r} must be a 40-hex commit hash (pinned) or a branch/tag name")
    return revision


def hub_offline() -> bool:
    """HF_HUB_OFFLINE (as huggingface_hub read it at import, or as the environment says now)."""
    from huggingface_hub import constants

    now = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}
    return bool(constants.HF_HUB_OFFLINE) or now


def remote_base(remote_root: str) -> str:
    """``remote_root`` as a prefix of paths in the repo (``datasets/``; empty for the repo's root)."""
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
    base = remote_base(remote_root)
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


def plan_from_repo_manifest(
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


def check_hub_file(path: Path, kind: str, vocab_size: int) -> None:
    """ValueError naming ``path`` unless it is a valid file of its kind (shards: header, size, ids below the vocab)."""
    if kind == "shard":
        tokens = read_shard(path, mmap=True)
        top = int(tokens.max()) if tokens.size else -1
        del tokens
        if top >= vocab_size:
            raise ValueError(f"{path}: token id {top} is not below the vocabulary size {vocab_size}")
    elif kind == "model":
        sp = load_tokenizer(path)
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


def verify_file(path: Path, kind: str, vocab_size: int, expected: str | None, etag: str | None = None) -> str:
    """Check a file's structure, then its sha256: against the hub's ETag when that is a sha256 (LFS files), and
    against ``expected`` (the lock). Returns the sha256; ValueError naming the file, LockMismatch for the lock."""
    check_hub_file(path, kind, vocab_size)
    digest = sha256_file(path)
    if etag and SHA256_RE.fullmatch(etag) and digest != etag:
        raise ValueError(f"{path}: sha256 {digest} differs from the hub's ETag {etag} (corrupted in transfer)")
    if expected is not None and digest != expected:
        raise LockMismatch(digest)
    return digest
