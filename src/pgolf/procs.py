"""Processes that die with the pipeline, and one job per product at a time.

A pod user who kills Snakemake (``kill -9``, a closed terminal, a pre-empted session) must not leave a torchrun job
running: an orphan keeps the GPUs busy and, when it finishes, renames its products over those of the next run of the
same step. So:

- every child a step starts runs in a process group of its own and gets a parent-death signal
  (``die_with_parent``), and the step watches the Snakemake process that started it (``Watchdog``): when Snakemake
  is gone, the step kills the child's whole group and fails without publishing anything;
- a step takes an exclusive lock per product (``exclusive_lock``): a second run of the same seed's step, e.g. after
  ``snakemake --unlock``, refuses to start while the first one lives, naming its pid.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask Linux to send ``sig`` to this process when its parent exits (nothing elsewhere). For a ``preexec_fn`` or a
    worker pool's initializer."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before the request took effect
        os.kill(os.getpid(), sig)


def _child_setup() -> None:
    die_with_parent(signal.SIGTERM)


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state is [0], ppid [1], start time [19])."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def _is_snakemake(pid: int) -> bool:
    """Whether the process runs Snakemake (``snakemake ...``, ``python -m snakemake ...``, ``python .../snakemake``)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return False
    for i, arg in enumerate(argv[:4]):
        if os.path.basename(arg).startswith("snakemake") and not arg.startswith("-"):
            return True
        if arg == "-m" and i + 1 < len(argv) and argv[i + 1] == "snakemake":
            return True
    return False


def pipeline_pid() -> int | None:
    """The pid of the Snakemake process this step runs under (the nearest ancestor whose command line names
    snakemake), else the parent's; None where /proc cannot tell."""
    pid, parent = os.getppid(), None
    for _ in range(32):
        fields = _stat(pid)
        if fields is None:
            break
        parent = parent or pid
        if _is_snakemake(pid):
            return pid
        pid = int(fields[1])
        if pid <= 1:
            break
    return parent


class Watchdog:
    """Watches a process (the pipeline); ``gone()`` tells whether it has exited (or was replaced by another process
    with the same pid)."""

    def __init__(self, pid: int | None):
        self.pid = pid
        fields = _stat(pid) if pid else None
        self.start = fields[19] if fields else None

    def gone(self) -> bool:
        if not self.pid or self.start is None:
            return False
        fields = _stat(self.pid)
        return fields is None or fields[19] != self.start or fields[0] == "Z"


def kill_group(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM to the child's process group (torchrun and its ranks), SIGKILL after ``grace_s``."""
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def popen_guarded(cmd: list[str], **kwargs) -> subprocess.Popen:
    """Popen in a new process group, the child dying with this process."""
    return subprocess.Popen(cmd, start_new_session=True, preexec_fn=_child_setup, **kwargs)


class PipelineGone(RuntimeError):
    pass


def guard(proc: subprocess.Popen, poll_s: float = 1.0) -> threading.Event:
    """Start a thread that kills ``proc``'s group when the pipeline process exits, and on SIGTERM/SIGINT/SIGHUP to
    this process; the returned event is set when it did."""
    fired = threading.Event()
    dog = Watchdog(pipeline_pid())

    def watch() -> None:
        while proc.poll() is None:
            if dog.gone():
                fired.set()
                kill_group(proc)
                return
            time.sleep(poll_s)

    def on_signal(signum, _frame) -> None:
        fired.set()
        kill_group(proc)

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, on_signal)
    threading.Thread(target=watch, daemon=True, name="pgolf-watchdog").start()
    return fired


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created beside the product) for the block; if another live process holds
    it, fail at once naming that process. The lock dies with its holder, so a killed run never leaves it behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            raise RuntimeError(
                f"{what} is already running ({holder}; lock {path}): a second run of the same step would overwrite "
                "its products. Wait for it to finish or kill it, then run again."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}".encode(), 0)
        yield
    finally:
        os.close(fd)
