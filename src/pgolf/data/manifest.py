"""The data folder's manifest: written last (a folder is complete when it exists), loaded with its paths checked, and
verified against the files (sha256, largest token id) and the hub lock before a stage uses them."""

from __future__ import annotations

import glob
import hashlib
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath

import numpy as np

from pgolf.data.common import FILE_MODE, check_name, cpu_count
from pgolf.data.lock import lock_key, read_lock
from pgolf.data.shards import HEADER_BYTES, SHARD_FORMAT, TOKEN_DTYPE, read_shard, scan_shard
from pgolf.data.tokenizer import load_tokenizer
from pgolf.fsio import read_json, sha256_file, write_json

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "pgolf-data-manifest"
MANIFEST_VERSION = 1

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
    check_name(prefix, "prefix")
    sp = load_tokenizer(tokenizer_path)
    vocab_size = int(sp.vocab_size())
    splits = {split: _split_files(out_dir, prefix, split) for split in ("train", "val")}
    sidecars = _sidecar_files(out_dir, prefix, splits["val"])
    all_files = splits["train"] + splits["val"] + sidecars
    with ThreadPoolExecutor(max_workers=min(len(all_files), cpu_count())) as pool:
        scans = dict(zip(all_files, pool.map(scan_shard, all_files), strict=True))
    manifest: dict = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "name": name,
        "source": source,
        "prefix": prefix,
        "shard_format": dict(SHARD_FORMAT),
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


def _absolute(path: str | os.PathLike) -> Path:
    """``path`` made absolute and normalized without resolving links (``os.path.abspath``)."""
    return Path(os.path.abspath(path))


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
    # absolute, but not resolved through links: a linked data/ (a volume) keeps the repository's own paths
    root = _absolute(path).parent
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
    tokenizer_path = _absolute(root / tok["path"])
    if not tokenizer_path.is_file():
        raise FileNotFoundError(f"{path}: tokenizer {tokenizer_path} not found")

    out = dict(m)
    out.update(manifest_path=str(_absolute(path)), root=str(root), tokenizer_path=str(tokenizer_path))
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
            shard = _absolute(root / entry["path"])
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
                    top = max(top, int(np.frombuffer(data, dtype=TOKEN_DTYPE, count=count).max()))
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
        pieces = int(load_tokenizer(tok_path).vocab_size())
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
