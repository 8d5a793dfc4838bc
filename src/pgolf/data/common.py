"""What the data modules share: the CPU count, name checks, the files' mode and the log."""

from __future__ import annotations

import os
import re

# Data files are meant to be read by other users/containers: atomic temp files are created 0600, so widen them.
FILE_MODE = 0o644

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def cpu_count() -> int:
    """CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def check_name(value: str, what: str) -> str:
    """``value`` when it is a valid data set name / shard prefix; ValueError naming ``what`` otherwise."""
    if not _NAME_RE.match(value):
        raise ValueError(f"{what} {value!r} must match {_NAME_RE.pattern}")
    return value


def log(message: str) -> None:
    """A line of the data step's log (stdout, flushed: the rule sends it to the log file)."""
    print(message, flush=True)
