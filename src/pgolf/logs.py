"""Parse Parameter Golf training logs: ours (with ``pgolf_summary`` lines) and the upstream formats.

Formats understood (unknown lines, NCCL/torchrun noise and ``\\r`` progress output are ignored):

- step lines, old style ``step:200/2000 train_loss:3.1234 train_time:12345ms step_avg:61.73ms`` and
  ``step:2000/2000 val_loss:2.1 val_bpb:1.25 train_time:...ms step_avg:...ms``; new style
  ``500/20000 train_loss: 2.5615 train_time: 0.8m tok/s: 8217810`` and ``4945/20000 val_loss: 2.3539 val_bpb: 1.0756``;
- ``stopping_early: wallclock_cap train_time:600046ms step:7061/9000`` (with or without spaces after the colons);
- metric lines ``<tag> val_loss:X val_bpb:Y [stride:64] [eval_time:6093ms]``, e.g. ``final_int8_zlib_roundtrip``,
  ``final_int6_sliding_window_exact``, ``quantized_ttt_phased``, ``diagnostic pre-quantization post-ema``
  (spaces in a tag become ``_``);
- sizes: ``Serialized model[ <fmt>]: N bytes``, ``Code size[ (compressed|uncompressed)]: N bytes``,
  ``Total submission size[ <fmt>]: N bytes``;
- ``total_eval_time:508.8s``, ``seed:42``, ``iterations:N`` in a header line, a ``Hyperparameters:`` block of
  indented ``key: value`` lines, and ``pgolf_summary {json}`` (one per stage of our own runs);
- other upstream layouts: a line prefix of a unix timestamp (``1776144163.319 quantized_ttt_phased ...``), tokens
  between the tag and ``val_loss`` (``final_sliding_window_eval_exact stride:64 val_loss:...``), ``=`` for ``:``
  (``ttt_sliding:done val_loss=2.0 val_bpb=1.1``), ``artifact:15.92MB ... code:70853`` (the compressed model in MB,
  the code in bytes: the total is read as model + code, uncertain by the MB rounding, ``bytes_total_resolution``),
  ``INT7+zlib model: N bytes | Total submission: N bytes``, ``Raw model: N bytes | Code: N bytes | Total: N``,
  ``INT4+fp8+brotli: 15.67MB model + 0.077MB code = 15.75/16.00MB`` (MB, with their rounding),
  a one-line ``key=value`` configuration dump (``seed=42``);
- calibration that reads training data after the timed loop, which counts as training time (``calib_ms``):
  ``gptq_hessians:... time:Xs`` (ours), ``GPTQ:collected 67 Hessians in 3.5s``, ``gptq:calibrated 66 layers in
  Xs`` and any ``... hessians ... in Xs`` line, unless the log says the calibration data was self-generated
  (``autoregressive`` / ``AR self-gen``: the model's own samples, no training data; those are listed in
  ``calib_selfgen``).

Every value read keeps the line it came from (``evidence``: {field: "line N: text"}), so a finding can quote it.

The score (``parse_log(...)["score"]``) is picked by this precedence, the last logged line winning within a class:

1. an ``_exact`` test-time-training or sliding-window line (tag contains ``ttt`` or ``sliding``);
2. a rounded TTT / sliding-window line;
3. an ``_exact`` roundtrip line (tag contains ``roundtrip``, or ``quantized`` without ``pre``);
4. a rounded roundtrip line;
5. the ``val_bpb``/``val_loss`` of a ``pgolf_summary`` (the last one carrying both), if no metric line exists.

Pre-quantization diagnostics (tags matching ``pre[-_]?quant``) never count as the score.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_RANK_PREFIX = re.compile(r"^\[(?:rank|default)\d+\]:\s*")
_TIME_PREFIX = re.compile(r"^\d{9,}(?:\.\d+)?\s+(?=\S)")  # a unix timestamp written before the message
_STEP = re.compile(r"^(?:step:\s*)?(\d+)/(\d+)\s+(.*)$")
_KV = re.compile(r"([A-Za-z_][\w/]*)[:=]\s*(" + _NUM + r")(ms|s|m)?(?![\w.])")
_METRIC = re.compile(
    r"^(?P<tag>[A-Za-z][\w+\-.:]*(?: [A-Za-z][\w+\-.]*)*?)(?P<pre>(?:\s+[A-Za-z_]\w*[:=]\S+)*?)"
    r"\s+val_loss[:=]\s*(?P<loss>" + _NUM + r"),?\s+val_bpb[:=]\s*(?P<bpb>" + _NUM + r")(?P<rest>.*)$"
)
_STOP = re.compile(r"^stopping_early:")
_CALIB_OURS = re.compile(r"^gptq_hessians:.*\btime:(" + _NUM + r")s\b")
_CALIB_IN = re.compile(r"^gptq:?\s?.*\b(?:hessians?|calibrated)\b.*\bin\s+(" + _NUM + r")s\b", re.IGNORECASE)
_SELFGEN = re.compile(r"autoregressive|self[-_ ]?gen|\bAR\b", re.IGNORECASE)
_SERIALIZED = re.compile(r"^Serialized model(?:\s+(?P<fmt>[^:]+?))?:\s*(?P<n>\d+)\s+bytes")
_CODE = re.compile(r"^Code size(?:\s*\((?P<kind>[^)]*)\))?:\s*(?P<n>\d+)\s+bytes")
_TOTAL = re.compile(r"^Total submission size(?:\s+(?P<fmt>[^:]+?))?:\s*(?P<n>\d+)\s+bytes")
_PIPE_SIZES = re.compile(
    r"^(?P<fmt>[\w+\-]+) model:\s*(?P<model>\d+) bytes\s*\|\s*Total submission:\s*(?P<total>\d+) bytes", re.IGNORECASE
)
_RAW_SIZES = re.compile(r"^Raw model:\s*(?P<model>\d+) bytes\s*\|\s*Code:\s*(?P<code>\d+) bytes\s*\|\s*Total:\s*(\d+)")
_MB_SUM = re.compile(
    r"^(?P<fmt>[\w+\-]+):\s*(?P<model>"
    + _NUM
    + r")MB model \+ (?P<code>"
    + _NUM
    + r")MB code = (?P<total>"
    + _NUM
    + r")/"
)
_ARTIFACT_MB = re.compile(r"^artifact:\s*(?P<mb>" + _NUM + r")MB\b.*\bcode:(?P<code>\d+)\b")
_TOTAL_EVAL = re.compile(r"^total_eval_time:\s*(" + _NUM + r")(ms|s)?\b")
_SEED = re.compile(r"^seed:\s*(\d+)\s*$")
_CONFIG_SEED = re.compile(r"(?:^|\s)seed=(\d+)(?:\s|$)")
_ITERATIONS = re.compile(r"(?:^|\s)iterations:\s*(\d+)\b")
_SUMMARY = re.compile(r"^pgolf_summary\s+(\{.*\})\s*$")
_HP_LINE = re.compile(r"^\s+([A-Za-z_]\w*):\s?(.*)$")
_PRE_QUANT = re.compile(r"pre[-_]?quant", re.IGNORECASE)
_VAL_BYTES = re.compile(r"^val_bytes:(sidecar|pieces)\b")
_TOKENIZER = re.compile(r"tokenizer_path[=:]\s*(\S+)")
_TOKENIZER_KIND = re.compile(r"tokenizer_kind=(\w+)")
_DATASET = re.compile(
    r"(?:^|\s)(?:data_path|datasets_dir)[=:]\s*(\S+)|^val_loader:shards pattern=(\S+)|^train_loader:dataset:(\S+)"
)
# What a run writes before its first training step (see ``log_start``).
_HEADER_MARKERS = re.compile(
    r"^(?:Running (?:Python|PyTorch)|Hyperparameters:|seed:\s*\d+|world_size:|model_params:|val_bpb:enabled|"
    r"train_loader:|val_loader:|=====|import |from \S+ import|\"\"\"|#!|[A-Za-z_]\w*=\S+ [A-Za-z_]\w*=\S+ |"
    r"warmup_step:|.*\biterations:\s*\d+)"
)

_UNIT_MS = {"ms": 1.0, "s": 1000.0, "m": 60_000.0, None: 1.0}


def clean_line(raw: str) -> str:
    """A log line without its ``[rank0]:`` / timestamp prefix and trailing whitespace."""
    line = _RANK_PREFIX.sub("", raw.rstrip())
    return _TIME_PREFIX.sub("", line)


def _read(source: str | os.PathLike) -> str:
    """Text of a log given as a path (``PathLike``, or a ``str`` naming an existing file) or as the text itself."""
    if isinstance(source, os.PathLike):
        return Path(source).read_text(encoding="utf-8", errors="replace")
    if "\n" not in source and "\r" not in source and len(source) < 4096:
        try:
            if Path(source).is_file():
                return Path(source).read_text(encoding="utf-8", errors="replace")
        except OSError:
            pass
    return source


def _kv(text: str) -> dict[str, tuple[float, str | None]]:
    """``key:value[unit]`` pairs of a line (value as float, unit or None)."""
    return {m.group(1): (float(m.group(2)), m.group(3)) for m in _KV.finditer(text)}


def _ms(pair: tuple[float, str | None]) -> float:
    value, unit = pair
    return value * _UNIT_MS[unit]


def metric_kind(tag: str) -> str:
    """Classify a metric tag: ``pre_quant``, ``ttt``, ``sliding``, ``roundtrip`` or ``other``."""
    low = tag.lower()
    if _PRE_QUANT.search(low):
        return "pre_quant"
    if "ttt" in low:
        return "ttt"
    if "sliding" in low:
        return "sliding"
    if "roundtrip" in low or "quantized" in low:
        return "roundtrip"
    return "other"


def _score_rank(tag: str) -> int | None:
    """Lower is preferred; None when the tag can never be the score."""
    kind = metric_kind(tag)
    exact = tag.endswith("_exact")
    if kind in ("ttt", "sliding"):
        return 0 if exact else 1
    if kind == "roundtrip":
        return 2 if exact else 3
    return None


def parse_log(source: str | os.PathLike) -> dict:
    """Parse one training log (path or text) into a dict; fields not logged are None / empty.

    Keys: ``steps`` (last step reached), ``iterations`` (planned), ``train_losses`` [(step, loss)],
    ``val_points`` [(step, val_loss, val_bpb)], ``train_time_ms`` (largest train_time logged: the final one),
    ``step_avg_ms`` (last logged, else train_time_ms / steps), ``stopped_early``, ``final`` ({tag: {"val_loss",
    "val_bpb", ["eval_time_ms"], ["stride"], ["eval_mode"]}} in log order; each line quoted in
    ``evidence["final:<tag>"]``), ``score`` ({"tag", "val_loss", "val_bpb"}, see the module docstring),
    ``roundtrip`` and ``pre_quant`` (same shape; pre_quant falls back to the last step
    validation), ``eval_times_ms`` ({tag: ms}), ``total_eval_time_s``, ``eval_time_s`` (total_eval_time, else an
    eval-stage pgolf_summary's ``eval_time_s``, else the sum of the metric lines' eval times), ``model_bytes``,
    ``raw_model_bytes``, ``code_bytes`` (compressed code when both are logged), ``code_bytes_uncompressed``,
    ``bytes_total``, ``bytes_total_resolution`` (0, or the bytes an ``artifact:15.92MB`` line may be off by),
    ``quant_format``, ``seed``, ``hyperparameters`` ({name: raw string}), ``summaries`` (pgolf_summary objects),
    ``step_avg_logged`` (whether ``step_avg_ms`` was logged rather than derived), ``calib_ms`` (time spent reading
    training data for calibration after the timed loop: training time too), ``calib_selfgen_ms`` (calibration on
    self-generated data, not counted), ``tokenizer`` (the tokenizer file's name or kind the log names), ``dataset``
    (the data folder it names),
    ``start`` (``log_start``), ``evidence`` ({field: "line N: text"}), ``val_bytes`` (what val_bpb's bytes were counted
    from: ``sidecar``, the validation byte sidecar, or ``pieces``, the tokenizer's; from our ``val_bytes:`` line or an
    upstream CaseOps script's ``caseops_enabled`` hyperparameter; None when the log does not say).
    """
    text = _read(source)
    out: dict = {
        "steps": None,
        "iterations": None,
        "train_losses": [],
        "val_points": [],
        "train_time_ms": None,
        "calib_ms": 0.0,
        "calib_selfgen_ms": 0.0,
        "step_avg_ms": None,
        "stopped_early": False,
        "final": {},
        "score": None,
        "roundtrip": None,
        "pre_quant": None,
        "eval_times_ms": {},
        "total_eval_time_s": None,
        "eval_time_s": None,
        "model_bytes": None,
        "raw_model_bytes": None,
        "code_bytes": None,
        "code_bytes_uncompressed": None,
        "bytes_total": None,
        "bytes_total_resolution": 0,
        "quant_format": None,
        "seed": None,
        "hyperparameters": {},
        "summaries": [],
        "step_avg_logged": False,
        "val_bytes": None,
        "tokenizer": None,
        "dataset": None,
        "start": None,
        "evidence": {},
    }
    ev = out["evidence"]
    times: list[tuple[float, int]] = []
    coarse: list[tuple[float, int]] = []  # train times logged in minutes: used only where no finer one is logged
    step_avgs: list[float] = []
    steps_seen: list[int] = []
    code_compressed = code_plain = None
    in_hparams = False
    selfgen = False  # the calibration lines seen so far follow a "self-generated data" line
    eval_mode = None  # ``final_eval_mode:sliding_window stride:64``: how the final lines that follow were evaluated
    lines = re.split(r"\r\n|\r|\n", text)
    first_step_line: int | None = None
    header_line: int | None = None

    def note(field: str, lineno: int, text: str) -> None:
        ev[field] = f"line {lineno}: {text.strip()[:200]}"

    def note_calib(lineno: int, text: str) -> None:
        key = "calib_selfgen" if selfgen else "calib"
        ev[key] = (ev[key] + "; " if key in ev else "") + f"line {lineno}: {text.strip()[:160]}"

    for lineno, raw in enumerate(lines, start=1):
        line = clean_line(raw)
        if in_hparams:
            m = _HP_LINE.match(line)
            if m:
                out["hyperparameters"][m.group(1)] = m.group(2).strip()
                if m.group(1) == "seed":
                    note("seed", lineno, line)
                continue
            in_hparams = False
        if not line.strip():
            continue
        if header_line is None and first_step_line is None and _HEADER_MARKERS.match(line.strip()):
            header_line = lineno
        if line.strip() == "Hyperparameters:":
            in_hparams = True
            continue
        if m := _SUMMARY.match(line):
            try:
                obj = json.loads(m.group(1))
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict):
                out["summaries"].append(obj)
            continue
        m = _STEP.match(line)
        kv = _kv(m.group(3)) if m else {}
        if m and kv.keys() & {"train_loss", "val_loss", "train_time"}:
            step, total = int(m.group(1)), int(m.group(2))
            if first_step_line is None:
                first_step_line = lineno
            steps_seen.append(step)
            out["iterations"] = total
            if "train_loss" in kv:
                out["train_losses"].append((step, kv["train_loss"][0]))
            if "val_loss" in kv and "val_bpb" in kv:
                out["val_points"].append((step, kv["val_loss"][0], kv["val_bpb"][0]))
            if "train_time" in kv and kv["train_time"][1] != "m":  # ``train_time: 10.0m`` is 6 s coarse
                times.append((_ms(kv["train_time"]), lineno))
            elif "train_time" in kv:
                coarse.append((_ms(kv["train_time"]), lineno))
            if "step_avg" in kv:
                step_avgs.append(_ms(kv["step_avg"]))
            if not out["steps"] or step >= out["steps"]:
                out["steps"] = step
                note("steps", lineno, line)
            continue
        if m := _CALIB_OURS.match(line):
            out["calib_ms"] += 1000.0 * float(m.group(1))
            note_calib(lineno, line)
            continue
        if re.match(r"^gptq:?", line, re.IGNORECASE) and _SELFGEN.search(line):
            selfgen = True
        if re.match(r"^gptq:?", line, re.IGNORECASE) and re.search(r"training data", line, re.IGNORECASE):
            selfgen = False
        if m := _CALIB_IN.match(line):
            if not re.search(r"\b(?:quantiz|compress|saved)", line, re.IGNORECASE) and "generated" not in line:
                out["calib_selfgen_ms" if selfgen else "calib_ms"] += 1000.0 * float(m.group(1))
                note_calib(lineno, line)
            continue
        if _STOP.match(line):
            out["stopped_early"] = True
            kv = _kv(line)
            if "train_time" in kv:
                times.append((_ms(kv["train_time"]), lineno))
            if sm := re.search(r"step:\s*(\d+)/(\d+)", line):
                steps_seen.append(int(sm.group(1)))
                out["iterations"] = int(sm.group(2))
            continue
        if m := re.match(r"^final_eval_mode:(\w+)", line):
            eval_mode = m.group(1)
            continue
        if m := _METRIC.match(line):
            tag = re.sub(r"\s+", "_", m.group("tag").strip())
            entry: dict = {"val_loss": float(m.group("loss")), "val_bpb": float(m.group("bpb"))}
            if eval_mode:
                entry["eval_mode"] = eval_mode
            kv = _kv(m.group("pre") + " " + m.group("rest"))
            if "eval_time" in kv:
                entry["eval_time_ms"] = _ms(kv["eval_time"])
                out["eval_times_ms"][tag] = entry["eval_time_ms"]
            if "stride" in kv:
                entry["stride"] = int(kv["stride"][0])
            note(f"final:{tag}", lineno, line)
            out["final"].pop(tag, None)  # re-insert so dict order is the order of the last occurrence
            out["final"][tag] = entry
            continue
        if m := _SERIALIZED.match(line):
            if m.group("fmt"):
                out["model_bytes"] = int(m.group("n"))
                out["quant_format"] = m.group("fmt").strip()
                note("model_bytes", lineno, line)
            else:
                out["raw_model_bytes"] = int(m.group("n"))
            continue
        if m := _CODE.match(line):
            kind = (m.group("kind") or "").strip().lower()
            if kind == "compressed":
                code_compressed = int(m.group("n"))
                note("code_bytes_compressed", lineno, line)
            else:
                code_plain = int(m.group("n"))
                note("code_bytes", lineno, line)
            continue
        if m := _TOTAL.match(line):
            if m.group("fmt"):
                out["bytes_total"] = int(m.group("n"))
                out["bytes_total_resolution"] = 0
                note("bytes_total", lineno, line)
            continue
        if m := _PIPE_SIZES.match(line):
            out["model_bytes"], out["bytes_total"] = int(m.group("model")), int(m.group("total"))
            out["quant_format"] = m.group("fmt")
            note("model_bytes", lineno, line)
            note("bytes_total", lineno, line)
            continue
        if m := _RAW_SIZES.match(line):
            out["raw_model_bytes"] = int(m.group("model"))
            code_plain = int(m.group("code"))
            continue
        if m := _MB_SUM.match(line.strip()):  # ``INT4+fp8+brotli: 15.67MB model + 0.077MB code = 15.75/16.00MB``
            total = m.group("total")
            out["model_bytes"] = round(float(m.group("model")) * 1_000_000)
            out["bytes_total"] = round(float(total) * 1_000_000)
            out["bytes_total_resolution"] = round(0.5 * 10.0 ** -_decimals_of(total) * 1_000_000)
            out["quant_format"] = m.group("fmt")
            note("bytes_total", lineno, line)
            note("model_bytes", lineno, line)
            continue
        if m := _ARTIFACT_MB.match(line):  # the compressed model in MB (rounded), the code in bytes
            mb, code = m.group("mb"), int(m.group("code"))
            if out["bytes_total"] is None or out["bytes_total_resolution"]:
                out["model_bytes"] = round(float(mb) * 1_000_000)
                out["bytes_total"] = out["model_bytes"] + code
                out["bytes_total_resolution"] = round(0.5 * 10.0 ** -_decimals_of(mb) * 1_000_000)
                note("bytes_total", lineno, line)
                note("model_bytes", lineno, line)
            code_plain = code
            note("code_bytes", lineno, line)
            continue
        if m := _TOTAL_EVAL.match(line):
            out["total_eval_time_s"] = float(m.group(1)) * (0.001 if m.group(2) == "ms" else 1.0)
            note("total_eval_time_s", lineno, line)
            continue
        if m := _SEED.match(line.strip()):
            out["seed"] = int(m.group(1))
            note("seed", lineno, line)
            continue
        if out["seed"] is None and (m := _CONFIG_SEED.search(line)) and line.count("=") >= 3:
            out["seed"] = int(m.group(1))
            note("seed", lineno, line)
        if out["tokenizer"] is None and (m := _TOKENIZER.search(line)) and "{" not in line and "(" not in line:
            out["tokenizer"] = Path(m.group(1).rstrip(",;")).name
        elif out["tokenizer"] is None and (m := _TOKENIZER_KIND.search(line)) and m.group(1) != "sentencepiece":
            out["tokenizer"] = f"{m.group(1)} (no tokenizer file)"
        if out["dataset"] is None and (m := _DATASET.search(line)) and "(" not in line:
            out["dataset"] = _dataset_name(m.group(1) or m.group(2) or m.group(3))
        if m := _VAL_BYTES.match(line):
            out["val_bytes"] = m.group(1)
            continue
        if out["iterations"] is None and (m := _ITERATIONS.search(line)):
            out["iterations"] = int(m.group(1))

    out["code_bytes"] = code_compressed if code_compressed is not None else code_plain
    out["code_bytes_uncompressed"] = code_plain
    if steps_seen:
        out["steps"] = max(steps_seen)
    if coarse and (not times or max(coarse)[0] - max(times)[0] > 60_000 * 0.05):
        times += coarse  # the finer lines end before the coarse ones do: the last coarse one is the final time
    if times:
        best = max(times)
        out["train_time_ms"] = best[0]
        note("train_time_ms", best[1], clean_line(lines[best[1] - 1]))
    if step_avgs:
        out["step_avg_ms"] = step_avgs[-1]
        out["step_avg_logged"] = True
    elif out["train_time_ms"] is not None and out["steps"]:
        out["step_avg_ms"] = out["train_time_ms"] / out["steps"]

    hp = out["hyperparameters"]
    if out["val_bytes"] is None and hp.get("caseops_enabled") in ("True", "False"):  # upstream CaseOps scripts
        out["val_bytes"] = "sidecar" if hp["caseops_enabled"] == "True" else "pieces"
    if out["seed"] is None and re.fullmatch(r"\d+", hp.get("seed", "")):
        out["seed"] = int(hp["seed"])
    if out["iterations"] is None and re.fullmatch(r"\d+", hp.get("iterations", "")):
        out["iterations"] = int(hp["iterations"])
    if out["tokenizer"] is None and hp.get("tokenizer_path"):
        out["tokenizer"] = Path(hp["tokenizer_path"]).name
    for key in ("datasets_dir", "data_path", "val_files", "train_files"):
        if out["dataset"] is None and hp.get(key):
            out["dataset"] = _dataset_name(hp[key])

    _pick_metrics(out)
    _apply_summaries(out)
    out["start"] = log_start(lines, out, header_line, first_step_line)
    return out


def _dataset_name(path: str) -> str:
    """The data set a path names: its folder (``.../fineweb10B_sp1024/fineweb_val_*.bin`` -> ``fineweb10B_sp1024``)."""
    p = Path(path.rstrip("/,;"))
    return (p.parent.name if any(c in p.name for c in "*?[") or p.suffix == ".bin" else p.name) or str(p)


def _decimals_of(text: str) -> int:
    return len(text.split(".", 1)[1]) if "." in text else 0


def log_start(lines: list[str], info: dict, header_line: int | None, first_step_line: int | None) -> dict:
    """Whether a log starts as a run's log does: {"ok", "why", "first"} (``first``: its first non-empty line).

    A training log is valid from its start when something the run writes before training (its header) comes before
    the first training step line. For our own logs (those with ``pgolf_summary`` lines) the header is the
    ``Running Python`` line and the ``Hyperparameters:`` block that ``train_gpt.py`` writes first; for upstream logs it
    is any of what their scripts write first: ``Running Python``/``PyTorch``, a ``Hyperparameters:`` block, a
    ``seed:N``, ``world_size:``, ``model_params:``, ``val_bpb:enabled``, ``train_loader:`` line, an ``iterations:N``
    header line, a ``key=value`` configuration dump, a ``warmup_step:`` line, or the copy of the script some logs begin
    with. A log that begins at a training step (``step:50/250 ...``: the tail of a log, e.g. left by an orphaned run)
    is not a valid log. A log without training steps (an evaluation-only log) needs no header.
    """
    first = next((f"line {i}: {clean_line(t).strip()[:120]}" for i, t in enumerate(lines, 1) if t.strip()), None)
    if first_step_line is None:
        return {"ok": True, "why": "no training step lines", "first": first}
    ours = bool(info["summaries"])
    if ours:
        text_before = [clean_line(t).strip() for t in lines[: first_step_line - 1]]
        has_python = any(t.startswith("Running Python") for t in text_before)
        has_hp = "Hyperparameters:" in text_before
        if has_python and has_hp:
            return {"ok": True, "why": "pgolf header (Running Python, Hyperparameters)", "first": first}
        return {
            "ok": False,
            "why": "its first training step comes before the header train_gpt.py writes first (Running Python, "
            "Hyperparameters): the log is truncated or is the tail of another run's log",
            "first": first,
        }
    if header_line is not None and header_line < first_step_line:
        return {"ok": True, "why": f"header at line {header_line}", "first": first}
    return {
        "ok": False,
        "why": "it begins with training steps, with no run header before them (Running Python, Hyperparameters, "
        "seed, configuration): the log is truncated",
        "first": first,
    }


def _pick_metrics(out: dict) -> None:
    """Fill ``score``, ``roundtrip`` and ``pre_quant`` from the metric lines (module docstring precedence)."""
    best: tuple[int, str] | None = None
    best_rt: tuple[int, str] | None = None
    pre: str | None = None
    for tag in out["final"]:  # log order: a later line of the same class wins
        rank = _score_rank(tag)
        if rank is not None and (best is None or rank <= best[0]):
            best = (rank, tag)
        if metric_kind(tag) == "roundtrip" and (best_rt is None or rank <= best_rt[0]):
            best_rt = (rank, tag)
        if metric_kind(tag) == "pre_quant":
            pre = tag

    def entry(tag: str) -> dict:
        return {"tag": tag, "val_loss": out["final"][tag]["val_loss"], "val_bpb": out["final"][tag]["val_bpb"]}

    out["score"] = entry(best[1]) if best else None
    out["roundtrip"] = entry(best_rt[1]) if best_rt else None
    if pre is not None:
        out["pre_quant"] = entry(pre)
    elif out["val_points"]:
        step, loss, bpb = out["val_points"][-1]
        out["pre_quant"] = {"tag": f"step:{step}", "val_loss": loss, "val_bpb": bpb}

    if out["total_eval_time_s"] is not None:
        out["eval_time_s"] = out["total_eval_time_s"]
    elif out["eval_times_ms"]:
        counted = [ms for tag, ms in out["eval_times_ms"].items() if metric_kind(tag) != "pre_quant"]
        out["eval_time_s"] = sum(counted) / 1000.0 if counted else None


def best_of_kind(info: dict, kind: str) -> dict | None:
    """The metric line of one kind (``metric_kind``: ``sliding``, ``ttt``, ...) of a parsed log that the score
    precedence picks within that kind (an ``_exact`` line first, the last logged winning), as {"tag", "val_loss",
    "val_bpb", ...}; None if the log has none."""
    best: tuple[str, dict] | None = None
    for tag, entry in info["final"].items():
        if metric_kind(tag) == kind and (best is None or tag.endswith("_exact") or not best[0].endswith("_exact")):
            best = (tag, entry)
    return None if best is None else {"tag": best[0], **best[1]}


def _summary_value(summaries: list[dict], key: str, prefer_stage: str | None = None):
    """The value of ``key`` in the last summary having it, preferring one whose ``stage`` is ``prefer_stage``."""
    having = [s for s in summaries if s.get(key) is not None]
    if prefer_stage is not None:
        staged = [s for s in having if s.get("stage") == prefer_stage]
        if staged:
            return staged[-1][key]
    return having[-1][key] if having else None


def _apply_summaries(out: dict) -> None:
    """Use our ``pgolf_summary`` objects: the eval stage's eval time, and fallbacks for what no text line gave."""
    summaries = out["summaries"]
    if not summaries:
        return
    eval_s = _summary_value(summaries, "eval_time_s", "eval")
    if eval_s is not None and out["total_eval_time_s"] is None:
        out["eval_time_s"] = float(eval_s)
    fallbacks = {
        "seed": "seed",
        "model_bytes": "artifact_bytes",
        "code_bytes": "code_bytes",
        "bytes_total": "bytes_total",
        "steps": "steps",
    }
    for field, key in fallbacks.items():
        if out[field] is None:
            value = _summary_value(summaries, key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out[field] = int(value)
    if out["train_time_ms"] is None:
        value = _summary_value(summaries, "train_time_s", "train")
        if isinstance(value, (int, float)):
            out["train_time_ms"] = float(value) * 1000.0
    if out["score"] is None:
        with_score = [s for s in summaries if s.get("val_bpb") is not None and s.get("val_loss") is not None]
        if with_score:
            s = with_score[-1]
            out["score"] = {"tag": "pgolf_summary", "val_loss": float(s["val_loss"]), "val_bpb": float(s["val_bpb"])}


def progress_line(line: str, budget_s: float | None) -> str | None:
    """A progress line for one logged training step, or None for any other line.

    A step line with a train time (old style ``step:S/T train_loss:L train_time:Xms ...``, new style
    ``S/T train_loss: L train_time: Xm ...``, with or without a ``[rank0]:`` prefix) becomes
    ``progress: step S/T, loss L, elapsed Xs of Ys budget, ETA Zs`` (``val_loss L`` for a validation step). The ETA
    is the time the remaining T - S steps take at the average so far, capped by what is left of the budget (the
    script stops at its wallclock cap); with no budget (None or <= 0) it is the former alone and the elapsed time
    reads ``elapsed Xs (no time budget)``.
    """
    text = _RANK_PREFIX.sub("", line.strip())
    m = _STEP.match(text)
    if not m:
        return None
    kv = _kv(m.group(3))
    if "train_time" not in kv:
        return None
    step, total = int(m.group(1)), int(m.group(2))
    elapsed = _ms(kv["train_time"]) / 1000.0
    if "train_loss" in kv:
        loss = f", loss {kv['train_loss'][0]:g}"
    elif "val_loss" in kv:
        loss = f", val_loss {kv['val_loss'][0]:g}"
    else:
        loss = ""
    eta = (total - step) * elapsed / step if step > 0 else None
    if budget_s is not None and budget_s > 0:
        left = max(0.0, budget_s - elapsed)
        eta = left if eta is None else min(eta, left)
        where = f"elapsed {elapsed:.1f}s of {budget_s:g}s budget"
    else:
        where = f"elapsed {elapsed:.1f}s (no time budget)"
    eta_txt = "unknown" if eta is None else f"{eta:.0f}s"
    return f"progress: step {step}/{total}{loss}, {where}, ETA {eta_txt}"
