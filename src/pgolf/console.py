"""What the terminal shows while the pipeline runs, and when it ends.

Every step's full output goes to its log file (the rules redirect it there); the terminal that runs Snakemake would
stay silent for minutes per training job. A step given ``--console-fd N`` (the rules pass ``--console-fd 3 3>&2``:
fd 3 is Snakemake's stderr) also writes a short status to that descriptor:

- each ``progress:`` line (``pgolf.logs.progress_line``: step, loss, elapsed against the budget, ETA), prefixed with
  the job (``[seed 42 train]``) and its wall time, at most one every ``min_gap_s``;
- a heartbeat when nothing was shown for ``interval_s`` (25 s): the last progress again, or what the job is doing
  before its first logged step (start-up: compile, warm-up) with its last output line;
- the job's end (finished, or failed).

``pgolf --console-fd N <command>`` does the same for any command: the steps without a training script's progress (the
fa3 build, the data download) show their last output line the same way (``tap_stdout``).

``closing_summary`` is what the run prints at its end (Snakemake's ``onsuccess``): the score, the record's path and the
next commands (check, compare, open the pull request).
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

# A heartbeat after 25 s without a line, checked every second: never more than 30 s of silence per job.
HEARTBEAT_S = 25.0
CHECK_S = 1.0
MIN_GAP_S = 5.0
LAST_LINE_CHARS = 100


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Console:
    """The status of one running job on a terminal's file descriptor (``fd``); every method is a no-op without one,
    and a write that fails (the terminal closed) never fails the job."""

    def __init__(
        self,
        fd: int | None,
        label: str,
        interval_s: float = HEARTBEAT_S,
        min_gap_s: float = MIN_GAP_S,
        clock=time.monotonic,
        idle: str = "running, no step logged yet (start-up: data, model, compile, warm-up)",
    ):
        self.fd, self.label, self.interval_s, self.min_gap_s, self.clock = fd, label, interval_s, min_gap_s, clock
        self.idle = idle
        self.t0 = clock()
        self.last_shown = self.t0
        self.progress: str | None = None
        self.shown_progress: str | None = None
        self.last_line = ""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def write(self, text: str) -> None:
        if self.fd is None:
            return
        with self._lock:
            self.last_shown = self.clock()
            try:
                os.write(self.fd, f"[{self.label}] {_clock(self.last_shown - self.t0)}: {text}\n".encode())
            except OSError:
                self.fd = None

    def line(self, text: str, progress: str | None) -> None:
        """One line of the job's output, and its progress line when it is a logged training step."""
        text = text.strip()
        if text:
            self.last_line = text
        if progress is not None:
            first = self.progress is None  # the first logged step is shown at once: the start-up is over
            self.progress = progress
            if first or self.clock() - self.last_shown >= self.min_gap_s:
                self.write(progress)
                self.shown_progress = progress

    def heartbeat(self) -> None:
        """Called every few seconds: a status line when nothing was shown for ``interval_s``."""
        if self.clock() - self.last_shown < self.interval_s:
            return
        if self.progress is not None:
            self.write(f"{self.progress} (running)")
        else:
            last = self.last_line[:LAST_LINE_CHARS] + ("..." if len(self.last_line) > LAST_LINE_CHARS else "")
            self.write(f"{self.idle}; last line: {last}")

    def start(self) -> Console:
        if self.fd is not None and self._thread is None:
            self.write("started")

            def beat() -> None:
                while not self._stop.wait(min(CHECK_S, self.interval_s)):
                    self.heartbeat()

            self._thread = threading.Thread(target=beat, daemon=True)
            self._thread.start()
        return self

    def stop(self, code: int | None = None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
            if self.progress is not None and self.progress != self.shown_progress:  # the last logged step
                self.write(self.progress)
            self.write("finished" if code == 0 else f"failed (exit code {code}); the step's log has the whole output")


class LineTap:
    """A text stream that passes everything to ``stream`` and each whole line to ``console`` (for the steps that print
    their own progress: the fa3 build's and the data download's heartbeats reach the terminal this way)."""

    def __init__(self, stream, console: Console):
        self._stream, self._console, self._partial = stream, console, ""

    def write(self, text: str) -> int:
        n = self._stream.write(text)
        *lines, self._partial = (self._partial + text).split("\n")
        for line in lines:
            self._console.line(line, None)
        return n

    def __getattr__(self, name):
        return getattr(self._stream, name)


def tap_stdout(fd: int | None, label: str) -> Console | None:
    """Show this process's status on ``fd``: its stdout's last line at least every ``HEARTBEAT_S`` seconds."""
    if fd is None:
        return None
    import sys

    console = Console(fd, label, idle="running").start()
    sys.stdout = LineTap(sys.stdout, console)
    return console


def closing_summary(record_dir: str | os.PathLike, previous: str | None = None) -> str | None:
    """The end of a run: the score, the record's path and the next commands; None when the record is not there."""
    record = Path(record_dir)
    try:
        sub = json.loads((record / "submission.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    seeds = sub.get("seeds") or []
    score = sub.get("val_bpb")
    std = sub.get("val_bpb_std")
    folder = f"records/{record.parent.name}/{record.name}"
    message = json.dumps(str(sub.get("name") or record.name))
    lines = [
        "",
        "pgolf: the run is complete.",
        f"  score     val_bpb {score}"
        + (f" (mean of {len(seeds)} seeds, std {std})" if len(seeds) > 1 and std is not None else "")
        + (f", {sub['bytes_total']:,} bytes" if isinstance(sub.get("bytes_total"), int) else ""),
        f"  record    {record}/",
        "  next:",
        f"    pgolf check {record}                  # the challenge's rules, against the folder's own logs",
        f"    pgolf compare {record} {previous or '<the record folder to beat>'}   # Welch's t-test",
        "    the pull request, in your clone of your fork of openai/parameter-golf:",
        f"      git checkout -b {record.name} && mkdir -p {folder} && cp -r {record.resolve()}/. {folder}/",
        f"      git add {folder} && git commit -m {message} && git push -u origin HEAD",
        "      then open the pull request on GitHub (gh pr create, or the link git push prints)",
        "",
    ]
    return "\n".join(lines)
