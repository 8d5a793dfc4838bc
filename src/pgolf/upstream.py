"""Reproduce someone else's record: run an upstream record folder's ``train_gpt.py`` whole, as the challenge runs it.

Upstream scripts train, quantize and evaluate in one process (``torchrun --standalone --nproc_per_node=N
train_gpt.py``), read the data from ``DATA_PATH`` (a folder of ``fineweb_train_*.bin`` / ``fineweb_val_*.bin``) and
``TOKENIZER_PATH``, and print their log. ``pgolf run-upstream`` runs one seed of such a script:

- in a fresh working folder holding a byte-identical copy of the script and copies of the other files of its folder
  (helpers it imports or reads; not the record's README, submission.json and logs), plus ``pgolf_data/``: links to
  the data step's shards under the upstream names;
- with the environment ``VOCAB_SIZE``/``DATA_PATH``/``TOKENIZER_PATH`` (from the data manifest), then the config's
  ``train.env``, then ``SEED`` and ``RUN_ID``; the job's threads are shared among the ranks;
- streaming the script's output (stdout and stderr) as written into the seed's log, echoing it, and adding a
  ``progress:`` line (step, loss, elapsed vs budget, ETA) after every logged training step;
- then parsing the log (``pgolf.logs.parse_log``) into the same ``metrics.json`` keys the staged chain writes, so the
  record, its checks and the comparison with the reference run as usual.

The log and metrics.json appear only when the script succeeded and its log holds a score and an artifact size.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

from pgolf import TRAIN_BUDGET_S, fa3, fsio
from pgolf.console import Console
from pgolf.data import verify_manifest
from pgolf.logs import best_of_kind, parse_log, upstream_phases
from pgolf.stages import THREAD_VARS, console_option, env_value, stream

DATA_LINKS = "pgolf_data"
SCRIPT_NAME = "train_gpt.py"
# System programs frontier record scripts run (apt packages); a missing one is reported before the run starts.
SYSTEM_TOOLS = ("lrzip",)


def missing_tools(folder: str | os.PathLike) -> list[str]:
    """The SYSTEM_TOOLS that the Python files of ``folder`` name and that are not on PATH (e.g. lrzip, which the
    1.0611 record's per-group compressor calls: `apt-get install lrzip`)."""
    text = "".join(p.read_text(encoding="utf-8", errors="replace") for p in sorted(Path(folder).glob("*.py")))
    return [t for t in SYSTEM_TOOLS if re.search(rf"\b{re.escape(t)}\b", text) and shutil.which(t) is None]


_TRAIN_SHARDS = re.compile(r"^train_shards:\s*(\d+)\s*$", re.MULTILINE)


def check_logged_shards(text: str, manifest_path: str | os.PathLike, where: str | os.PathLike) -> int | None:
    """The ``train_shards: N`` an upstream script logs against the data set's train shards (ValueError when they
    differ: the script read other data than the pipeline's, or a prep put more shards there: upstream #2127/#2146,
    a leaky prep, showed ``train_shards: 1499``); returns N, or None when the log has no such line."""
    m = _TRAIN_SHARDS.search(text)
    if not m:
        return None
    man = verify_manifest(manifest_path)
    logged, have = int(m.group(1)), len(man.get("train_files", []))
    expected = ((man.get("source") or {}).get("expected_log") or {}).get("train_shards", have)
    if logged != have or logged != expected:
        raise ValueError(
            f"{where}: the script logged train_shards: {logged}, but the data set {manifest_path} has {have} train"
            f" shards (its prep expected the log to print {expected}): it trained on other data than the pipeline's"
        )
    return logged


def link_data(manifest_path: str | os.PathLike, dest: str | os.PathLike) -> dict[str, str]:
    """Make ``dest`` a folder of links ``fineweb_{train,val}_NNNNNN.bin`` to the manifest's shards (in their order);
    return the data environment an upstream script reads (``DATA_PATH``, ``TOKENIZER_PATH``, ``VOCAB_SIZE``)."""
    m = verify_manifest(manifest_path)
    dest = Path(dest)
    if dest.is_symlink() or dest.is_file():
        dest.unlink()
    elif dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for split in ("train", "val", "val_bytes"):  # val_bytes: the byte sidecar, where the data set has one
        for i, shard in enumerate(m.get(f"{split}_files", [])):
            (dest / f"fineweb_{split}_{i:06d}.bin").symlink_to(Path(shard).resolve())
    return {"DATA_PATH": str(dest.resolve()), "TOKENIZER_PATH": m["tokenizer_path"], "VOCAB_SIZE": str(m["vocab_size"])}


def _record_metadata(name: str) -> bool:
    """Whether a file of a record folder is the record's own evidence (not something its script reads)."""
    return name in ("README.md", "submission.json") or name.endswith(".log")


def prepare_workdir(script: str | os.PathLike, workdir: str | os.PathLike) -> Path:
    """A fresh ``workdir`` holding a copy of ``script`` as ``train_gpt.py`` and copies of the other entries of its
    folder but the record's README, submission.json and logs (copies, not links: whatever the script writes stays in
    the working folder); returns the script copy's path."""
    script = Path(script).resolve()
    if not script.is_file():
        raise FileNotFoundError(f"{script}: training script not found")
    workdir = Path(workdir)
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    for entry in sorted(script.parent.iterdir()):
        if entry.name in (script.name, SCRIPT_NAME, DATA_LINKS) or _record_metadata(entry.name):
            continue
        if entry.is_dir():
            shutil.copytree(entry, workdir / entry.name)
        else:
            shutil.copy2(entry, workdir / entry.name)
    copy = workdir / SCRIPT_NAME
    shutil.copyfile(script, copy)
    if fsio.sha256_file(copy) != fsio.sha256_file(script):
        raise RuntimeError(f"copy of {script} differs from the original")
    return copy


def metrics_from_log(info: dict, seed: int, run: str, nproc: int, device: str | None, log_name: str) -> dict:
    """metrics.json (the staged chain's keys, where the log has them) from an upstream script's parsed log."""
    where = f"{log_name} (seed {seed})"
    if info["score"] is None:
        raise ValueError(f"{where}: no final val_bpb line; the script did not finish its evaluation")
    total = info["bytes_total"]
    if total is None and info["model_bytes"] is not None and info["code_bytes"] is not None:
        total = info["model_bytes"] + info["code_bytes"]
    if total is None:
        raise ValueError(f"{where}: no artifact size logged (Serialized model / Total submission size)")
    if info["seed"] is not None and info["seed"] != seed:
        raise ValueError(f"{where}: the script logged seed {info['seed']}; does it read SEED?")
    rt, pre, sliding = info["roundtrip"] or {}, info["pre_quant"] or {}, best_of_kind(info, "sliding") or {}
    strides = [e["stride"] for e in info["final"].values() if "stride" in e]
    train_ms = info["train_time_ms"]
    return {
        "seed": seed,
        "run": run,
        "mode": "upstream",
        "logs": [log_name],
        "val_bpb": info["score"]["val_bpb"],
        "val_loss": info["score"]["val_loss"],
        "score_tag": info["score"]["tag"],
        "roundtrip_val_bpb": rt.get("val_bpb"),
        "roundtrip_val_loss": rt.get("val_loss"),
        "sliding_val_bpb": sliding.get("val_bpb"),
        "sliding_val_loss": sliding.get("val_loss"),
        "eval_stride": strides[-1] if strides else None,
        "eval_time_s": info["eval_time_s"],
        "pre_quant_val_bpb": pre.get("val_bpb"),
        "pre_quant_val_loss": pre.get("val_loss"),
        "train_time_s": None if train_ms is None else train_ms / 1000.0,
        "steps": info["steps"],
        "step_avg_ms": info["step_avg_ms"],
        "stopped_early": info["stopped_early"],
        "artifact_bytes": info["model_bytes"],
        "code_bytes": info["code_bytes"],
        "bytes_total": total,
        "quant_tag": info["quant_format"],
        "world_size": nproc,
        "device": device,
    }


def run_upstream(
    script: str | os.PathLike,
    manifest: str | os.PathLike,
    seed: int,
    run: str,
    run_id: str,
    nproc: int,
    extra_env: dict,
    workdir: str | os.PathLike,
    logfile: str | os.PathLike,
    metrics_path: str | os.PathLike,
    device: str | None = None,
    budget_s: float | None = None,
    fa3_status: str | os.PathLike | None = None,
    console_fd: int | None = None,
) -> dict:
    """Run one seed of an upstream script in ``workdir``; write its log to ``logfile`` and ``metrics_path``."""
    workdir, logfile = Path(workdir), Path(logfile)
    fa3.require_for_script(script, fa3_status)  # upstream scripts have no FA3 fallback: stop before training
    if fa3_status:
        print(fa3.summary(fa3.load_status(fa3_status)), flush=True)
    copy = prepare_workdir(script, workdir)
    for tool in missing_tools(workdir):
        print(
            f"warning: {script} calls {tool}, which is not installed here (apt-get install {tool}); the run fails where"
            " it needs it",
            flush=True,
        )
    env = link_data(manifest, workdir / DATA_LINKS)
    env.update({str(k): env_value(v) for k, v in (extra_env or {}).items()})
    env.update(SEED=str(seed), RUN_ID=run_id)
    if budget_s is None:
        budget_s = float(env["MAX_WALLCLOCK_SECONDS"]) if "MAX_WALLCLOCK_SECONDS" in env else TRAIN_BUDGET_S
    full_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
    job_threads = int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)
    for var in THREAD_VARS:
        full_env[var] = str(max(1, job_threads // max(nproc, 1)))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", copy.name]
    shown = " ".join(f"{k}={v}" for k, v in sorted(env.items()))
    print(f"+ cd {workdir} && {shown} torchrun --standalone --nproc_per_node={nproc} {copy.name}", flush=True)

    partial = logfile.with_name(logfile.name + ".partial")
    partial.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(partial, "wb") as sink:
        code = stream(cmd, full_env, workdir, sink, budget_s, Console(console_fd, f"seed {seed} train (upstream)"))
    if code != 0:
        raise RuntimeError(f"{script} (seed {seed}) failed with exit code {code}; its output is in {partial}")
    print(f"upstream script finished in {time.perf_counter() - t0:.1f} s", flush=True)
    metrics = metrics_from_log(parse_log(partial), seed, run, nproc, device, logfile.name)
    metrics["script_sha256"] = fsio.sha256_file(copy)
    text = partial.read_text(encoding="utf-8", errors="replace")
    metrics["phases"] = {k: v for k, v in upstream_phases(text).items() if k != "evidence"}
    check_logged_shards(text, manifest, partial)
    os.replace(partial, logfile)
    fsio.write_json(metrics_path, metrics)
    return metrics


def _cmd_run_upstream(args: argparse.Namespace) -> int:
    extra = json.loads(args.env_json) if args.env_json else {}
    if not isinstance(extra, dict):
        raise ValueError("--env-json: expected a JSON object")
    metrics = run_upstream(
        args.script,
        args.data_manifest,
        args.seed,
        args.run,
        args.run_id or f"{args.run}_seed{args.seed}",
        args.nproc,
        extra,
        args.workdir,
        args.logfile,
        args.metrics,
        device=args.device,
        budget_s=args.budget_s,
        fa3_status=args.fa3_status,
        console_fd=getattr(args, "console_fd", None),
    )
    print(json.dumps(metrics, indent=2, sort_keys=True))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``run-upstream`` subcommand."""
    p = sub.add_parser("run-upstream", help="run one seed of an upstream record's train_gpt.py whole; parse its log")
    p.add_argument(
        "--script", required=True, help="the upstream train_gpt.py (its folder's other files are copied beside it)"
    )
    p.add_argument("--data-manifest", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--run", required=True, help="run name (recorded in metrics.json)")
    p.add_argument("--run-id", help="RUN_ID for the script (default <run>_seed<N>)")
    p.add_argument("--nproc", type=int, default=1, help="ranks (torchrun --nproc_per_node)")
    p.add_argument("--env-json", help="extra environment for the script (JSON object: the config's train.env)")
    p.add_argument("--device", help="cuda or cpu (recorded in metrics.json)")
    p.add_argument(
        "--budget-s",
        type=float,
        help="train-time budget for the progress lines (default MAX_WALLCLOCK_SECONDS if set, else 600)",
    )
    p.add_argument("--workdir", required=True, help="the per-seed working folder (recreated)")
    p.add_argument("--logfile", required=True, help="the script's output, as written (the record's train_seed<N>.log)")
    p.add_argument("--metrics", required=True)
    p.add_argument("--fa3-status", help="the fa3 step's status JSON (quoted when the script needs FA3 and lacks it)")
    console_option(p)
    p.set_defaults(func=_cmd_run_upstream)
