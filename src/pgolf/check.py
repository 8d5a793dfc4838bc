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
- ``seed_results[s].artifact_bytes`` may be the logged total (upstream usage) or the logged model size (ours); its
  ``steps``, ``train_time_s``, ``eval_time_s``, ``step_avg_ms`` (only where the log prints ``step_avg``: the 1.0611
  record's figures are not train_time / steps) and ``pre_quant_val_bpb`` must agree with the seed's log;
- ``pre_quant_val_bpb``/``pre_quant_val_loss``, like the score, are the mean over seeds or one seed's value;
  ``val_bpb_std``/``val_loss_std`` the sample or the population std of the seeds' scores (the 1.0611 record reports
  the population std);
- a run stopped by the wallclock cap may overshoot the train budget by the step in flight: up to ``overshoot_steps``
  average steps (upstream accepted 600099 ms at 85 ms/step);
- how many seeds are needed is ``min_seeds`` (the naive baseline has one);
- where submission.json says what the data set was (``data``, written by ``pgolf record``), a log that says what its
  val_bpb counted (``val_bytes:`` lines, an upstream CaseOps script's ``caseops_enabled``) must have counted the
  validation byte sidecar when the data set has one and the tokenizer's pieces when it has none.

Number tolerance: a value with d decimals in submission.json must be within ``10**-d`` of the logs, at most 1e-4 (a
value rounded to 4 decimals) and at least 2e-8 (8-decimal values averaged over seeds), or within the resolution the log
printed its value with (times); byte counts and steps must match exactly.

README.md is held to the same logs: its headline ``**val_bpb = X**`` (or ``**val_bpb: X**``) must be the mean over
seeds or one seed's score, and every markdown table with a ``Seed`` column is read row by row (a ``Mean`` row against
the mean of the rows above it). Columns are recognised by their header: steps, step average (only where the log
itself prints ``step_avg``), train time, eval time (``(ms)``/``(min)`` in the header, else seconds), pre-quant,
roundtrip / post-quant, sliding, TTT and plain val_bpb / val_loss / score columns, artifact bytes (the logged total or
model size) and total bytes; other columns, and cells that are not plain numbers, are not checked. A README number
with d decimals must be within ``10**-d`` of the logs (at least 2e-8); steps and bytes of a seed row exactly.
"""

from __future__ import annotations

import math
import os
import re
import statistics
from pathlib import Path

from pgolf.fsio import read_json
from pgolf.logs import best_of_kind, parse_log

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
        problems += _check_byte_source(sub, all_logs)
    if (record_dir / "README.md").is_file():
        problems += check_readme((record_dir / "README.md").read_text(encoding="utf-8", errors="replace"), by_seed)
    return problems


def _check_byte_source(sub: dict, all_logs: list) -> list[str]:
    """val_bpb must count the bytes its data set calls for: with a validation byte sidecar (submission.json
    ``data.val_bytes_sidecar``, e.g. CaseOps text, whose pieces are not the original bytes) the sidecar's, without
    one the tokenizer pieces'. Checked for the logs that say what they counted (``parse_log``'s ``val_bytes``)."""
    data = sub.get("data")
    if not isinstance(data, dict) or "val_bytes_sidecar" not in data:
        return []
    want = "sidecar" if data["val_bytes_sidecar"] else "pieces"
    names = {"sidecar": "the validation byte sidecar", "pieces": "the tokenizer's pieces"}
    return [
        f"{path.name}: val_bpb counted the bytes of {names[info['val_bytes']]}, but the data set"
        f" ({data.get('name')}) calls for {names[want]} (submission.json data.val_bytes_sidecar)"
        for path, info in all_logs
        if info.get("val_bytes") not in (None, want)
    ]


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
        calib = info.get("calib_ms") or 0.0
        ms += calib  # Hessian collection reads training data: it counts against the training budget
        allowance = 0.0
        if info["stopped_early"] and info["steps"]:
            allowance = overshoot_steps * ms / info["steps"]
        if ms > train_budget_s * 1000 + allowance:
            extra = f" (+{allowance:.0f} ms for the step in flight at the cap)" if allowance else ""
            extra += f" (incl. {calib:.0f} ms of GPTQ Hessian collection)" if calib else ""
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
    problems += _check_spread(sub, scored)

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
        if entry.get("steps") is not None and info["steps"] is not None and entry["steps"] != info["steps"]:
            problems.append(f"{where}.steps {entry['steps']} disagrees with the log ({info['steps']})")
        logged = {
            "train_time_s": None if info["train_time_ms"] is None else info["train_time_ms"] / 1000.0,
            "eval_time_s": info["eval_time_s"],
            "step_avg_ms": info["step_avg_ms"] if info["step_avg_logged"] else None,  # not a derived average
            "pre_quant_val_bpb": (info["pre_quant"] or {}).get("val_bpb"),
        }
        for field, value in logged.items():
            if entry.get(field) is not None and value is not None:
                if not _is_number(entry[field]) or not _close_to_log(entry[field], value):
                    problems.append(f"{where}.{field} {entry[field]} disagrees with the log ({value})")
    return problems


def _close_to_log(submitted: float, logged: float) -> bool:
    """``close``, also allowing the resolution the log printed ``logged`` with (``total_eval_time:60.0s``,
    ``train_time:240259ms``): a submission may carry a time more precisely than its log."""
    resolution = 10.0 ** -_decimals(logged)
    return abs(float(submitted) - float(logged)) <= max(tolerance(submitted), resolution) * (1 + 1e-9) + 1e-12


def _check_spread(sub: dict, scored: dict[int, dict]) -> list[str]:
    """submission.json's pre-quant figures (the mean over seeds or one seed's) and stds (sample or population: upstream
    records use both) against the logs."""
    problems = []
    pre = [i["pre_quant"] for i in scored.values() if i["pre_quant"] is not None]
    for key in ("pre_quant_val_bpb", "pre_quant_val_loss"):
        metric = key.removeprefix("pre_quant_")
        if _is_number(sub.get(key)) and pre and len(pre) == len(scored):
            values = [p[metric] for p in pre]
            options = [sum(values) / len(values), *values]
            if not any(close(sub[key], v) for v in options):
                problems.append(
                    f"submission.json: {key} {sub[key]} matches neither the mean over seeds ({options[0]:.8f}) nor "
                    f"any seed's logged value ({', '.join(str(v) for v in values)})"
                )
    for key in ("val_bpb_std", "val_loss_std"):
        metric = key.removesuffix("_std")
        if _is_number(sub.get(key)) and len(scored) >= 2:
            values = [i["score"][metric] for i in scored.values()]
            sample, population = statistics.stdev(values), statistics.pstdev(values)
            if not (close(sub[key], sample) or close(sub[key], population)):
                problems.append(
                    f"submission.json: {key} {sub[key]} is neither the sample ({sample:.8f}) nor the population "
                    f"({population:.8f}) std of the logged seeds"
                )
    return problems


_HEADLINE = re.compile(r"\*\*\s*val_bpb\s*[:=]\s*(?P<x>\d+\.\d+)\s*\*\*")
_CELL_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")
_SKIP_HEADER = re.compile(r"delta|diff|improv|\bvs\b|gain|std|reference|previous|baseline|leader", re.IGNORECASE)


def _text_decimals(text: str) -> int:
    return len(text.split(".", 1)[1]) if "." in text else 0


def _readme_close(text: str, logged: float, exact: bool) -> bool:
    """Whether a README number (as written) agrees with a logged value: exactly, or within one unit in its last
    decimal (at least 2e-8)."""
    if exact:
        return float(text) == float(logged)
    tol = max(10.0 ** -_text_decimals(text), 2e-8)
    return abs(float(text) - float(logged)) <= tol * (1 + 1e-9) + 1e-12


def _readme_column(header: str):
    """(label, getter(info) -> float | None | set, integer?) for a results-table column header; None if not checked."""
    h = re.sub(r"[*`_]", " ", header).lower()
    h = re.sub(r"\s+", " ", h).strip()
    if not h or _SKIP_HEADER.search(h):
        return None
    metric = "val_loss" if "loss" in h else "val_bpb"

    def scaled(ms: float | None) -> float | None:
        if ms is None:
            return None
        if "(ms)" in h or h.endswith(" ms"):
            return ms
        if "(min)" in h or "(m)" in h:
            return ms / 60_000.0
        return ms / 1000.0

    if h in ("steps", "step") or h.startswith("steps "):
        return "steps", lambda i: i["steps"], True
    if "ms/step" in h or "step avg" in h or "step time" in h:
        return "step avg", lambda i: i["step_avg_ms"] if i["step_avg_logged"] else None, False
    if "train time" in h or "training time" in h:
        return "train time", lambda i: scaled(i["train_time_ms"]), False
    if "eval time" in h:
        return "eval time", lambda i: scaled(None if i["eval_time_s"] is None else i["eval_time_s"] * 1000.0), False
    if "artifact" in h:
        return "artifact bytes", lambda i: {i["bytes_total"], i["model_bytes"]} - {None} or None, True
    if "total" in h and ("byte" in h or "size" in h):
        return "total bytes", lambda i: i["bytes_total"], True
    if re.search(r"pre[- ]?quant", h):
        return f"pre-quant {metric}", lambda i: (i["pre_quant"] or {}).get(metric), False
    if "roundtrip" in h or re.search(r"post[- ]?quant", h):
        return f"roundtrip {metric}", lambda i: (i["roundtrip"] or {}).get(metric), False
    for kind in ("sliding", "ttt"):
        if kind in h:
            return f"{kind} {metric}", lambda i, k=kind: (best_of_kind(i, k) or {}).get(metric), False
    if "bpb" in h or "loss" in h or h == "score":
        return f"score {metric}", lambda i: (i["score"] or {}).get(metric), False
    return None


def _tables(text: str) -> list[list[list[str]]]:
    """Markdown tables of a text: each a list of rows of stripped cells (the ``---`` separator row dropped)."""
    tables, current = [], []
    for line in text.splitlines() + [""]:
        stripped = line.strip()
        if stripped.startswith("|"):
            cells = [c.strip() for c in stripped.strip("|").split("|")]
            if not all(re.fullmatch(r":?-+:?", c) for c in cells if c):
                current.append(cells)
        elif current:
            tables.append(current)
            current = []
    return tables


def _number(cell: str) -> str | None:
    cleaned = re.sub(r"[*`\s,]", "", cell)
    return cleaned if _CELL_NUMBER.fullmatch(cleaned) else None


def check_readme(text: str, by_seed: dict[int, tuple[Path, dict]]) -> list[str]:
    """Problems where README.md's headline val_bpb or its per-seed results tables disagree with the logs."""
    problems = []
    scored = {s: i for s, (_, i) in by_seed.items() if i["score"] is not None}
    if scored and (m := _HEADLINE.search(text)):
        shown = m.group("x")
        n = len(scored)
        options = [sum(i["score"]["val_bpb"] for i in scored.values()) / n]
        options += [i["score"]["val_bpb"] for i in scored.values()]
        if not any(_readme_close(shown, x, exact=False) for x in options):
            seeds_txt = ", ".join(f"{s}: {i['score']['val_bpb']}" for s, i in scored.items())
            problems.append(
                f"README.md: headline val_bpb {shown} matches neither the mean over seeds ({options[0]:.8f}) nor any "
                f"seed's logged value ({seeds_txt})"
            )
    for table in _tables(text):
        header = [re.sub(r"[*`]", "", c).strip().lower() for c in table[0]]
        if "seed" not in header:
            continue
        seed_col = header.index("seed")
        columns = {j: col for j, h in enumerate(table[0]) if j != seed_col and (col := _readme_column(h))}
        seen: dict[int, list[set]] = {j: [] for j in columns}  # logged values of the seed rows, per column
        for row in table[1:]:
            if len(row) <= seed_col:
                continue
            key = re.sub(r"[*`\s]", "", row[seed_col])
            if re.fullmatch(r"\d+", key):
                seed = int(key)
                if seed not in by_seed:
                    problems.append(f"README.md: the results table names seed {seed} but there is no log for it")
                    continue
                info = by_seed[seed][1]
                for j, (label, getter, integer) in columns.items():
                    cell = _number(row[j]) if j < len(row) else None
                    logged = getter(info)
                    if logged is None:
                        continue
                    values = logged if isinstance(logged, set) else {logged}
                    seen[j].append(values)
                    if cell is not None and not any(_readme_close(cell, v, exact=integer) for v in values):
                        expected = " or ".join(str(v) for v in sorted(values))
                        problems.append(f"README.md: seed {seed} {label} {cell} disagrees with the log ({expected})")
            elif key.lower() == "mean":
                for j, (label, _, _) in columns.items():
                    cell = _number(row[j]) if j < len(row) else None
                    if cell is None or not seen[j]:
                        continue
                    # set-valued columns (artifact = total or model bytes): the mean of either reading
                    avgs = {sum(pick(v) for v in seen[j]) / len(seen[j]) for pick in (min, max)}
                    if not any(_readme_close(cell, avg, exact=False) for avg in avgs):
                        expected = " or ".join(f"{avg:.8g}" for avg in sorted(avgs))
                        problems.append(
                            f"README.md: mean {label} {cell} disagrees with the mean of the logged seeds ({expected})"
                        )
    return problems


def describe(problems: list[str]) -> str:
    """Problems as an indented bullet list (for error messages)."""
    return "\n".join(f"  - {p}" for p in problems)
