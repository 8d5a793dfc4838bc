"""The local source: a hub data set that ``pgolf data`` already wrote into a folder (on any machine, e.g. onto a network
volume that the GPU pod mounts), checked and linked into the data folder instead of downloaded again.

The folder must be the data set the config's hub section names (repo, revision or the commit it resolved to, variant,
the number of train shards), every file must match its manifest (sha256 of the whole file, the largest token id) and
the lock file (``data.hub.lock``: a file with no entry yet is recorded, as the hub step does, once it is verified). The
data folder then holds a symbolic link per file and a manifest (written last) that names the hub source, the lock and
the folder it links to, so train and evaluate check the same files against the same lock before every use."""

from __future__ import annotations

import os
import shutil
from pathlib import Path, PurePosixPath

from pgolf.data.common import log
from pgolf.data.hubfiles import hub_files, remote_base
from pgolf.data.lock import lock_key, read_lock, record_lock
from pgolf.data.manifest import MANIFEST_NAME, SIDECAR_SPLIT, load_manifest, verify_manifest
from pgolf.fsio import read_json, write_json


def _identity_problems(source: dict, where: Path, repo_id: str, revision: str, variant: str) -> list[str]:
    problems = []
    if source.get("kind") != "hub":
        return [
            f"{where}: source is {source.get('kind')!r}: data.source local takes a folder that `pgolf data hub` (or the"
            " data step with data.source hub) downloaded"
        ]
    for key, want, config_key in (
        ("repo_id", repo_id, f"data.hub.repos.{variant}.repo_id"),
        ("variant", variant, "data.hub.variant"),
    ):
        if source.get(key) != want:
            problems.append(f"{where}: {key} is {source.get(key)!r}, config {config_key} is {want!r}")
    if revision not in (source.get("revision"), source.get("commit")):
        problems.append(
            f"{where}: revision {source.get('revision')!r} (commit {source.get('commit')!r}), config"
            f" data.hub.repos.{variant}.revision is {revision!r}"
        )
    return problems


def _files(m: dict) -> list[Path]:
    """The data set's files in the folder: the tokenizer (and its .vocab, when there is one), shards, sidecars."""
    tokenizer = Path(m["tokenizer_path"])
    files = [tokenizer]
    vocab = tokenizer.with_suffix(".vocab")
    if vocab.is_file():
        files.append(vocab)
    for split in ("train", "val", SIDECAR_SPLIT):
        files += [Path(p) for p in m.get(f"{split}_files", [])]
    return files


def _remote_names(variant: str, train_shards: int, remote_root: str, m: dict, entry: dict) -> dict[str, str]:
    """File name -> path in the repo (the lock's keys): the lock entry's own names first, then the hub's layout."""
    names: dict[str, str] = {}
    sidecar = SIDECAR_SPLIT in m
    for f in hub_files(variant, train_shards, remote_root, val_shards=len(m["val_files"]), sidecar=sidecar):
        names[f.name] = f.remote
    tokenizer = Path(m["tokenizer_path"]).name
    names.setdefault(tokenizer, f"{remote_base(remote_root)}tokenizers/{tokenizer}")
    for remote in entry.get("files", {}):
        names[PurePosixPath(remote).name] = remote
    return names


def link_local(
    out_dir: str | os.PathLike,
    path: str | os.PathLike,
    name: str,
    repo_id: str,
    revision: str,
    variant: str,
    train_shards: int,
    remote_root: str = "datasets",
    lock_path: str | os.PathLike | None = None,
    update_lock: bool = False,
    threads: int | None = None,
) -> dict:
    """Check the data set in ``path`` (a folder with its ``manifest.json``) against the hub section's identity, its
    manifest and the lock, then make ``out_dir`` a folder of links to its files with a manifest written last. Returns
    the manifest. ValueError naming the folder, the file or the config key on any mismatch; ``out_dir`` is replaced
    only when every check passed."""
    src = Path(path).absolute()
    where = src / MANIFEST_NAME
    if not where.is_file():
        raise ValueError(
            f"config data.local.path: {src} holds no {MANIFEST_NAME}: give a folder that `pgolf data` wrote (e.g. on a"
            f" CPU machine: `pgolf data hub --out {src} --variant {variant} --train-shards {train_shards} ...`)"
        )
    m = load_manifest(where)
    raw = read_json(where)
    source = raw.get("source") if isinstance(raw.get("source"), dict) else {"kind": raw.get("source")}
    problems = _identity_problems(source, where, repo_id, revision, variant)
    if len(m["train_files"]) != train_shards:
        problems.append(
            f"{where}: {len(m['train_files'])} train shards, the config asks for {train_shards}"
            f" (data.hub.train_shards or data.hub.repos.{variant}.train_shards)"
        )
    if problems:
        raise ValueError("the local data folder is not the data set the config names:\n  " + "\n  ".join(problems))

    # the lock, before any file is read: a file whose recorded sha256 differs is refused at once
    key = lock_key(repo_id, revision, variant)
    lock = read_lock(lock_path) if lock_path else None
    entry = (lock or {}).get("datasets", {}).get(key, {}) if lock is not None else {}
    remote = _remote_names(variant, train_shards, remote_root, m, entry)
    hashes = {Path(m["tokenizer_path"]).name: m["tokenizer"]["sha256"]}
    for split in ("train", "val", SIDECAR_SPLIT):
        hashes.update({e["path"]: e["sha256"] for e in (raw.get(split) or {}).get("files", [])})
    locked = entry.get("files", {})
    mismatched = [
        f"{n}: {h} in {where}, the lock has {locked[remote[n]]} ({lock_path}: {key})"
        for n, h in hashes.items()
        if remote.get(n) in locked and locked[remote[n]] != h
    ]
    if mismatched and not update_lock:
        raise ValueError(
            "the local data folder does not match the lock (set data.hub.update_lock: true for one run only if the"
            " repo's content changed on purpose):\n  " + "\n  ".join(mismatched)
        )

    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.linking"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        for f in _files(m):
            os.symlink(f, tmp / f.name)
        linked = {**raw, "source": {**source, "lock": None, "local_path": str(src)}}
        write_json(tmp / MANIFEST_NAME, linked)
        verify_manifest(tmp, threads=threads)  # every file against its manifest (sha256, largest token id)
        log(f"{src}: {len(hashes)} files match {MANIFEST_NAME}")
        if lock is not None:
            recorded = {remote[n]: h for n, h in hashes.items() if n in remote and locked.get(remote[n]) != h}
            if recorded:
                about = {"repo_id": repo_id, "revision": revision, "variant": variant}
                record_lock(lock_path, lock, key, about, recorded, source.get("commit"))
                log(f"lock: recorded the sha256 of {len(recorded)} files under {key} in {lock_path}")
            log(f"lock: all {len(hashes)} files match {lock_path} ({key})")
        linked["source"]["lock"] = str(lock_path) if lock_path is not None else None
        linked["name"] = name
        write_json(tmp / MANIFEST_NAME, linked)
        load_manifest(tmp)
        old = out.parent / f".{out.name}.old"
        shutil.rmtree(old, ignore_errors=True)
        if out.exists() or out.is_symlink():
            out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(
        f"{out}: linked to {src}: {len(m['train_files'])} train shards ({m['train_tokens']:,} tokens),"
        f" val {m['val_tokens']:,} tokens"
    )
    return load_manifest(out)
