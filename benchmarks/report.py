"""Shared by the benchmark scripts: print a result as a Markdown table and optionally save it as JSON."""

from __future__ import annotations

import json
from pathlib import Path


def emit(result: dict, out: str | None) -> None:
    print("| metric | value |\n|---|---|")
    for k, v in result.items():
        print(f"| {k} | {v} |")
    if out:
        Path(out).write_text(json.dumps(result, indent=2) + "\n")
