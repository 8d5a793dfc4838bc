"""Training throughput of the training script on one GPU: steady-state ms/step, tokens/s and model FLOP utilisation.

Runs `src/pgolf/train_gpt.py --stage train` in a subprocess with the full 11-layer configuration (786,432 tokens per
step; on one GPU that is 8 micro-steps of gradient accumulation), then reads the per-step lines of its log. FLOPs per
token come from the script's own count (from the shapes); the bf16 matmul rate is measured here on the same GPU.

    python benchmarks/throughput.py --train-files 'DIR/*_train_*.bin' --val-files 'DIR/*_val_*.bin' \
        --tokenizer DIR/fineweb_1024_bpe.model --steps 40 --out result.json

Extra KEY=VALUE arguments are passed to the script as environment variables (e.g. NUM_LAYERS=9).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report import SCRIPT, emit  # benchmarks/report.py, beside this script

STEP = re.compile(r"^step:(\d+)/\d+ train_loss:([\d.]+) train_time:(\d+)ms")


def matmul_tflops(n: int = 8192, iters: int = 50) -> float:
    import torch

    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(5):
        a @ b
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        a @ b
    torch.cuda.synchronize()
    return 2 * n**3 * iters / (time.perf_counter() - t0) / 1e12


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train-files", required=True)
    p.add_argument("--val-files", required=True)
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--skip", type=int, default=5, help="timed steps left out of the steady-state average")
    p.add_argument("--warmup-steps", type=int, default=10, help="compile warm-up steps (not timed by the script)")
    p.add_argument("--out", help="write the result as JSON here")
    p.add_argument("--keep", help="keep the checkpoint, log and summary in this folder")
    p.add_argument("env", nargs="*", help="KEY=VALUE overrides for the script")
    a = p.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("throughput benchmark: no CUDA device", file=sys.stderr)
        return 2
    env = {
        **os.environ,
        "TRAIN_FILES": a.train_files,
        "VAL_FILES": a.val_files,
        "TOKENIZER_PATH": a.tokenizer,
        "ITERATIONS": str(a.steps),
        "WARMUP_STEPS": str(a.warmup_steps),
        "MAX_WALLCLOCK_SECONDS": "0",
        "WARMDOWN_ITERS": "0",
        "TRAIN_LOG_EVERY": "1",
        "VAL_TOKENS_LIMIT": "65536",
        "PYTHONUNBUFFERED": "1",
    }
    env.update(kv.split("=", 1) for kv in a.env)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = a.keep or tmp
        Path(tmp).mkdir(parents=True, exist_ok=True)
        log, summary = Path(tmp) / "train.log", Path(tmp) / "train.json"
        cmd = [
            sys.executable,
            str(SCRIPT),
            "--stage",
            "train",
            "--checkpoint",
            str(Path(tmp) / "c.pt"),
            "--logfile",
            str(log),
            "--summary",
            str(summary),
        ]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n", file=sys.stderr)
            return 1
        lines = log.read_text().splitlines()
        s = json.loads(summary.read_text())
    times = [int(m.group(3)) for line in lines if (m := STEP.match(line))]
    if len(times) <= a.skip + 1:
        print(f"only {len(times)} step lines in the log", file=sys.stderr)
        return 1
    steady = (times[-1] - times[a.skip]) / (len(times) - 1 - a.skip)
    tokens = s["tokens_per_step"]
    peak = matmul_tflops()
    model_tflops = s["flops_per_token"] * tokens / (steady / 1000) / 1e12
    backend = next((ln.split("attention_backend:")[1].split()[0] for ln in lines if "attention_backend:" in ln), "?")
    result = {
        "device": s["device"],
        "attention_backend": backend,
        "torch": torch.__version__,
        "tokens_per_step": tokens,
        "grad_accum_steps": s["grad_accum_steps"],
        "model_params": s["model_params"],
        "steps_timed": len(times) - 1 - a.skip,
        "steady_ms_per_step": round(steady, 2),
        "tokens_per_s": round(tokens / (steady / 1000)),
        "flops_per_token": s["flops_per_token"],
        "model_tflops": round(model_tflops, 1),
        "matmul_peak_tflops": round(peak, 1),
        "mfu": round(model_tflops / peak, 4),
        "wall_s": round(wall, 1),
        "overrides": a.env,
    }
    emit(result, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
