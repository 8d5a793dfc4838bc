"""Check a record folder (ours or upstream) against the challenge's rules and its own logs.

Seed <-> log mapping: ``train_seed<N>.log`` is seed N; any other ``*.log`` (e.g. ``train.log``) takes the seed it logs
(``seed:N`` line, ``Hyperparameters`` block or a ``pgolf_summary``), else the single seed submission.json names. A log
whose seed is already covered by a ``train_seed<N>.log`` is a copy and is not counted twice; every log is still checked
for size and time.

Rules that upstream records legitimately vary on are handled by rule, not by folder name:

- submission.json's ``val_bpb``/``val_loss`` must equal the mean over seeds OR one seed's logged score (the 1.1248
  record reports its best seed);
- ``bytes_total`` must equal one seed's logged total; ``bytes_code`` (optional: the 1.0611 record has none) one seed's
  logged code size;
- ``seed_results[s].artifact_bytes`` may be the logged total (upstream usage) or the logged model size (ours);
- a run stopped by the wallclock cap may overshoot the train budget by the step in flight: up to ``overshoot_steps``
  average steps (upstream accepted 600099 ms at 85 ms/step);
- how many seeds are needed is ``min_seeds`` (the naive baseline has one).

Number tolerance: a value with d decimals in submission.json must be within ``10**-d`` of the logs, at most 1e-4 (a
value rounded to 4 decimals) and at least 2e-8 (8-decimal values averaged over seeds); byte counts must match exactly.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

from pgolf.fsio import read_json
from pgolf.logs import parse_log

REQUIRED_KEYS = ("author", "github_id", "name", "date", "val_bpb", "val_loss", "bytes_total", "blurb")
_SEED_LOG = re.compile(r"^train_seed(\d+)\.log$")


def _decimals(value: float) -> int:
    """Decimals of a number as JSON wrote it (repr of the float)."""
    text = repr(float(value))
    if "e" in text or "E" in text:
        mantissa, exp = text.lower().split("e")
        frac = mantissa.split(".")[1] if "." in mantissa else ""
        return max(0, len(frac.rstrip("0")) - int(exp))
    frac = text.split(".")[1] if "." in text else ""
    return len(frac.rstrip("0"))


def tolerance(value: float) -> float:
    """How far a submitted bpb/loss may be from the logs: one unit in its last decimal, within [2e-8, 1e-4]."""
    return max(min(1e-4, 10.0 ** -_decimals(value)), 2e-8)


def close(submitted: float, logged: float) -> bool:
    """Whether ``submitted`` agrees with ``logged`` within ``tolerance(submitted)``."""
    return abs(float(submitted) - float(logged)) <= tolerance(submitted) * (1 + 1e-9) + 1e-12


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _submission_seeds(sub: dict) -> list[int]:
    """Seeds submission.json names (``seeds``, ``seed_results`` keys, ``seed``), deduplicated, in order."""
    found: list[int] = []
    candidates = list(sub.get("seeds") or []) + list((sub.get("seed_results") or {}).keys())
    if sub.get("seed") is not None:
        candidates.append(sub["seed"])
    for s in candidates:
        try:
            n = int(s)
        except (TypeError, ValueError):
            continue
        if n not in found:
            found.append(n)
    return found


def read_submission(record_dir: str | os.PathLike) -> dict:
    """submission.json of a record folder, or {} when it is missing or unreadable."""
    try:
        return read_json(Path(record_dir) / "submission.json")
    except (FileNotFoundError, ValueError):
        return {}


def seed_logs(record_dir: str | os.PathLike) -> tuple[dict[int, tuple[Path, dict]], list[tuple[Path, dict]], list[str]]:
    """Map seeds to their parsed logs.

    Returns (``{seed: (log path, parsed)}``, every log as (path, parsed), problems found while mapping).
    """
    record_dir = Path(record_dir)
    sub = read_submission(record_dir)
    named_seeds = _submission_seeds(sub)
    logs = sorted(p for p in record_dir.glob("*.log") if p.is_file())
    parsed = [(p, parse_log(p)) for p in logs]
    problems: list[str] = []
    by_seed: dict[int, tuple[Path, dict]] = {}
    others: list[tuple[Path, dict]] = []
    for path, info in parsed:
        m = _SEED_LOG.match(path.name)
        if m:
            seed = int(m.group(1))
            if info["seed"] is not None and info["seed"] != seed:
                problems.append(f"{path.name}: the file name says seed {seed} but the log says seed {info['seed']}")
            by_seed[seed] = (path, info)
        else:
            others.append((path, info))
    for path, info in others:
        seed = info["seed"]
        if seed is None and len(named_seeds) == 1 and len(logs) == 1:
            seed = named_seeds[0]
        if seed is not None and seed not in by_seed:
            by_seed[seed] = (path, info)
    return dict(sorted(by_seed.items())), parsed, problems


def check_record(
    record_dir: str | os.PathLike,
    min_seeds: int = 3,
    cap_bytes: int = 16_000_000,
    train_budget_s: float = 600,
    eval_budget_s: float = 600,
    enforce_time: bool = True,
    *,
    require_script: bool = True,
    overshoot_steps: float = 2.0,
    max_file_bytes: int = 50_000_000,
) -> list[str]:
    """Problems with a record folder, one line each; an empty list means it passes.

    ``require_script=False`` accepts a folder without ``train_gpt.py`` (the upstream fixtures had theirs removed).
    """
    record_dir = Path(record_dir)
    if not record_dir.is_dir():
        return [f"{record_dir}: not a folder"]
    problems: list[str] = []

    for name in ("README.md", "submission.json") + (("train_gpt.py",) if require_script else ()):
        if not (record_dir / name).is_file():
            problems.append(f"missing {name}")
    for path in sorted(record_dir.rglob("*")):
        if path.is_file() and path.stat().st_size > max_file_bytes:
            problems.append(
                f"{path.relative_to(record_dir)}: {path.stat().st_size} bytes, "
                f"over the {max_file_bytes}-byte file limit"
            )

    sub: dict = {}
    if (record_dir / "submission.json").is_file():
        try:
            sub = read_json(record_dir / "submission.json")
        except ValueError as e:
            problems.append(f"submission.json: {e}")
        for key in REQUIRED_KEYS:
            if sub and key not in sub:
                problems.append(f"submission.json: missing key {key!r}")

    by_seed, all_logs, map_problems = seed_logs(record_dir)
    problems += map_problems
    if not all_logs:
        problems.append("no training log (*.log)")

    for path, info in all_logs:
        problems += _check_run(path.name, info, cap_bytes, train_budget_s, eval_budget_s, enforce_time, overshoot_steps)

    script = record_dir / "train_gpt.py"
    if script.is_file():
        size = script.stat().st_size
        for path, info in all_logs:
            logged = info["code_bytes_uncompressed"]
            if logged is not None and logged != size:
                problems.append(f"{path.name}: logs code size {logged} bytes but train_gpt.py is {size} bytes")

    scored = {seed: info for seed, (_, info) in by_seed.items() if info["score"] is not None}
    if len(scored) < min_seeds:
        listed = ", ".join(str(s) for s in scored) or "none"
        problems.append(f"only {len(scored)} distinct seed(s) with a score ({listed}); at least {min_seeds} required")
    if sub:
        problems += _check_submission(sub, by_seed, scored, cap_bytes)
    return problems


def _check_run(
    name: str,
    info: dict,
    cap_bytes: int,
    train_budget_s: float,
    eval_budget_s: float,
    enforce_time: bool,
    overshoot_steps: float,
) -> list[str]:
    """Problems of one log: no score, artifact over the cap, train or eval time over budget."""
    problems = []
    if info["score"] is None:
        problems.append(f"{name}: no final val_bpb line")
    total = info["bytes_total"]
    if total is None and info["model_bytes"] is not None and info["code_bytes"] is not None:
        total = info["model_bytes"] + info["code_bytes"]
    if total is None:
        problems.append(f"{name}: no artifact size logged (Serialized model / Total submission size)")
    elif total > cap_bytes:
        problems.append(f"{name}: code + model = {total} bytes, over the {cap_bytes}-byte cap")
    if not enforce_time:
        return problems
    ms = info["train_time_ms"]
    if ms is None:
        problems.append(f"{name}: no train time logged")
    else:
        allowance = 0.0
        if info["stopped_early"] and info["steps"]:
            allowance = overshoot_steps * ms / info["steps"]
        if ms > train_budget_s * 1000 + allowance:
            extra = f" (+{allowance:.0f} ms for the step in flight at the cap)" if allowance else ""
            problems.append(f"{name}: train time {ms:.0f} ms exceeds the {train_budget_s:g} s budget{extra}")
    eval_s = info["eval_time_s"]
    if eval_s is not None and eval_s > eval_budget_s:
        problems.append(f"{name}: eval time {eval_s:.1f} s exceeds the {eval_budget_s:g} s budget")
    return problems


def _check_submission(sub: dict, by_seed: dict[int, tuple[Path, dict]], scored: dict[int, dict], cap: int) -> list[str]:
    """Problems where submission.json disagrees with the logs."""
    problems = []
    for key in ("val_bpb", "val_loss", "bytes_total"):
        if key in sub and not _is_number(sub[key]):
            problems.append(f"submission.json: {key} is not a number ({sub[key]!r})")
    if _is_number(sub.get("bytes_total")) and sub["bytes_total"] > cap:
        problems.append(f"submission.json: bytes_total {sub['bytes_total']} is over the {cap}-byte cap")

    for seed in _submission_seeds(sub):
        if seed not in by_seed:
            problems.append(f"submission.json names seed {seed} but there is no log for it")

    if scored and _is_number(sub.get("val_bpb")):
        n = len(scored)
        options = {
            "the mean over seeds": (
                sum(i["score"]["val_bpb"] for i in scored.values()) / n,
                sum(i["score"]["val_loss"] for i in scored.values()) / n,
            )
        }
        for seed, info in scored.items():
            options[f"seed {seed}"] = (info["score"]["val_bpb"], info["score"]["val_loss"])
        matches = [label for label, (bpb, _) in options.items() if close(sub["val_bpb"], bpb)]
        if not matches:
            mean_bpb = options["the mean over seeds"][0]
            seeds_txt = ", ".join(f"{s}: {i['score']['val_bpb']}" for s, i in scored.items())
            problems.append(
                f"submission.json: val_bpb {sub['val_bpb']} matches neither the mean over seeds ({mean_bpb:.8f}) "
                f"nor any seed's logged value ({seeds_txt})"
            )
        elif _is_number(sub.get("val_loss")) and not any(close(sub["val_loss"], options[m][1]) for m in matches):
            expected = ", ".join(f"{options[m][1]:.8f} ({m})" for m in matches)
            problems.append(f"submission.json: val_loss {sub['val_loss']} disagrees with the logs: expected {expected}")

    totals = {s: i["bytes_total"] for s, (_, i) in by_seed.items() if i["bytes_total"] is not None}
    if _is_number(sub.get("bytes_total")) and totals and sub["bytes_total"] not in totals.values():
        problems.append(
            f"submission.json: bytes_total {sub['bytes_total']} is no seed's logged total "
            f"({', '.join(f'{s}: {t}' for s, t in totals.items())})"
        )
    codes = {i["code_bytes"] for _, i in by_seed.values() if i["code_bytes"] is not None}
    if "bytes_code" in sub and codes and sub["bytes_code"] not in codes:
        problems.append(
            f"submission.json: bytes_code {sub['bytes_code']} disagrees with the logged code size "
            f"({', '.join(str(c) for c in sorted(codes))})"
        )

    results = sub.get("seed_results") or {}
    if not isinstance(results, dict):
        return problems + ["submission.json: seed_results is not an object"]
    for key, entry in results.items():
        try:
            seed = int(key)
        except (TypeError, ValueError):
            problems.append(f"submission.json: seed_results key {key!r} is not a seed")
            continue
        if seed not in by_seed or not isinstance(entry, dict):
            continue
        info = by_seed[seed][1]
        where = f"submission.json: seed_results[{key}]"
        score = info["score"]
        for metric in ("val_bpb", "val_loss"):
            if metric in entry and score is not None:
                if not _is_number(entry[metric]) or not close(entry[metric], score[metric]):
                    problems.append(f"{where}.{metric} {entry[metric]} disagrees with the log ({score[metric]})")
        if "artifact_bytes" in entry:
            allowed = {info["bytes_total"], info["model_bytes"]} - {None}
            if allowed and entry["artifact_bytes"] not in allowed:
                problems.append(
                    f"{where}.artifact_bytes {entry['artifact_bytes']} is neither the logged total nor the logged "
                    f"model size ({', '.join(str(a) for a in sorted(allowed))})"
                )
        if "bytes_total" in entry and info["bytes_total"] is not None and entry["bytes_total"] != info["bytes_total"]:
            problems.append(
                f"{where}.bytes_total {entry['bytes_total']} disagrees with the log ({info['bytes_total']})"
            )
    return problems


def describe(problems: list[str]) -> str:
    """Problems as an indented bullet list (for error messages)."""
    return "\n".join(f"  - {p}" for p in problems)
