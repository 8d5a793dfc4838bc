"""Shared by the benchmark scripts: load the training script with overrides, print and save a result."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "src" / "pgolf" / "train_gpt.py"


def emit(result: dict, out: str | None) -> None:
    print("| metric | value |\n|---|---|")
    for k, v in result.items():
        print(f"| {k} | {v} |")
    if out:
        Path(out).write_text(json.dumps(result, indent=2) + "\n")


def kernel_bench_parser(doc: str, **sizes: int) -> argparse.ArgumentParser:
    """The options the kernel benchmarks (attention, mlp, qk) share: their size options (name=default), --iters,
    --micro-steps (per training step, for the per-step figures), --out and KEY=VALUE hyperparameter overrides."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    for name, default in sizes.items():
        p.add_argument(f"--{name}", type=int, default=default)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--micro-steps", type=int, default=8)
    p.add_argument("--out")
    p.add_argument("env", nargs="*", help="KEY=VALUE hyperparameter overrides")
    return p


def kernel_bench_start(p: argparse.ArgumentParser, name: str, triton: bool = False):
    """Parse a kernel benchmark's options and load the script with its overrides; without a CUDA device (or without
    Triton, when the kernels under test need it) say so and exit with status 2."""
    a = p.parse_args()
    mod = load_script(a.env)
    import torch

    if not torch.cuda.is_available() or (triton and mod.triton is None):
        print(f"{name}: needs a CUDA device{' with Triton' if triton else ''}", file=sys.stderr)
        raise SystemExit(2)
    return a, mod


def cuda_timed(fn, iters: int) -> float:
    """Milliseconds per call of fn on the current CUDA stream (3 untimed calls first), timed with CUDA events."""
    import torch

    for _ in range(3):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters


def checkpoint_model(mod, path: str):
    """(model on the device, its checkpoint dict, runtime, byte LUTs) for a `--stage train` checkpoint: the
    checkpoint's architecture keys are applied to the script's Hyperparameters first."""
    import sentencepiece as spm
    import torch

    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    args, rt = mod.Hyperparameters.from_env().with_model(ckpt["model"], path), mod.Runtime()
    model = mod.GPT(args, mod.attention_backend(rt, args)).to(rt.device)
    model.load_state_dict(ckpt["state_dict"])
    luts = mod.byte_luts(spm.SentencePieceProcessor(model_file=args.tokenizer_path), args.vocab_size)
    return model, ckpt, rt, luts


def load_script(overrides: list[str], script: str | os.PathLike | None = None):
    """Import the training script (or another copy of it) as a module after applying KEY=VALUE hyperparameter
    overrides (its Hyperparameters read the environment at import)."""
    os.environ.update(kv.split("=", 1) for kv in overrides)
    spec = importlib.util.spec_from_file_location("train_gpt", script or SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # torch.compile resolves the script's globals through its module name
    spec.loader.exec_module(mod)
    return mod
