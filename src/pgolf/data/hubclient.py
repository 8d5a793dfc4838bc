"""Requests to one dataset repo of the Hugging Face hub: retries of transient failures, resumable downloads of large
files, progress lines, and the local Hugging Face cache."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from pgolf.fsio import read_json, write_json

PROGRESS_INTERVAL_S = 10.0
_RETRY_STATUS = (408, 429, 500, 502, 503, 504)
T = TypeVar("T")


class HubError(RuntimeError):
    """The hub step failed: unreachable hub, missing file, or a bad file; the message names the file or the repo."""


class Stopped(Exception):
    """A download stopped because another one failed."""


class Progress:
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


class HubClient:
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

    def download(self, remote: str, meta, part: Path, progress: Progress, stop: threading.Event) -> int:
        """Fetch ``remote`` into ``part``, resuming a previous partial download of the same content (same ETag and size)
        with a range request; dropped connections and timeouts resume where they stopped. Returns the bytes that
        were already there."""
        import httpx2
        from huggingface_hub.errors import HfHubHTTPError
        from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

        info_path = part.with_name(part.name + ".json")
        ident = {"repo_id": self.repo_id, "remote": remote, "etag": meta.etag, "size": meta.size}
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
                                raise Stopped
                            out.write(chunk)
                            progress.add(len(chunk))
                if meta.size is None or part.stat().st_size >= meta.size:
                    break
                raise httpx2.RemoteProtocolError(f"response ended at {part.stat().st_size:,} of {meta.size:,} bytes")
            except (httpx2.TransportError, HfHubHTTPError) as e:
                status = getattr(getattr(e, "response", None), "status_code", None)
                if isinstance(e, HfHubHTTPError) and status not in _RETRY_STATUS:
                    raise HubError(f"{remote}: download from {self.where} failed: {e}") from None
                failures += 1
                have = part.stat().st_size if part.exists() else 0
                if failures > self.retries:
                    raise HubError(
                        f"{remote}: download from {self.where} failed after {failures} attempts"
                        f" ({type(e).__name__}: {e}); the {have:,} bytes received are kept in {part} and a new run"
                        " resumes from there"
                    ) from None
                wait = self._wait(failures - 1)
                self.log(
                    f"{remote}: {type(e).__name__}: {e}; resuming at {have:,} bytes in {wait:.1f} s"
                    f" (retry {failures}/{self.retries})"
                )
                time.sleep(wait)
        size = part.stat().st_size
        if meta.size is not None and size != meta.size:
            raise HubError(f"{remote}: received {size:,} bytes from {self.where}, expected {meta.size:,}")
        return resumed


def cached_file(repo_id: str, remote: str, revision: str, cache_dir: str | os.PathLike | None) -> Path | None:
    """The file in the local Hugging Face cache (as ``hf_hub_download`` left it), or None."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, remote, cache_dir=cache_dir, revision=revision, repo_type="dataset")
    return Path(found) if isinstance(found, str) else None
