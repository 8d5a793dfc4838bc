"""Quality at a fixed token budget: train the recipe (and ablations of it) on one GPU, then score the exported model.

Each run trains `--tokens` tokens (one pass) at `--batch-tokens` tokens per step with the production schedule scaled to
the step count (warmdown fraction, EMA horizon and Muon momentum warm-up as a fraction of a ~7,000-step 8xH100 run;
QAT starts at the same LR-scale threshold), then quantizes and scores the artifact reloaded from disk with sliding
windows. The reference run (`default`) is also scored before quantization and on every validation set given.

    python benchmarks/quality.py --train-files 'D/blogs_train_*.bin' --val FINEWEB=D/fineweb_val_000000.bin \
        --val BLOG=D/blogs_val_000000.bin --tokenizer D/fineweb_1024_bpe.model --runs default no_smear ... \
        --parallel 3 --out OUT

Runs are named in ABLATIONS (each switches one technique against the default). Several runs share the GPU at once
(`--parallel`): compile and evaluation phases of one overlap the training of another; step times of parallel runs
are not throughput figures (use benchmarks/throughput.py for those).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from report import SCRIPT, checkpoint_model, load_script

ABLATIONS: dict[str, dict[str, str]] = {
    "default": {},
    "no_smear_gate": {"SMEAR_GATE": "0"},
    "no_bigram_hash": {"BIGRAM_VOCAB_SIZE": "0"},
    "no_xsa": {"XSA_LAST_N": "0"},
    "no_ema": {"EMA_ENABLED": "0"},
    "no_ln_scale": {"LN_SCALE": "0"},
    "no_unet_skips": {"UNET_SKIPS": "0"},
    "full_rope": {"ROPE_DIMS": "64"},
    "no_late_qat": {"LATE_QAT": "0"},
    "leaky_relu_0.5": {"RELU_SLOPE": "0.5"},
    "xsa_all_layers": {"XSA_LAST_N": "11"},
    "qk_gain_4": {"QK_GAIN_INIT": "4.0"},
    "sequential_residual": {"PARALLEL_RESIDUAL": "0"},  # the default until 2026-11-24 ("parallel_residual" then)
    "depth_recurrence_4_5": {"RECUR_LAYERS": "4,5"},
    "fp32_residual": {"RESIDUAL_BF16": "0"},
    "unfused_mlp": {"FUSED_MLP": "0"},  # same model: relu^2 as separate kernels, the pre-activation saved
    "unfused_qk": {"FUSED_QK": "0"},  # same model: q/k norm, RoPE and gain as Inductor kernels, v copied for FA4
    "default_seed_2": {"SEED": "2"},  # the noise floor: same recipe, another seed
    "no_ln_scale_seed_2": {"LN_SCALE": "0", "SEED": "2"},
    "no_ln_scale_no_unet_skips_xsa_all": {"LN_SCALE": "0", "UNET_SKIPS": "0", "XSA_LAST_N": "11"},
    "sdpa_attention": {"ATTN_BACKEND": "sdpa"},  # same model on PyTorch SDPA instead of FlashAttention
}
PRODUCTION_STEPS = 7000  # ~600 s at ~85 ms/step on 8xH100: the run whose schedule is scaled down


def scaled_schedule(steps: int, batch_tokens: int) -> dict[str, str]:
    ema_horizon = max(2.0, (1 / (1 - 0.997)) * steps / PRODUCTION_STEPS)
    return {
        "ITERATIONS": str(steps),
        "TRAIN_BATCH_TOKENS": str(batch_tokens),
        "GRAD_ACCUM_STEPS": "1",
        "MAX_WALLCLOCK_SECONDS": "0",
        "WARMUP_STEPS": "3",
        "WARMDOWN_ITERS": str(round(steps * 3000 / PRODUCTION_STEPS)),
        "MUON_MOMENTUM_WARMUP_STEPS": str(round(steps * 1500 / PRODUCTION_STEPS)),
        "EMA_DECAY": f"{1 - 1 / ema_horizon:.5f}",
        "TRAIN_LOG_EVERY": "100",
        "VAL_LOSS_EVERY": "0",
        "EVAL_STRIDE": "64",
        "PYTHONUNBUFFERED": "1",
    }


def sh(cmd: list[str], env: dict, log: Path) -> None:
    with open(log, "a") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        rc = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        raise RuntimeError(f"{cmd[1:3]} failed (exit {rc}); see {log}")


def run_one(name: str, a, vals: dict[str, str], full: bool) -> dict:
    d = Path(a.out) / name
    d.mkdir(parents=True, exist_ok=True)
    log = d / "run.log"
    steps = a.tokens // a.batch_tokens
    first_label, first_val = next(iter(vals.items()))
    env = {
        **os.environ,
        **scaled_schedule(steps, a.batch_tokens),
        **({"LIVE_EVAL_STRIDE": str(a.stride)} if full else {}),  # the live weights scored with sliding windows too
        **ABLATIONS[name],
        "TRAIN_FILES": a.train_files,
        "VAL_FILES": first_val,
        "TOKENIZER_PATH": a.tokenizer,
        "RUN_ID": name,
    }
    py, ckpt, art = sys.executable, str(d / "checkpoint.pt"), str(d / "model.ptz")
    t0 = time.perf_counter()
    sh([py, str(SCRIPT), "--stage", "train", "--checkpoint", ckpt, "--logfile", str(d / "train.log"),
        "--summary", str(d / "train.json")], env, log)  # fmt: skip
    tr = json.loads((d / "train.json").read_text())
    row = {
        "run": name,
        "overrides": ABLATIONS[name],
        "steps": tr["steps"],
        "step_avg_ms": round(tr["step_avg_ms"], 1),
        f"live_val_bpb_{'sliding' if full else 'nonsliding'}": tr["live_val_bpb"],
        "prequant_val_bpb_nonsliding": tr["pre_quant_val_bpb"],
    }
    if full or a.artifact_all:
        sh([py, str(SCRIPT), "--stage", "quantize", "--checkpoint", ckpt, "--artifact", art,
            "--logfile", str(d / "quantize.log"), "--summary", str(d / "quantize.json")], env, log)  # fmt: skip
        row["bytes_total"] = json.loads((d / "quantize.json").read_text()).get("bytes_total")
    if "bytes_total" in row:  # sliding windows, in one process: the artifact reloaded from disk, and (full runs)
        out = d / "sliding.json"  # the float EMA weights before quantization; the first val set, or every one
        scored = list(vals.items()) if full else [(first_label, first_val)]
        sh([py, __file__, "--eval-artifact", art, *(["--eval-checkpoint", ckpt] if full else []),
            "--tokenizer", a.tokenizer, *(f"--val={k}={v}" for k, v in scored), "--stride", str(a.stride),
            "--out", str(out)], env, log)  # fmt: skip
        for key, res in json.loads(out.read_text()).items():
            row[f"{key}_sliding"] = res["val_bpb"]
    if not a.keep_checkpoints:
        Path(ckpt).unlink()
    row["wall_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(row), flush=True)
    if a.progress:  # one line per finished run, so a run cut off by a time limit loses only the unfinished ones
        with open(a.progress, "a") as f:
            f.write(json.dumps(row) + "\n")
    return row


def eval_sliding(artifact: str, ckpt_path: str | None, vals: dict[str, str], stride: int, out: str) -> None:
    """Sliding-window scores on each val set, {artifact_LABEL, prequant_LABEL: result}: the artifact reloaded from
    disk (as `--stage eval` loads it), and the checkpoint's float (EMA) weights before quantization."""
    import sentencepiece as spm

    mod = load_script([f"EVAL_STRIDE={stride}"])
    args, rt, res = mod.Hyperparameters.from_env(), mod.Runtime(), {}
    models = {"artifact": mod.model_from_artifact(artifact, args, rt)[0]}
    if ckpt_path:
        models["prequant"] = checkpoint_model(mod, ckpt_path)[0]
    luts = mod.byte_luts(spm.SentencePieceProcessor(model_file=args.tokenizer_path), args.vocab_size)
    for name, model in models.items():
        net = mod.maybe_compile(model, args, rt)
        for label, pattern in vals.items():
            scored = args.replace(val_files=pattern)
            res[f"{name}_{label}"] = mod.evaluate(net, mod.load_val_tokens(scored), luts, scored, rt, stride)
    Path(out).write_text(json.dumps(res) + "\n")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train-files")
    p.add_argument("--val", action="append", required=True, help="LABEL=PATTERN; the first one scores every run")
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--tokens", type=int, default=80_000_000)
    p.add_argument("--batch-tokens", type=int, default=98_304)
    p.add_argument("--runs", nargs="+", default=["default"], choices=sorted(ABLATIONS))
    p.add_argument("--full", nargs="*", default=["default"], help="runs scored on every val set, pre- and post-quant")
    p.add_argument("--parallel", type=int, default=1)
    p.add_argument("--artifact-all", action="store_true", help="quantize and score the artifact of every run")
    p.add_argument("--progress", help="append each finished run's row to this file")
    p.add_argument("--keep-checkpoints", action="store_true")
    p.add_argument("--out", required=True)
    p.add_argument("--eval-artifact", help=argparse.SUPPRESS)
    p.add_argument("--eval-checkpoint", help=argparse.SUPPRESS)
    p.add_argument("--stride", type=int, default=64)
    a = p.parse_args()
    vals = dict(v.split("=", 1) for v in a.val)
    if a.eval_artifact:
        eval_sliding(a.eval_artifact, a.eval_checkpoint, vals, a.stride, a.out)
        return 0
    os.environ["TOKENIZER_PATH"] = os.environ.get("TOKENIZER_PATH", a.tokenizer)
    with ThreadPoolExecutor(a.parallel) as pool:
        futures = {n: pool.submit(run_one, n, a, vals, n in a.full) for n in a.runs}
    rows, failed = [], []
    for n, f in futures.items():
        try:
            rows.append(f.result())
        except RuntimeError as e:
            failed.append(f"{n}: {e}")
    Path(a.out, "quality.json").write_text(json.dumps(rows, indent=2) + "\n")
    print_table(rows)
    for line in failed:
        print("FAILED", line, file=sys.stderr)
    return 1 if failed else 0


def live(row: dict) -> str:
    """The live weights' score: plain chunks for ablations, sliding windows (marked) for fully scored runs."""
    if "live_val_bpb_sliding" in row:
        return f"{row['live_val_bpb_sliding']:.4f} (sliding)"
    return f"{row['live_val_bpb_nonsliding']:.4f}"


def print_table(rows: list[dict]) -> None:
    """Ablations are compared on the pre-quantization (EMA) model, non-sliding, on the first validation set."""
    base = next((r for r in rows if r["run"] == "default"), None)
    key = "prequant_val_bpb_nonsliding"
    print("| run | steps | live val_bpb | pre-quant val_bpb | delta vs default | artifact (sliding) | bytes |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        delta = f"{r[key] - base[key]:+.4f}" if base else "-"
        art = next((f"{v:.4f}" for k, v in r.items() if k.startswith("artifact_")), "-")
        print(
            f"| {r['run']} | {r['steps']} | {live(r)} | {r[key]:.4f} | {delta} | {art} | {r.get('bytes_total', '-')} |"
        )
    if base:
        print("default, every score:", json.dumps({k: v for k, v in base.items() if k != "overrides"}))


if __name__ == "__main__":
    sys.exit(main())
