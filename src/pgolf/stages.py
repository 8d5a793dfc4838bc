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

from pgolf import EVAL_BUDGET_S, fa3, fsio, procs
from pgolf.console import Console
from pgolf.data import verify_manifest
from pgolf.logs import progress_line

# The quantize and eval sections: each key is one of the script's knobs of that stage, its environment variable the
# key upper-cased (tests/test_knobs.py checks both against the script's Hyperparameters table).
QUANTIZE_KEYS = (
    "quant_bits_matrix",
    "quant_bits_mlp",
    "quant_bits_embed",
    "quant_keep_float_numel",
    "quant_clip_search",
    "gptq",
    "gptq_block",
    "gptq_damp",
    "compressor",
    "quant_layout",
    "compress_level",
    "compress_chunk",
    "encode_sample_chunks",
    "quant_fit_mlp_bits",
    "prune_max_frac",
    "enforce_cap",
)
EVAL_KEYS = ("eval_stride", "eval_seq_len", "eval_batch_seqs", "val_tokens_limit") + tuple(
    f"ttt_{k}" for k in ("epochs", "lr", "chunk_tokens", "params", "reset_chunks")
)
QUANTIZE_ENV = {k: k.upper() for k in QUANTIZE_KEYS}
EVAL_ENV = {k: k.upper() for k in EVAL_KEYS}


# Snakemake sets each of these to the job's thread count; the ranks of a job must share them.
THREAD_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "GOTO_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


SECRET_WORDS = {"TOKEN", "KEY", "APIKEY", "SECRET", "PASSWORD", "PASSWD", "CREDENTIALS", "AUTH"}


def is_secret(name: str) -> bool:
    """Whether an environment variable's name looks like a credential (HF_TOKEN, WANDB_API_KEY, AWS_SECRET_ACCESS_KEY,
    ...): such values are never written to a log or a record. Whole words only: TOKENIZER_PATH is not one."""
    return bool(SECRET_WORDS & set(name.upper().replace("-", "_").split("_")))


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


def local_path(path: str | os.PathLike) -> str:
    """``path`` relative to the working folder (the repository, for Snakemake) when it lies inside it, else as it is:
    what the script is given and logs, so that logs name no user's home folder and a moved repository stays valid."""
    absolute = os.path.abspath(path)
    rel = os.path.relpath(absolute)
    return absolute if rel == ".." or rel.startswith(".." + os.sep) else rel


def data_env(manifest_path: str | os.PathLike) -> dict[str, str]:
    m = verify_manifest(manifest_path)
    return {
        "TRAIN_FILES": local_path(m["train_glob"]),
        "VAL_FILES": local_path(m["val_glob"]),
        "TOKENIZER_PATH": local_path(m["tokenizer_path"]),
        "VOCAB_SIZE": str(m["vocab_size"]),
        # the validation byte sidecar, when the data set has one: the evaluator counts its bytes ("" = the pieces')
        "VAL_BYTES_FILES": local_path(m["val_bytes_glob"]) if m.get("val_bytes_glob") else "",
    }


def measure(path: str | os.PathLike) -> dict:
    """A product file as the next step will read it: its size and sha256."""
    return {"bytes": os.path.getsize(path), "sha256": fsio.sha256_file(path)}


def verify_file(path: str | os.PathLike, summary_path: str | os.PathLike, key: str) -> dict:
    """Measure ``path`` and refuse it unless it is the file the step that made it recorded in its summary
    (``files.<key>``): a file swapped or edited since (another seed's, another run's, a hand copy) is never used."""
    summary = fsio.read_json(summary_path)
    want = (summary.get("files") or {}).get(key)
    if not isinstance(want, dict) or "sha256" not in want:
        raise ValueError(f"{summary_path}: no files.{key} (bytes, sha256) recorded; re-run the step that writes it")
    got = measure(path)
    if got != {"bytes": want["bytes"], "sha256": want["sha256"]}:
        raise ValueError(
            f"{path}: not the {key} that {Path(summary_path).name} describes ({got['bytes']:,} bytes, sha256 "
            f"{got['sha256'][:16]}...; recorded {want['bytes']:,} bytes, sha256 {want['sha256'][:16]}...): it was "
            f"replaced or edited after the step wrote it; re-run that step (snakemake --forcerun {summary_path})"
        )
    return got


def config_digest(obj) -> str:
    """The sha256 of a config section (or any JSON value) in canonical form."""
    import hashlib

    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _flat(obj, prefix: str = "") -> dict:
    if not isinstance(obj, dict):
        return {prefix or "value": obj}
    out = {}
    for k, v in obj.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def verify_config(summary_path: str | os.PathLike, key: str, expected: dict) -> None:
    """Refuse a product made under another configuration than the one given now (e.g. a checkpoint of an earlier
    train section left in place): the summary's ``config.<key>`` must equal ``expected``."""
    recorded = (fsio.read_json(summary_path).get("config") or {}).get(key)
    if recorded == expected:
        return
    if recorded is None:
        raise ValueError(f"{summary_path}: no config.{key} recorded; re-run the step that writes it")
    was, now = _flat(recorded), _flat(expected)
    diff = [k for k in sorted(set(was) | set(now)) if was.get(k) != now.get(k)]
    shown = ", ".join(f"{k}: {was.get(k)!r} -> {now.get(k)!r}" for k in diff[:6])
    raise ValueError(
        f"{summary_path}: made with another {key} configuration than the one given now ({shown}); "
        f"re-run that step with the current config (snakemake --forcerun {summary_path})"
    )


def stream(
    cmd: list[str],
    env: dict[str, str],
    cwd: str | os.PathLike | None = None,
    sink: BinaryIO | None = None,
    budget_s: float | None = None,
    console: Console | None = None,
) -> int:
    """Run ``cmd``, echoing its output (stdout and stderr) on stdout with a ``progress:`` line
    (``pgolf.logs.progress_line``) after each logged training step, and writing it to ``sink`` (bytes as written) when
    given; ``console``: the job's status on the terminal (``pgolf.console``). Return the exit code."""
    proc = procs.popen_guarded(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    killed = procs.guard(proc)
    assert proc.stdout is not None
    out = sys.stdout.buffer
    if console is not None:
        console.start()
    code = None
    try:
        for raw in iter(proc.stdout.readline, b""):
            if sink is not None:
                sink.write(raw)
            out.write(raw if raw.endswith(b"\n") else raw + b"\n")
            text = raw.decode("utf-8", errors="replace")
            progress = progress_line(text, budget_s)
            if progress is not None:
                out.write(progress.encode() + b"\n")
            out.flush()
            if console is not None:
                console.line(text, progress)
        code = proc.wait()
    finally:
        if console is not None:
            console.stop(code)
    if killed.is_set():
        raise RuntimeError(f"{Path(cmd[-1]).name}: stopped: the pipeline that started it is gone or was interrupted")
    return code


# The compile caches every stage shares, under the working folder's .cache/ (the repository's, for Snakemake): the
# seeds after the first, and a new pod whose working folder is on a kept volume, reuse the first one's kernels.
COMPILE_CACHE = {
    "TORCHINDUCTOR_CACHE_DIR": ".cache/torchinductor",
    "TRITON_CACHE_DIR": ".cache/triton",
    "TORCHINDUCTOR_FX_GRAPH_CACHE": "1",  # torch >= 2.4 (on by default from 2.5): compiled graphs kept on disk
    "TORCHINDUCTOR_AUTOGRAD_CACHE": "1",  # torch >= 2.4 (on by default from 2.6): and their backward graphs
}


def compile_cache_env(environ, workdir: str | os.PathLike) -> tuple[dict[str, str], str]:
    """(the compile cache variables to set, a line for the step log): each of COMPILE_CACHE unless ``environ`` (the
    user's) already sets it; the folders under ``workdir`` are made, and named relative to the working folder when they
    lie inside it (``local_path``: no home folder in the logs; the script runs in that folder)."""
    env, shown = {}, []
    for var, value in COMPILE_CACHE.items():
        if environ.get(var):
            shown.append(f"{var}={environ[var]} (already set)")
            continue
        if var.endswith("_DIR"):
            path = Path(workdir, value).resolve()
            path.mkdir(parents=True, exist_ok=True)
            value = local_path(path)
        env[var] = value
        shown.append(f"{var}={value}")
    return env, "compile cache: " + " ".join(shown)


def launch(script: str, stage_args: list[str], env: dict[str, str], nproc: int, console: Console | None = None) -> None:
    """Run the script (under torchrun for nproc >= 1 ranks), streaming its output; raise if it fails."""
    script = str(Path(script).resolve())
    if not Path(script).is_file():
        raise FileNotFoundError(f"{script}: training script not found")
    if nproc > 0:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
        cmd += [script, *stage_args]
    else:
        cmd = [sys.executable, script, *stage_args]
    cache_env, cache_line = compile_cache_env({**os.environ, **env}, Path.cwd())
    full_env = {**os.environ, **cache_env, **env, "PYTHONUNBUFFERED": "1"}
    print(cache_line, flush=True)
    # The job's threads (Snakemake sets OMP_NUM_THREADS to them) are shared by the ranks: oversubscribed CPU ranks
    # run several times slower.
    job_threads = int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)
    per_rank = str(max(1, job_threads // max(nproc, 1)))
    for var in THREAD_VARS:
        full_env[var] = per_rank
    shown = {k: "***" if is_secret(k) else v for k, v in sorted(env.items())}
    print("+ " + " ".join(f"{k}={v}" for k, v in shown.items()) + " " + " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    budget = float(env["MAX_WALLCLOCK_SECONDS"]) if "MAX_WALLCLOCK_SECONDS" in env else None
    returncode = stream(cmd, full_env, budget_s=budget, console=console)
    if returncode != 0:
        raise RuntimeError(f"{Path(script).name} {' '.join(stage_args[:2])} failed with exit code {returncode}")
    print(f"stage finished in {time.perf_counter() - t0:.1f} s", flush=True)


# The products whose bytes the next step reads, measured into the stage's summary (``files``).
MEASURED = ("checkpoint", "artifact")


def run_stage(
    script: str,
    stage: str,
    outputs: dict[str, str],
    env: dict[str, str],
    nproc: int,
    extra=(),
    config: dict | None = None,
    files: dict | None = None,
    console: Console | None = None,
) -> None:
    """Run one stage with every output (log, summary, checkpoint or artifact) first written under a temporary
    name; the real names appear only when the stage succeeded, so a failure never leaves a half product and the last
    good products stay in place. One run per product at a time (a lock beside the summary). The summary gets
    ``files`` (bytes and sha256 of the checkpoint/artifact written, plus ``files`` given: what was read) and
    ``config`` (the configuration it ran under), which the next steps verify."""
    what = f"{stage} of {outputs['summary']}"
    with procs.exclusive_lock(Path(outputs["summary"]).with_name(f".{Path(outputs['summary']).name}.lock"), what):
        tmp = {flag: f"{path}.partial" for flag, path in outputs.items()}
        for path in tmp.values():
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).unlink(missing_ok=True)
        args = ["--stage", stage, *extra]
        for flag, path in tmp.items():
            args += [f"--{flag}", path]
        try:
            launch(script, args, env, nproc, console)
            for flag, path in tmp.items():
                if not Path(path).exists():
                    raise RuntimeError(f"{Path(script).name} --stage {stage} did not write {outputs[flag]}")
            summary = fsio.read_json(tmp["summary"])
            summary["files"] = {**(files or {}), **{k: measure(tmp[k]) for k in MEASURED if k in tmp}}
            summary["config"] = config or {}
            fsio.write_json(tmp["summary"], summary)
            for flag, path in tmp.items():
                os.replace(path, outputs[flag])
        finally:
            for path in tmp.values():
                Path(path).unlink(missing_ok=True)


def train_identity(train: dict, script_sha256: str) -> dict:
    """What a checkpoint was trained under: the train section and the training script's sha256 (the record rule
    computes the same from the config, ``common.smk``)."""
    return {"section": train, "script_sha256": script_sha256}


def cmd_train(args: argparse.Namespace) -> int:
    if args.fa3_status:  # how FA3 was provided, or why not and the fallback: in every seed's step log
        print(fa3.summary(fa3.load_status(args.fa3_status)), flush=True)
    train = json.loads(args.train_json)
    env = {**train_env(train), **data_env(args.data_manifest), "SEED": str(args.seed), "RUN_ID": args.run_id}
    if args.env_json:
        env.update({k: env_value(v) for k, v in json.loads(args.env_json).items()})
    outs = {"checkpoint": args.checkpoint, "summary": args.summary, "logfile": args.logfile}
    config = {"train": train_identity(train, fsio.sha256_file(args.script))}
    console = Console(getattr(args, "console_fd", None), f"seed {args.seed} train")
    run_stage(args.script, "train", outs, env, args.nproc, config=config, console=console)
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    section = json.loads(args.quantize_json)
    env = {**section_env(section, QUANTIZE_ENV, "quantize"), "SEED": str(args.seed)}
    checkpoint = verify_file(args.checkpoint, args.train_summary, "checkpoint")
    train = train_identity(json.loads(args.train_json), fsio.sha256_file(args.script))
    verify_config(args.train_summary, "train", train)
    code_file = args.code_file or args.script
    outs = {"artifact": args.artifact, "summary": args.summary, "logfile": args.logfile}
    extra = ["--checkpoint", args.checkpoint, "--code-file", code_file]
    files = {"checkpoint": checkpoint, "code_file": {"path": local_path(code_file), **measure(code_file)}}
    run_stage(
        args.script,
        "quantize",
        outs,
        env,
        0,
        extra=extra,
        config={"train": train, "quantize": section},
        files=files,
        console=Console(
            getattr(args, "console_fd", None), f"seed {args.seed} quantize", idle="quantizing, compressing"
        ),
    )
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    section = json.loads(args.eval_json)
    budget = float(section.get("time_budget_s", EVAL_BUDGET_S))
    scoring = {k: v for k, v in section.items() if k != "time_budget_s"}
    artifact = verify_file(args.artifact, args.quantize_summary, "artifact")
    quantized = fsio.read_json(args.quantize_summary)
    if args.quantize_json is not None:
        verify_config(args.quantize_summary, "quantize", json.loads(args.quantize_json))
    if (quantized.get("files") or {}).get("checkpoint") != (fsio.read_json(args.train_summary).get("files") or {}).get(
        "checkpoint"
    ):
        raise ValueError(
            f"{args.quantize_summary}: its artifact was quantized from another checkpoint than the one "
            f"{args.train_summary} describes; re-run quantize (snakemake --forcerun {args.quantize_summary})"
        )
    env = {**section_env(scoring, EVAL_ENV, "eval"), **data_env(args.data_manifest), "SEED": str(args.seed)}
    outs = {"summary": args.summary, "logfile": args.logfile}
    config = {"eval": section, "quantize": (quantized.get("config") or {}).get("quantize")}
    run_stage(
        args.script,
        "eval",
        outs,
        env,
        args.nproc,
        extra=["--artifact", args.artifact],
        config=config,
        files={"artifact": artifact},
        console=Console(
            getattr(args, "console_fd", None), f"seed {args.seed} evaluate", idle="loading, compiling, scoring"
        ),
    )
    metrics = merge_metrics(args.seed, args.run, args.train_summary, args.quantize_summary, args.summary)
    metrics["eval_time_budget_s"] = budget
    if budget > 0 and metrics["eval_total_s"] > budget:  # compile and loading included (config/README.md, eval)
        raise RuntimeError(
            f"seed {args.seed}: evaluation took {metrics['eval_total_s']:.1f} s (scoring "
            f"{metrics['eval_time_s']:.1f} s, compile {metrics['eval_compile_s'] or 0:.1f} s, loading "
            f"{metrics['eval_load_s'] or 0:.1f} s), over the {budget:.0f} s budget (config eval.time_budget_s); "
            f"see {args.logfile}"
        )
    fsio.write_json(args.metrics, metrics)
    print(json.dumps(metrics, indent=2, sort_keys=True))
    return 0


def merge_metrics(seed: int, run: str, train_summary, quantize_summary, eval_summary) -> dict:
    """One seed's metrics.json from the three stages' summaries. The bytes are those measured on the files: the
    artifact the evaluation scored and the code file quantize counted."""
    tr, qu, ev = (fsio.read_json(p) for p in (train_summary, quantize_summary, eval_summary))
    for what, obj, stage in (("train", tr, "train"), ("quantize", qu, "quantize"), ("eval", ev, "eval")):
        if obj.get("stage") != stage:
            raise ValueError(f"{what} summary: expected stage {stage!r}, got {obj.get('stage')!r}")
    artifact, code = ev["files"]["artifact"], qu["files"]["code_file"]
    return {
        "seed": seed,
        "run": run,
        "val_bpb": ev["val_bpb"],
        "val_loss": ev["val_loss"],
        "roundtrip_val_bpb": ev["roundtrip_val_bpb"],
        "roundtrip_val_loss": ev["roundtrip_val_loss"],
        "sliding_val_bpb": ev["sliding_val_bpb"],
        "sliding_val_loss": ev["sliding_val_loss"],
        "ttt": ev.get("ttt"),  # the score-first TTT settings when that pass made the score (val_bpb), else None
        "ttt_val_bpb": ev.get("ttt_val_bpb"),
        "eval_stride": ev["eval_stride"],
        "eval_seq_len": ev["eval_seq_len"],
        "eval_batch_seqs": ev.get("eval_batch_seqs"),
        "val_tokens": ev["val_tokens"],
        "val_bytes": ev["val_bytes"],
        "eval_time_s": ev["eval_time_s"],  # the scoring alone (the log's total_eval_time)
        "eval_compile_s": ev.get("compile_s"),  # the compiled model's warm-up before it (0 when eager)
        "eval_load_s": ev.get("load_s"),
        # the whole evaluation (loading + compile + scoring): what the budget counts; an older summary: its eval_time_s
        "eval_total_s": ev.get("eval_total_s", ev["eval_time_s"]),
        "pre_quant_val_bpb": tr["pre_quant_val_bpb"],
        "pre_quant_val_loss": tr["pre_quant_val_loss"],
        "live_val_bpb": tr["live_val_bpb"],
        "train_time_s": tr["train_time_s"],
        "steps": tr["steps"],
        "step_avg_ms": tr["step_avg_ms"],
        "stopped_early": tr["stopped_early"],
        "model_params": tr["model_params"],
        "artifact_bytes": artifact["bytes"],
        "artifact_sha256": artifact["sha256"],
        "code_bytes": code["bytes"],
        "code_sha256": code["sha256"],
        "bytes_total": artifact["bytes"] + code["bytes"],
        "quant_tag": qu["quant_tag"],
        "world_size": tr["world_size"],
        "attention_backend": tr["attention_backend"],
        "device": tr["device"],
        "config_sha256": {
            "train": config_digest((tr.get("config") or {}).get("train")),
            "quantize": config_digest((qu.get("config") or {}).get("quantize")),
            "eval": config_digest((ev.get("config") or {}).get("eval")),
        },
    }


def stage_outputs(p: argparse.ArgumentParser, func) -> None:
    """The outputs every stage writes (its summary JSON and the script's own log), and the handler."""
    p.add_argument("--summary", required=True, help="the stage's summary (JSON)")
    p.add_argument("--logfile", required=True, help="the training script's log of this stage")
    console_option(p)
    p.set_defaults(func=func)


def console_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--console-fd",
        type=int,
        help="also show the job's status on this file descriptor (the terminal), at least every 30 s: pgolf.console",
    )


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
    p.add_argument("--seed", type=int, required=True)
    p.add_argument(
        "--train-summary", required=True, help="the train step's summary: the checkpoint is checked against it"
    )
    p.add_argument("--train-json", required=True, help="the config's train section: the checkpoint must be trained so")
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
    p.add_argument("--quantize-json", help="the config's quantize section: the artifact must be quantized so")
    p.add_argument("--train-summary", required=True)
    p.add_argument("--quantize-summary", required=True)
    p.add_argument("--metrics", required=True)
    stage_outputs(p, cmd_evaluate)
