"""Assemble a record folder (README.md, submission.json, train_gpt.py, per-seed logs, requirements.txt).

The folder is built in a temporary folder beside the target, checked with ``pgolf.check.check_record``, and only then
renamed into place; an older record folder is replaced only once the new one is complete and has passed the checks.
Also registers the ``record``, ``check`` and ``compare`` subcommands.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import tempfile
import uuid
from pathlib import Path

from pgolf import ARTIFACT_CAP_BYTES, EVAL_BUDGET_S, TRAIN_BUDGET_S
from pgolf.check import check_record, describe, seed_logs
from pgolf.fsio import read_json, sha256_file, write_bytes, write_json, write_text
from pgolf.stats import compare_records, format_comparison, mean, std

LOG_PARTS = ("train.log", "quantize.log", "eval.log")
NON_RECORD_TRACK = "track_non_record_16mb"
_SEED_DIR = re.compile(r"^seed_(\d+)$")


def _load_seed(seed_dir: Path) -> dict:
    """metrics.json and the concatenated stage logs of one seed folder."""
    metrics = read_json(seed_dir / "metrics.json")
    parts = []
    for name in LOG_PARTS:
        path = seed_dir / name
        if not path.is_file():
            raise FileNotFoundError(f"{path}: file not found")
        parts.append(path.read_bytes())
    log = b""
    for data in parts:  # keep each stage's bytes as written; only add a newline if one is missing between stages
        if log and not log.endswith(b"\n"):
            log += b"\n"
        log += data
    seed = metrics.get("seed")
    m = _SEED_DIR.match(seed_dir.name)
    if seed is None and m is None:
        raise ValueError(f"{seed_dir}: no seed in metrics.json and the folder is not named seed_<N>")
    if seed is not None and m is not None and int(seed) != int(m.group(1)):
        raise ValueError(f"{seed_dir}: metrics.json says seed {seed} but the folder is seed_{m.group(1)}")
    seed = int(seed if seed is not None else m.group(1))
    for key in ("val_bpb", "val_loss", "bytes_total"):
        if not isinstance(metrics.get(key), (int, float)):
            raise ValueError(f"{seed_dir / 'metrics.json'}: {key} missing or not a number")
    return {"seed": seed, "dir": seed_dir, "metrics": metrics, "log": log}


def _uniform(values: list):
    """The one value all seeds share, else None (ignoring missing values)."""
    present = [v for v in values if v is not None]
    return present[0] if present and all(v == present[0] for v in present) else None


def _round(x: float | None, nd: int = 8) -> float | None:
    return None if x is None else round(float(x), nd)


def _mean_of(seeds: list[dict], key: str) -> float | None:
    values = [s["metrics"].get(key) for s in seeds]
    return mean([float(v) for v in values]) if values and all(isinstance(v, (int, float)) for v in values) else None


def is_non_record(settings: dict) -> bool:
    """Whether the settings describe a non-record (or demo) run."""
    return bool(settings.get("non_record")) or settings.get("track") == NON_RECORD_TRACK


def _hardware(environment: dict, seeds: list[dict], nproc: int) -> str:
    """Hardware in words, from the environment JSON (GPU) or the seeds' metrics (device)."""
    gpu = environment.get("gpu")
    if gpu:
        count = environment.get("gpu_count") or nproc
        return f"{count}x {gpu}"
    device = _uniform([s["metrics"].get("device") for s in seeds])
    world = _uniform([s["metrics"].get("world_size") for s in seeds]) or nproc
    if device:
        return f"{world}x {device}"
    return str(environment.get("platform") or "unknown")


def _submission(settings: dict, environment: dict, seeds: list[dict], nproc: int) -> dict:
    """submission.json contents; every number is a metrics.json value or a mean/std/max of them."""
    bpb = [float(s["metrics"]["val_bpb"]) for s in seeds]
    loss = [float(s["metrics"]["val_loss"]) for s in seeds]
    codes = {s["metrics"].get("code_bytes") for s in seeds} - {None}
    if len(codes) > 1:
        raise ValueError(f"the seeds logged different code sizes ({sorted(codes)}): they did not run the same script")
    seed_results = {}
    for s in seeds:
        m = s["metrics"]
        seed_results[str(s["seed"])] = {
            "val_loss": _round(m["val_loss"]),
            "val_bpb": _round(m["val_bpb"]),
            "artifact_bytes": m.get("artifact_bytes"),
            "bytes_total": m["bytes_total"],
            "steps": m.get("steps"),
            "step_avg_ms": m.get("step_avg_ms"),
            "train_time_s": m.get("train_time_s"),
            "eval_time_s": m.get("eval_time_s"),
            "pre_quant_val_bpb": _round(m.get("pre_quant_val_bpb")),
        }
    return {
        "author": settings.get("author"),
        "github_id": settings.get("github_id"),
        "name": settings.get("name"),
        "date": settings.get("date"),
        "blurb": settings.get("blurb"),
        "track": settings.get("track"),
        "non_record": is_non_record(settings),
        "val_bpb": _round(mean(bpb)),
        "val_loss": _round(mean(loss)),
        "val_bpb_std": _round(std(bpb)),
        "val_loss_std": _round(std(loss)),
        "pre_quant_val_bpb": _round(_mean_of(seeds, "pre_quant_val_bpb")),
        "bytes_total": max(int(s["metrics"]["bytes_total"]) for s in seeds),
        "bytes_code": next(iter(codes)) if codes else None,
        "seeds": [s["seed"] for s in seeds],
        "seed_results": seed_results,
        "quant_tag": _uniform([s["metrics"].get("quant_tag") for s in seeds]),
        "eval_stride": _uniform([s["metrics"].get("eval_stride") for s in seeds]),
        "attention_backend": _uniform([s["metrics"].get("attention_backend") for s in seeds]),
        "hardware": _hardware(environment, seeds, nproc),
        "pytorch_version": environment.get("torch"),
        "cuda_version": environment.get("cuda"),
        "flash_attn_version": environment.get("fa3"),
        "python_version": environment.get("python"),
        "git_commit": environment.get("git_commit"),
    }


def _cell(value, spec: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, int) and not isinstance(value, bool) and spec == ",":
        return f"{value:,}"
    return format(value, spec) if spec and isinstance(value, (int, float)) else str(value)


def _env_value(value) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def reproduce_command(hparams: dict, nproc: int, seed: int | None) -> str:
    """The shell command that reruns one seed: env vars, then torchrun."""
    env = {k: _env_value(v) for k, v in sorted(hparams.items()) if k != "SEED"}
    if seed is not None:
        env["SEED"] = str(seed)
    lines = [f"{k}={shlex.quote(v)} \\" for k, v in env.items()]
    lines.append(f"torchrun --standalone --nproc_per_node={nproc} train_gpt.py")
    return "\n".join(lines)


def _readme(
    sub: dict, settings: dict, environment: dict, seeds: list[dict], hparams: dict, nproc: int, comparison: dict | None
) -> str:
    """README.md text; every number comes from the metrics, settings, environment or hyperparameters."""
    n = len(seeds)
    out = [f"# {sub['name'] or 'Parameter Golf run'}", ""]
    if is_non_record(settings):
        out += [
            "> **Not a leaderboard record.** This is a non-record / demo run"
            f" (track `{sub['track']}`, hardware: {sub['hardware']}). Its numbers are not comparable with the"
            " 10-minute 8xH100 leaderboard and it must not be submitted as a record.",
            "",
        ]
    sliding = all(s["metrics"].get("sliding_val_bpb") is not None for s in seeds)
    stride = sub.get("eval_stride")
    score_kind = (
        f"sliding window, stride {stride}" if sliding and stride else ("sliding window" if sliding else "roundtrip")
    )
    std_txt = f" ± {sub['val_bpb_std']:.8f} (sample std)" if sub["val_bpb_std"] is not None else " (one seed: no std)"
    out += [
        f"**val_bpb = {sub['val_bpb']:.8f}**{std_txt}, mean of {n} seed(s), {score_kind}, after the"
        f" {sub.get('quant_tag') or 'compressed'} roundtrip | **{sub['bytes_total']:,} bytes** (largest total over"
        f" seeds) | {sub['hardware']}",
        "",
    ]
    if sub.get("blurb"):
        out += [sub["blurb"], ""]
    out += [
        f"- Author: {sub['author']}" + (f" (@{sub['github_id']})" if sub.get("github_id") else ""),
        f"- Date: {sub['date']}",
        f"- Track: `{sub['track']}`",
        "",
        "## Results",
        "",
        "| Seed | Steps | Step avg (ms) | Train time (s) | Pre-quant val_bpb | Roundtrip val_bpb | Sliding val_bpb"
        " | Score val_bpb | Artifact bytes | Total bytes | Eval time (s) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in seeds:
        m = s["metrics"]
        out.append(
            f"| {s['seed']} | {_cell(m.get('steps'), ',')} | {_cell(m.get('step_avg_ms'), '.2f')}"
            f" | {_cell(m.get('train_time_s'), '.1f')} | {_cell(m.get('pre_quant_val_bpb'), '.8f')}"
            f" | {_cell(m.get('roundtrip_val_bpb'), '.8f')} | {_cell(m.get('sliding_val_bpb'), '.8f')}"
            f" | {_cell(m.get('val_bpb'), '.8f')} | {_cell(m.get('artifact_bytes'), ',')}"
            f" | {_cell(m.get('bytes_total'), ',')} | {_cell(m.get('eval_time_s'), '.1f')} |"
        )
    loss_std = f" ± {sub['val_loss_std']:.8f}" if sub["val_loss_std"] is not None else ""
    out += [
        "",
        f"Mean over {n} seed(s): val_bpb {sub['val_bpb']:.8f}{std_txt}; val_loss {sub['val_loss']:.8f}{loss_std}"
        + (f"; pre-quant val_bpb {sub['pre_quant_val_bpb']:.8f}" if sub["pre_quant_val_bpb"] is not None else "")
        + ".",
        f"Code: {_cell(sub['bytes_code'], ',')} bytes. The score is val_bpb of the model reloaded from the compressed"
        " artifact; the logs `train_seed<N>.log` hold the exact figures.",
        "",
    ]
    if comparison is not None:
        b = comparison["b"]
        out += [
            "## Comparison",
            "",
            f"Against `{b['dir']}` ({b['name']}, {b['n']} seed(s), mean val_bpb {b['mean_bpb']:.8f}):",
            "",
            "```",
            format_comparison(comparison),
            "```",
            "",
        ]
    out += ["## Hyperparameters", ""]
    if hparams:
        out += ["| Variable | Value |", "|---|---|"]
        out += [f"| `{k}` | `{_env_value(v)}` |" for k, v in sorted(hparams.items())]
    else:
        out.append("The script's defaults (no overrides).")
    out += ["", "## Hardware and versions", ""]
    env_rows = [
        ("Hardware", sub["hardware"]),
        ("GPU", environment.get("gpu")),
        ("GPU count", environment.get("gpu_count")),
        ("Processes per node", nproc),
        ("Driver", environment.get("driver")),
        ("Python", environment.get("python")),
        ("PyTorch", environment.get("torch")),
        ("CUDA", environment.get("cuda")),
        ("FlashAttention 3", environment.get("fa3")),
        ("Attention backend", sub.get("attention_backend")),
        ("Platform", environment.get("platform")),
        ("Git commit", environment.get("git_commit")),
    ]
    out += [f"- {label}: {value}" for label, value in env_rows if value is not None]
    if environment.get("nvidia_smi"):
        out += [
            "",
            "<details><summary>nvidia-smi</summary>",
            "",
            "```",
            environment["nvidia_smi"].rstrip(),
            "```",
            "",
            "</details>",
        ]
    seeds_txt = ", ".join(str(s["seed"]) for s in seeds)
    out += [
        "",
        "## Reproducing",
        "",
        "```bash",
        "pip install -r requirements.txt",
        reproduce_command(hparams, nproc, seeds[0]["seed"]),
        "```",
        "",
        f"Run it once per seed, with `SEED` set to each of: {seeds_txt}.",
        "",
        "## Files",
        "",
        "- `train_gpt.py`: the training, quantization and evaluation script, exactly as run",
        "- "
        + ", ".join(f"`train_seed{s['seed']}.log`" for s in seeds)
        + ": each seed's train, quantize and eval logs, concatenated as written",
        "- `submission.json`: leaderboard metadata",
        "- `requirements.txt`: Python requirements",
        "",
    ]
    return "\n".join(out)


def _install(tmp: Path, out: Path) -> None:
    """Rename the finished folder ``tmp`` to ``out``, replacing an older ``out`` only after the new one is in place."""
    if not out.exists():
        os.replace(tmp, out)
        return
    old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
    os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def build_record(
    out_dir: str | os.PathLike,
    seed_dirs: list[Path],
    script: Path,
    environment: dict,
    settings: dict,
    hparams: dict,
    nproc: int,
) -> dict:
    """Write the record folder ``out_dir`` from per-seed result folders; returns the submission.json contents.

    Raises ValueError (leaving any previous ``out_dir`` untouched) if the finished folder fails ``check_record``.
    """
    out = Path(out_dir)
    if not seed_dirs:
        raise ValueError("no seed folders given")
    seeds = [_load_seed(Path(d)) for d in seed_dirs]
    numbers = [s["seed"] for s in seeds]
    if len(set(numbers)) != len(numbers):
        raise ValueError(f"duplicate seeds: {numbers}")
    script = Path(script)
    if not script.is_file():
        raise FileNotFoundError(f"{script}: file not found")
    environment = dict(environment or {})
    hparams = dict(hparams or {})

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        shutil.copyfile(script, tmp / "train_gpt.py")
        if sha256_file(tmp / "train_gpt.py") != sha256_file(script):
            raise RuntimeError(f"copy of {script} differs from the original")
        for s in seeds:
            write_bytes(tmp / f"train_seed{s['seed']}.log", s["log"])
        requirements = [str(r) for r in settings.get("requirements") or []]
        write_text(tmp / "requirements.txt", "".join(f"{r}\n" for r in requirements))
        sub = _submission(settings, environment, seeds, nproc)
        comparison = None
        if settings.get("reference"):
            write_json(tmp / "submission.json", sub)  # compare_records reads the candidate folder
            comparison = compare_records(tmp, settings["reference"])
            comparison["a"]["dir"] = str(out)
            sub["comparison"] = {
                "reference": str(settings["reference"]),
                "reference_val_bpb": _round(comparison["b"]["mean_bpb"]),
                "improvement_bpb": _round(comparison["improvement_bpb"]),
                "improvement_nats": _round(comparison["improvement_nats"]),
                "welch_t": comparison["t"],
                "welch_df": comparison["df"],
                "p_value_reason": comparison["p_value_reason"],
            }
            sub["p_value"] = comparison["p_value"]
        write_json(tmp / "submission.json", sub)
        write_text(tmp / "README.md", _readme(sub, settings, environment, seeds, hparams, nproc, comparison))

        problems = check_record(
            tmp,
            min_seeds=int(settings.get("min_seeds", 3)),
            cap_bytes=ARTIFACT_CAP_BYTES,
            train_budget_s=TRAIN_BUDGET_S,
            eval_budget_s=EVAL_BUDGET_S,
            enforce_time=not is_non_record(settings),
        )
        if problems:
            raise ValueError(f"record {out} fails its checks:\n{describe(problems)}")
        _install(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return sub


def _json_arg(value: str) -> dict:
    """A JSON object given inline or as the path of a JSON file."""
    text = value.strip()
    if text.startswith("{"):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"not valid JSON: {e}") from None
        if not isinstance(obj, dict):
            raise ValueError("expected a JSON object")
        return obj
    return read_json(value)


def _cmd_record(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    sub = build_record(
        args.out,
        [run_dir / f"seed_{s}" for s in args.seeds],
        Path(args.script),
        read_json(args.environment),
        _json_arg(args.settings_json),
        _json_arg(args.hparams_json),
        args.nproc,
    )
    print(f"wrote {args.out}: {len(sub['seeds'])} seed(s), val_bpb {sub['val_bpb']}, bytes_total {sub['bytes_total']}")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    problems = check_record(
        args.record_dir,
        min_seeds=args.min_seeds,
        enforce_time=not args.no_time_limits,
        require_script=not args.no_script,
    )
    for p in problems:
        print(p)
    if problems:
        return 1
    by_seed, _, _ = seed_logs(args.record_dir)
    print(f"OK: {args.record_dir} ({sum(1 for _, i in by_seed.values() if i['score'] is not None)} seeds)")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    print(format_comparison(compare_records(args.a, args.b)))
    return 0


def register(subparsers) -> None:
    """Add the ``record``, ``check`` and ``compare`` subcommands."""
    p = subparsers.add_parser("record", help="assemble a record folder from per-seed results")
    p.add_argument("--run-dir", required=True, help="results/<run>, holding seed_<N>/ folders")
    p.add_argument("--seeds", required=True, nargs="+", type=int)
    p.add_argument("--script", required=True, help="the training script (becomes train_gpt.py)")
    p.add_argument("--environment", required=True, help="environment JSON file")
    p.add_argument("--settings-json", required=True, help="record settings: a JSON object or a JSON file")
    p.add_argument("--hparams-json", required=True, help="hyperparameters (env var -> value): JSON object or file")
    p.add_argument("--nproc", required=True, type=int, help="processes per node the training ran with")
    p.add_argument("--out", required=True, help="the record folder to write")
    p.set_defaults(func=_cmd_record)

    p = subparsers.add_parser("check", help="check a record folder against the rules and its logs")
    p.add_argument("record_dir")
    p.add_argument("--min-seeds", type=int, default=3)
    p.add_argument("--no-time-limits", action="store_true", help="do not enforce the train/eval time budgets")
    p.add_argument("--no-script", action="store_true", help="accept a folder without train_gpt.py")
    p.set_defaults(func=_cmd_check)

    p = subparsers.add_parser("compare", help="compare two record folders (A: candidate, B: reference)")
    p.add_argument("a")
    p.add_argument("b")
    p.set_defaults(func=_cmd_compare)
