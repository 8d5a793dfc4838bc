"""The hub download: a challenge data set from a Hugging Face dataset repo into a data folder, every file taken from
the folder, the local Hugging Face cache or the hub, verified against the lock file, then the manifest written."""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import CancelledError, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pgolf.data.common import FILE_MODE, cpu_count
from pgolf.data.common import log as _log
from pgolf.data.hubclient import PROGRESS_INTERVAL_S, HubClient, HubError, Progress, Stopped, cached_file
from pgolf.data.hubfiles import (
    DEFAULT_REPO_ID,
    HubFile,
    LockMismatch,
    check_revision,
    hub_files,
    hub_offline,
    is_commit,
    plan_from_repo_manifest,
    remote_base,
    variant_vocab_size,
    verify_file,
)
from pgolf.data.lock import lock_key, read_lock, record_lock
from pgolf.data.manifest import MANIFEST_NAME, SIDECAR_SPLIT, write_manifest
from pgolf.fsio import sha256_file

# Unfinished downloads live here (``<name>.part`` + ``<name>.part.json``) until they are complete and verified; a later
# run resumes them with an HTTP range request.
PARTIAL_DIR = ".partial"
T = TypeVar("T")


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
            except (Stopped, CancelledError):
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


def _names(files: list[HubFile], most: int) -> str:
    """The first ``most`` files' remote paths, and how many more there are."""
    return ", ".join(f.remote for f in files[:most]) + (f" and {len(files) - most} more" if len(files) > most else "")


@dataclass
class _Download:
    """One run of ``download_from_hub``: its settings, and what each step leaves for the next (in ``run``'s order)."""

    out_dir: Path
    hub: HubClient
    repo_id: str
    revision: str
    variant: str
    train_shards: int
    remote_root: str
    endpoint: str | None
    max_workers: int
    name: str | None
    cache_dir: str | os.PathLike | None
    lock_path: str | os.PathLike | None
    update_lock: bool
    offline: bool
    threads: int
    log: Callable[[str], None]
    progress_interval: float
    files: list[HubFile] = field(default_factory=list)
    optional: set[HubFile] = field(default_factory=set)  # byte sidecars the repo's manifest does not announce
    lock: dict | None = None
    expected: dict[str, str] = field(default_factory=dict)  # remote path -> sha256 in the lock
    present: dict[HubFile, str] = field(default_factory=dict)  # valid in the folder already -> sha256
    bad: dict[HubFile, str] = field(default_factory=dict)  # in the folder but not valid -> why
    from_cache: dict[HubFile, tuple[Path, str]] = field(default_factory=dict)  # -> (cache file, sha256)
    todo: list[HubFile] = field(default_factory=list)  # to download
    metas: dict[HubFile, Any] = field(default_factory=dict)  # the hub's metadata of each file to download
    commit: str | None = None
    recorded: dict[str, str] = field(default_factory=dict)  # remote path -> sha256 to record in the lock

    def __post_init__(self) -> None:
        self.vocab = variant_vocab_size(self.variant)
        self.repo_manifest = f"{remote_base(self.remote_root)}manifest.json"
        self.key = lock_key(self.repo_id, self.revision, self.variant)
        self.staging = self.out_dir / PARTIAL_DIR
        self.progress = Progress(0, 0, self.log, self.progress_interval)
        self.stop = threading.Event()

    def run(self) -> dict:
        t0 = time.perf_counter()
        self._announce()
        self._plan()
        self._read_lock()
        self._check_folder()
        self._check_cache()
        if self.offline:
            self._drop_optional([f for f in self.todo if f in self.optional], "neither here nor in the cache, offline")
            self._refuse_offline()
        self._fetch_metadata()
        self._resolve_commit()
        self._prepare_folder()
        downloaded = self._put_in_place()
        manifest = self._write_manifest()
        return {
            "out_dir": str(self.out_dir),
            "downloaded": sorted(downloaded),
            "from_cache": sorted(f.name for f in self.from_cache),
            "present": sorted(f.name for f in self.present),
            "removed": sorted(f.name for f in self.bad),
            "bytes_downloaded": self.progress.transferred,
            "commit": self.commit,
            "lock_recorded": sorted(self.recorded),
            "elapsed_s": time.perf_counter() - t0,
            "manifest": manifest,
        }

    def _announce(self) -> None:
        self.log(
            f"{self.hub.where}: variant {self.variant}, {self.train_shards} train shards -> {self.out_dir}"
            + (" (offline: HF_HUB_OFFLINE)" if self.offline else "")
        )
        if not is_commit(self.revision):
            self.log(
                f"note: revision {self.revision!r} is a branch or tag, not a commit: the files it names may change;"
                " pin a commit"
            )

    def _plan(self) -> None:
        """1. What to fetch: the repo's manifest.json (cache first) says how many shards there are and the tokenizer
        files."""
        cached = cached_file(self.repo_id, self.repo_manifest, self.revision, self.cache_dir)
        if cached is not None:
            raw = cached.read_bytes()
        else:
            raw = None if self.offline else self.hub.read_small(self.repo_manifest)
        available, val_shards, tokenizer_paths, sidecar = None, 1, None, None
        if raw is not None:
            try:
                parsed = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise HubError(f"{self.repo_manifest} of {self.hub.where}: not valid JSON ({e})") from None
            available, val_shards, tokenizer_paths, sidecar = plan_from_repo_manifest(
                parsed, self.variant, f"{self.repo_manifest}"
            )
        if sidecar is None:
            what = (
                "no " + self.repo_manifest
                if raw is None
                else self.repo_manifest + " does not list fineweb10B_" + self.variant
            )
            self.log(
                f"note: {what}: default file names, and the byte sidecar (fineweb_val_bytes_*.bin) is used only if the"
                " repo has it"
            )
        if available is not None and self.train_shards > available:
            raise HubError(
                f"{self.hub.where}: {self.repo_manifest} lists {available} train shards of fineweb10B_{self.variant},"
                f" asked for {self.train_shards} (train_shards)"
            )
        self.files = hub_files(
            self.variant, self.train_shards, self.remote_root, val_shards, tokenizer_paths, sidecar is not False
        )
        # A sidecar the repo's manifest does not announce is optional: used when the repo has it.
        self.optional = {f for f in self.files if f.kind == "sidecar"} if sidecar is None else set()

    def _read_lock(self) -> None:
        self.lock = read_lock(self.lock_path) if self.lock_path is not None else None
        self.expected = dict(self.lock["datasets"].get(self.key, {}).get("files", {})) if self.lock else {}

    def _check_folder(self) -> None:
        """2. Files already in place: keep the valid ones (read-only so far)."""

        def check(f: HubFile) -> tuple[str | None, str | None]:
            path = self.out_dir / f.name
            if not path.is_file():
                return None, None
            try:
                return verify_file(path, f.kind, self.vocab, self.expected.get(f.remote)), None
            except LockMismatch as m:
                return None, f"sha256 {m.digest} differs from the lock's {self.expected[f.remote]}"
            except (ValueError, OSError) as e:
                return None, str(e)

        for f, (digest, problem) in zip(self.files, _parallel(check, self.files, self.threads), strict=True):
            if digest:
                self.present[f] = digest
            elif problem:
                self.bad[f] = problem

    def _check_cache(self) -> None:
        """3. The local Hugging Face cache, for what is missing; the rest is to download."""

        def check(f: HubFile) -> tuple[Path, str] | None:
            path = cached_file(self.repo_id, f.remote, self.revision, self.cache_dir)
            if path is None:
                return None
            try:
                return path, verify_file(path, f.kind, self.vocab, self.expected.get(f.remote))
            except LockMismatch as m:
                self.log(
                    f"cache: {path}: sha256 {m.digest} differs from the lock's {self.expected[f.remote]}; not used"
                )
            except (ValueError, OSError) as e:
                self.log(f"cache: {path} is not valid, not used: {e}")
            return None

        missing = [f for f in self.files if f not in self.present]
        hits = _parallel(check, missing, self.threads)
        self.from_cache = {f: hit for f, hit in zip(missing, hits, strict=True) if hit is not None}
        self.todo = [f for f in missing if f not in self.from_cache]

    def _drop_optional(self, absent: list[HubFile], why: str) -> None:
        if absent:
            self.log(
                f"no byte sidecar ({', '.join(f.remote for f in absent)} {why}): val_bpb counts the tokenizer's pieces"
            )
        self.files = [f for f in self.files if f not in absent]
        self.todo = [f for f in self.todo if f not in absent]

    def _refuse_offline(self) -> None:
        if not self.todo:
            return
        from huggingface_hub import constants

        raise HubError(
            f"offline (HF_HUB_OFFLINE): {len(self.todo)} files of {self.hub.where} are neither valid in {self.out_dir}"
            f" nor in the Hugging Face cache {self.cache_dir or constants.HF_HUB_CACHE}: {_names(self.todo, 5)}"
        )

    def _fetch_metadata(self) -> None:
        """4. Metadata of what must be downloaded (fails before anything is written: unreachable hub, missing
        files)."""
        if not self.todo:
            return
        from huggingface_hub.errors import RemoteEntryNotFoundError

        def head(f: HubFile):
            try:
                return self.hub.head(f.remote)
            except RemoteEntryNotFoundError:
                return None

        results = [head(self.todo[0])]  # one request first: an unreachable hub fails once, not once per file
        results += _parallel(head, self.todo[1:], self.max_workers)
        metas = dict(zip(self.todo, results, strict=True))
        self._drop_optional([f for f in self.todo if f in self.optional and metas[f] is None], "not in the repo")
        self._refuse_absent([f for f in self.todo if metas[f] is None])
        self.metas = {f: metas[f] for f in self.todo}

    def _refuse_absent(self, absent: list[HubFile]) -> None:
        """HubError naming the files the repo does not have (none of them optional), and what that means."""
        absent_sidecar = [f for f in absent if f.kind == "sidecar"]
        if absent_sidecar and len(absent_sidecar) == len(absent):
            raise HubError(
                f"{self.hub.where}: not found: {', '.join(f.remote for f in absent_sidecar)}: {self.repo_manifest}"
                f" lists a byte sidecar (val_bytes_glob) for fineweb10B_{self.variant}; without it val_bpb cannot be"
                " scored on the original bytes"
            )
        absent_train = [f for f in absent if "_train_" in f.name and f.kind == "shard"]
        if len(absent) > len(absent_train):  # the tokenizer or val: the variant is not there at all
            raise HubError(
                f"{self.hub.where}: not found: {_names(absent, 4)} (is variant {self.variant} in this repo, under"
                f" {self.remote_root!r}?)"
            )
        if absent_train:
            index = {f: int(f.name[: -len(".bin")].rsplit("_", 1)[1]) for f in absent_train}
            first = min(absent_train, key=index.__getitem__)
            raise HubError(
                f"{self.hub.where}: {first.remote} not found: the repo has {index[first]} train shards of"
                f" {self.variant}, asked for {self.train_shards} (train_shards)"
            )

    def _resolve_commit(self) -> None:
        """The commit the revision names: itself when it is one, else what the hub's answers (or the cache's snapshot
        folder, or one more request) say."""
        revision = self.revision
        commits = sorted({m.commit_hash for m in self.metas.values() if m.commit_hash})
        if len(commits) > 1:
            self.log(f"note: {revision!r} resolved to several commits during this run: {', '.join(commits)}")
        commit = revision if is_commit(revision) else (commits[0] if len(commits) == 1 else None)
        if commit is None and not commits and not is_commit(revision):
            # Nothing was fetched, so no answer named the commit: the cache's snapshot folder does, or one request.
            snapshots = {
                m.group(1)
                for p, _ in self.from_cache.values()
                if (m := re.search(r"/snapshots/([0-9a-f]{40})/", str(p)))
            }
            if len(snapshots) == 1:
                commit = snapshots.pop()
            elif not self.offline:
                commit = self.hub.head(self.files[0].remote).commit_hash or None
        if commit and not is_commit(revision):
            self.log(f"note: {revision!r} is commit {commit} now; pin it as the revision for a reproducible download")
        self.commit = commit

    def _prepare_folder(self) -> None:
        """5. Write: from here on the folder changes, so its manifest goes first; then the bad files and byte
        sidecars of other data."""
        out_dir = self.out_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / MANIFEST_NAME).unlink(missing_ok=True)
        for f, problem in self.bad.items():
            self.log(f"removed {out_dir / f.name}: {problem}")
            (out_dir / f.name).unlink(missing_ok=True)
        wanted = {f.name for f in self.files}
        for stale in out_dir.glob(f"fineweb_{SIDECAR_SPLIT}_*.bin"):  # a sidecar of other data would be scored with
            if stale.name not in wanted:
                self.log(f"removed {stale}: a byte sidecar this data set does not have")
                stale.unlink()
        if self.present:
            self.log(f"kept {len(self.present)} files already in {out_dir} and verified")
        for f, digest in self.present.items():
            if self.expected.get(f.remote) != digest:
                self.recorded[f.remote] = digest

    def _fetch(self, f: HubFile) -> str:
        """Download one file into the staging folder, verify it, and rename it into place."""
        meta = self.metas[f]
        part = self.staging / f"{f.name}.part"
        t = time.perf_counter()
        resumed = self.hub.download(f.remote, meta, part, self.progress, self.stop)
        want = None if self.update_lock else self.expected.get(f.remote)
        try:
            digest = verify_file(part, f.kind, self.vocab, want, etag=meta.etag)
        except LockMismatch as m:
            _discard(part)
            raise HubError(
                f"{f.remote}: sha256 {m.digest} does not match the lock {self.lock_path} ({self.key}: {want}); the"
                " file is not used. If the repo's content changed on purpose, run again with update_lock"
                " (--update-lock)"
            ) from None
        except (ValueError, OSError) as e:
            _discard(part)
            raise HubError(f"{f.remote} from {self.hub.where} is not valid and is not used: {e}") from None
        old = self.expected.get(f.remote)
        if old is not None and old != digest:
            self.log(f"lock: {f.remote}: sha256 {digest} replaces {old} (update_lock)")
        if old != digest:
            self.recorded[f.remote] = digest
        os.chmod(part, FILE_MODE)
        os.replace(part, self.out_dir / f.name)
        _discard(part)
        self.progress.file_done(f.name, (self.out_dir / f.name).stat().st_size, time.perf_counter() - t, resumed)
        return f.name

    def _put_in_place(self) -> list[str]:
        """Cache files linked (or copied) into place, the rest downloaded (``max_workers`` at a time); what was
        verified is recorded in the lock, even when another file failed. Returns the names downloaded."""
        total = sum(m.size or 0 for m in self.metas.values())
        self.progress = Progress(len(self.todo), total, self.log, self.progress_interval)
        downloaded: list[str] = []
        try:
            if self.from_cache or self.todo:
                self.staging.mkdir(exist_ok=True)
            for f, (src, digest) in self.from_cache.items():
                how = _place(src, self.out_dir / f.name, digest, self.staging)
                self.log(f"from cache: {f.name} ({how} {src})")
                if self.expected.get(f.remote) != digest:
                    self.recorded[f.remote] = digest
            if self.todo:
                self.log(
                    f"downloading {len(self.todo)} files ({total / 1e9:.2f} GB) with {self.max_workers} parallel"
                    " downloads"
                )
                downloaded = _run_all(self._fetch, self.todo, self.max_workers, self.stop)
        finally:
            if self.lock is not None and self.recorded:
                about = {"repo_id": self.repo_id, "revision": self.revision, "variant": self.variant}
                record_lock(self.lock_path, self.lock, self.key, about, self.recorded, self.commit)
                self.log(
                    f"lock: recorded the sha256 of {len(self.recorded)} files under {self.key} in {self.lock_path}"
                )
        shutil.rmtree(self.staging, ignore_errors=True)  # all in place: leftovers of other runs are of no use
        if self.lock is not None:
            self.log(f"lock: all {len(self.files)} files match {self.lock_path} ({self.key})")
        return downloaded

    def _write_manifest(self) -> dict:
        source = {
            "kind": "hub",
            "repo_id": self.repo_id,
            "revision": self.revision,
            "commit": self.commit,
            "variant": self.variant,
            "remote_root": self.remote_root,
            "endpoint": self.endpoint,
            "train_shards": self.train_shards,
            "lock": str(self.lock_path) if self.lock_path is not None else None,
        }
        tokenizer = self.out_dir / next(f for f in self.files if f.kind == "model").name
        try:
            return write_manifest(self.out_dir, self.name or f"fineweb10B_{self.variant}", source, tokenizer, "fineweb")
        except ValueError as e:
            raise HubError(f"{self.hub.where}: the files do not make a data set: {e}") from None


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
    parallel downloads, each resumable: see ``HubClient.download``). Every file is checked before it is put in place:
    shards' headers, sizes and largest token id, the tokenizer's vocabulary, the sha256 against the hub's ETag (LFS
    files) and against the lock file ``lock_path``, keyed by ``repo_id@revision/variant``. A file without a locked
    hash gets one recorded (the lock is written on first download); a file whose hash differs is an error naming it
    and is never used, unless ``update_lock`` (then the new hash replaces the old one). Offline (``offline``, default
    HF_HUB_OFFLINE) only ``out_dir`` and the cache are used. Errors (unreachable hub after ``retries`` retries with
    ``timeout`` seconds each, missing file, bad file) are HubError naming the file or the repo; no file is left
    half-written in place and the manifest is only written when everything is there.
    """
    variant_vocab_size(variant)
    check_revision(revision)
    if train_shards < 1:
        raise ValueError(f"train_shards must be at least 1, got {train_shards}")
    if timeout <= 0 or retries < 0 or max_workers < 1:
        raise ValueError(f"need timeout > 0, retries >= 0, max_workers >= 1; got {timeout}, {retries}, {max_workers}")
    return _Download(
        out_dir=Path(out_dir),
        hub=HubClient(repo_id, revision, endpoint, timeout, retries, log),
        repo_id=repo_id,
        revision=revision,
        variant=variant,
        train_shards=train_shards,
        remote_root=remote_root,
        endpoint=endpoint,
        max_workers=max_workers,
        name=name,
        cache_dir=cache_dir,
        lock_path=lock_path,
        update_lock=update_lock,
        offline=hub_offline() if offline is None else offline,
        threads=threads or cpu_count(),
        log=log,
        progress_interval=progress_interval,
    ).run()
