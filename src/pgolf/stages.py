"""The per-seed steps: train, quantize, evaluate. Each runs one stage of the training script (under torchrun when it
needs ranks), with the hyperparameters as environment variables, and writes its products atomically."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import BinaryIO

from pgolf import EVAL_BUDGET_S, fa3, fsio
from pgolf.data import load_manifest
from pgolf.logs import progress_line

# config key (pipeline) -> environment variable (training script), for the quantize and eval sections
QUANTIZE_ENV = {
    "bits_matrix": "QUANT_BITS_MATRIX",
    "bits_embed": "QUANT_BITS_EMBED",
    "keep_float_numel": "QUANT_KEEP_FLOAT_NUMEL",
    "bits_mlp": "QUANT_BITS_MLP",
    "clip_search": "QUANT_CLIP_SEARCH",
    "gptq": "GPTQ",
    "gptq_block": "GPTQ_BLOCK",
    "gptq_damp": "GPTQ_DAMP",
    "compressor": "COMPRESSOR",
    "layout": "QUANT_LAYOUT",
    "level": "COMPRESS_LEVEL",
    "chunk": "COMPRESS_CHUNK",
    "fit_mlp_bits": "QUANT_FIT_MLP_BITS",
    "prune_max_frac": "PRUNE_MAX_FRAC",
    "enforce_cap": "ENFORCE_CAP",
}
EVAL_ENV = {
    "stride": "EVAL_STRIDE",
    "seq_len": "EVAL_SEQ_LEN",
    "batch_seqs": "EVAL_BATCH_SEQS",
    "val_tokens_limit": "VAL_TOKENS_LIMIT",
}


# Snakemake sets each of these to the job's thread count; the ranks of a job must share them.
THREAD_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "GOTO_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


def env_value(value) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def train_env(train: dict) -> dict[str, str]:
    """The `train` config section as the script's environment: every key but `script`/`env`, upper-cased, plus the
    free-form `env` mapping (for scripts with other knobs, e.g. an upstream record's)."""
    env = {k.upper(): env_value(v) for k, v in train.items() if k not in ("script", "env")}
    env.update({str(k): env_value(v) for k, v in (train.get("env") or {}).items()})
    return env


def section_env(section: dict, mapping: dict[str, str], what: str) -> dict[str, str]:
    env = {}
    for key, value in section.items():
        if key not in mapping:
            raise ValueError(f"config {what}.{key}: unknown key (expected one of {sorted(mapping)})")
        env[mapping[key]] = env_value(value)
    return env


def data_env(manifest_path: str | os.PathLike) -> dict[str, str]:
    m = load_manifest(manifest_path)
    return {
        "TRAIN_FILES": m["train_glob"],
        "VAL_FILES": m["val_glob"],
        "TOKENIZER_PATH": m["tokenizer_path"],
        "VOCAB_SIZE": str(m["vocab_size"]),
    }


def stream(
    cmd: list[str],
    env: dict[str, str],
    cwd: str | os.PathLike | None = None,
    sink: BinaryIO | None = None,
    budget_s: float | None = None,
) -> int:
    """Run ``cmd``, echoing its output (stdout and stderr) on stdout with a ``progress:`` line
    (``pgolf.logs.progress_line``) after each logged training step, and writing it to ``sink`` (bytes as written) when
    given; return the exit code."""
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    out = sys.stdout.buffer
    for raw in iter(proc.stdout.readline, b""):
        if sink is not None:
            sink.write(raw)
        out.write(raw if raw.endswith(b"\n") else raw + b"\n")
        progress = progress_line(raw.decode("utf-8", errors="replace"), budget_s)
        if progress is not None:
            out.write(progress.encode() + b"\n")
        out.flush()
    return proc.wait()


def launch(script: str, stage_args: list[str], env: dict[str, str], nproc: int) -> None:
    """Run the script (under torchrun for nproc >= 1 ranks), streaming its output; raise if it fails."""
    script = str(Path(script).resolve())
    if not Path(script).is_file():
        raise FileNotFoundError(f"{script}: training script not found")
    if nproc > 0:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
        cmd += [script, *stage_args]
    else:
        cmd = [sys.executable, script, *stage_args]
    full_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
    # The job's threads (Snakemake sets OMP_NUM_THREADS to them) are shared by the ranks: oversubscribed CPU ranks
    # run several times slower.
    job_threads = int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)
    per_rank = str(max(1, job_threads // max(nproc, 1)))
    for var in THREAD_VARS:
        full_env[var] = per_rank
    print("+ " + " ".join(f"{k}={v}" for k, v in sorted(env.items())) + " " + " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    budget = float(env["MAX_WALLCLOCK_SECONDS"]) if "MAX_WALLCLOCK_SECONDS" in env else None
    returncode = stream(cmd, full_env, budget_s=budget)
    if returncode != 0:
        raise RuntimeError(f"{Path(script).name} {' '.join(stage_args[:2])} failed with exit code {returncode}")
    print(f"stage finished in {time.perf_counter() - t0:.1f} s", flush=True)


def run_stage(script: str, stage: str, outputs: dict[str, str], env: dict[str, str], nproc: int, extra=()) -> None:
    """Run one stage with every output (log, summary, checkpoint or artifact) first written under a temporary
    name; the real names appear only when the stage succeeded, so a failure never leaves a half product."""
    tmp = {flag: f"{path}.partial" for flag, path in outputs.items()}
    for path in tmp.values():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).unlink(missing_ok=True)
    args = ["--stage", stage, *extra]
    for flag, path in tmp.items():
        args += [f"--{flag}", path]
    launch(script, args, env, nproc)
    for flag, path in tmp.items():
        if not Path(path).exists():
            raise RuntimeError(f"{Path(script).name} --stage {stage} did not write {outputs[flag]}")
    for flag, path in tmp.items():
        os.replace(path, outputs[flag])


def cmd_train(args: argparse.Namespace) -> int:
    if args.fa3_status:  # how FA3 was provided, or why not and the fallback: in every seed's step log
        print(fa3.summary(fa3.load_status(args.fa3_status)), flush=True)
    train = json.loads(args.train_json)
    env = {**train_env(train), **data_env(args.data_manifest), "SEED": str(args.seed), "RUN_ID": args.run_id}
    if args.env_json:
        env.update({k: env_value(v) for k, v in json.loads(args.env_json).items()})
    outs = {"checkpoint": args.checkpoint, "summary": args.summary, "logfile": args.logfile}
    run_stage(args.script, "train", outs, env, args.nproc)
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    env = section_env(json.loads(args.quantize_json), QUANTIZE_ENV, "quantize")
    outs = {"artifact": args.artifact, "summary": args.summary, "logfile": args.logfile}
    extra = ["--checkpoint", args.checkpoint] + (["--code-file", args.code_file] if args.code_file else [])
    run_stage(args.script, "quantize", outs, env, 0, extra=extra)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    section = json.loads(args.eval_json)
    budget = float(section.pop("time_budget_s", EVAL_BUDGET_S))
    env = {**section_env(section, EVAL_ENV, "eval"), **data_env(args.data_manifest)}
    env["SEED"] = str(args.seed)
    outs = {"summary": args.summary, "logfile": args.logfile}
    run_stage(args.script, "eval", outs, env, args.nproc, extra=["--artifact", args.artifact])
    metrics = merge_metrics(args.seed, args.run, args.train_summary, args.quantize_summary, args.summary)
    metrics["eval_time_budget_s"] = budget
    if budget > 0 and metrics["eval_time_s"] > budget:
        raise RuntimeError(
            f"seed {args.seed}: evaluation took {metrics['eval_time_s']:.1f} s, over the {budget:.0f} s budget "
            f"(config eval.time_budget_s); see {args.logfile}"
        )
    fsio.write_json(args.metrics, metrics)
    print(json.dumps(metrics, indent=2, sort_keys=True))
    return 0


def merge_metrics(seed: int, run: str, train_summary, quantize_summary, eval_summary) -> dict:
    """One seed's metrics.json from the three stages' summaries."""
    tr, qu, ev = (fsio.read_json(p) for p in (train_summary, quantize_summary, eval_summary))
    for what, obj, stage in (("train", tr, "train"), ("quantize", qu, "quantize"), ("eval", ev, "eval")):
        if obj.get("stage") != stage:
            raise ValueError(f"{what} summary: expected stage {stage!r}, got {obj.get('stage')!r}")
    return {
        "seed": seed,
        "run": run,
        "val_bpb": ev["val_bpb"],
        "val_loss": ev["val_loss"],
        "roundtrip_val_bpb": ev["roundtrip_val_bpb"],
        "roundtrip_val_loss": ev["roundtrip_val_loss"],
        "sliding_val_bpb": ev["sliding_val_bpb"],
        "sliding_val_loss": ev["sliding_val_loss"],
        "eval_stride": ev["eval_stride"],
        "eval_seq_len": ev["eval_seq_len"],
        "val_tokens": ev["val_tokens"],
        "val_bytes": ev["val_bytes"],
        "eval_time_s": ev["eval_time_s"],
        "pre_quant_val_bpb": tr["pre_quant_val_bpb"],
        "pre_quant_val_loss": tr["pre_quant_val_loss"],
        "live_val_bpb": tr["live_val_bpb"],
        "train_time_s": tr["train_time_s"],
        "steps": tr["steps"],
        "step_avg_ms": tr["step_avg_ms"],
        "stopped_early": tr["stopped_early"],
        "model_params": tr["model_params"],
        "artifact_bytes": qu["artifact_bytes"],
        "code_bytes": qu["code_bytes"],
        "bytes_total": qu["bytes_total"],
        "quant_tag": qu["quant_tag"],
        "world_size": tr["world_size"],
        "attention_backend": tr["attention_backend"],
        "device": tr["device"],
    }


def stage_outputs(p: argparse.ArgumentParser, func) -> None:
    """The outputs every stage writes (its summary JSON and the script's own log), and the handler."""
    p.add_argument("--summary", required=True, help="the stage's summary (JSON)")
    p.add_argument("--logfile", required=True, help="the training script's log of this stage")
    p.set_defaults(func=func)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train one seed: checkpoint + train log + summary")
    p.add_argument("--script", required=True)
    p.add_argument("--data-manifest", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--run-id", default="pgolf")
    p.add_argument("--nproc", type=int, default=1, help="ranks (torchrun --nproc_per_node)")
    p.add_argument("--train-json", required=True, help="the config's train section as JSON")
    p.add_argument("--env-json", help="extra environment for the script (JSON object)")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--fa3-status", help="the fa3 step's status JSON (its summary opens the step's log)")
    stage_outputs(p, cmd_train)

    p = sub.add_parser("quantize", help="quantize + compress a checkpoint into the artifact")
    p.add_argument("--script", required=True)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--quantize-json", required=True, help="the config's quantize section as JSON")
    p.add_argument("--artifact", required=True)
    p.add_argument("--code-file", help="the script that ships (its bytes count toward the cap); default --script")
    stage_outputs(p, cmd_quantize)

    p = sub.add_parser("evaluate", help="score the artifact reloaded from disk; write metrics.json")
    p.add_argument("--script", required=True)
    p.add_argument("--data-manifest", required=True)
    p.add_argument("--artifact", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--run", required=True)
    p.add_argument("--nproc", type=int, default=1)
    p.add_argument("--eval-json", required=True, help="the config's eval section as JSON")
    p.add_argument("--train-summary", required=True)
    p.add_argument("--quantize-summary", required=True)
    p.add_argument("--metrics", required=True)
    stage_outputs(p, cmd_evaluate)
