"""Shared by the benchmark scripts: load the training script with overrides, print and save a result."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "src" / "pgolf" / "train_gpt.py"


def emit(result: dict, out: str | None) -> None:
    print("| metric | value |\n|---|---|")
    for k, v in result.items():
        print(f"| {k} | {v} |")
    if out:
        Path(out).write_text(json.dumps(result, indent=2) + "\n")


def load_script(overrides: list[str], script: str | os.PathLike | None = None):
    """Import the training script (or another copy of it) as a module after applying KEY=VALUE hyperparameter
    overrides (its Hyperparameters read the environment at import)."""
    os.environ.update(kv.split("=", 1) for kv in overrides)
    spec = importlib.util.spec_from_file_location("train_gpt", script or SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
