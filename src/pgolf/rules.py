"""The challenge's rules as small functions over a parsed record (``pgolf.recordfolder.RecordFolder``) and the
report being built (``pgolf.check.Report``: the seeds and score lines ``pgolf.check`` read). Each rule cites the
sentence of the challenge README (openai/parameter-golf, as summarised in the project's challenge notes) that it
enforces (``Rule.cites``); ``RULES`` lists them in the order ``pgolf.check.inspect_record`` applies them, after the
reading rules of ``pgolf.check`` (seeds, score, time, bytes, submission.json against the logs).

Severities: a violation fails the folder, a warning is listed, a note says how something was read.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

from pgolf.pack import read_source_text
from pgolf.recordfolder import RECORD_TRACK, RecordFolder, code_difference, code_recipe, counted_code_size
from pgolf.valscope import is_partial

VIOLATION, WARNING, NOTE = "violation", "warning", "note"


@dataclass(frozen=True)
class Rule:
    """A rule: its function (folder, report) -> None, adding findings, and the README sentence it enforces."""

    name: str
    cites: str
    check: Callable


RULES: list[Rule] = []


def rule(cites: str):
    """Register a rule function with the README sentence it enforces."""

    def wrap(fn):
        RULES.append(Rule(fn.__name__, cites, fn))
        fn.cites = cites
        return fn

    return wrap


def severity_rank(text: str) -> int:
    """How severe a violation is, for ``--all``'s one line per folder: time or bytes (0) before seeds and scores
    (1) before the log itself (2) before a missing file or key (3)."""
    t = text.lower()
    if re.search(r"train time|eval time|evaluation alone|over the \d+-byte|byte cap|file limit", t):
        return 0
    if re.search(r"seed|shown by no log|score line|val_scope|validation split|scored", t):
        return 1
    if re.search(r"not a valid log|no training log|val_bpb counted", t):
        return 2
    return 3


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# ----------------------------------------------------------------------------------------------------------------
# submission.json


@rule("submission.json: at least author, github_id, name, date, val_bpb, val_loss, bytes_total, bytes_code, blurb")
def scores_are_numbers(folder: RecordFolder, report) -> None:
    """A val_bpb or val_loss that is not a number (a quoted "1.0123", null) is no score."""
    for key in ("val_bpb", "val_loss"):
        if key in folder.sub and not _is_number(folder.sub[key]):
            report.add(VIOLATION, f"submission.json: {key} is not a number ({folder.sub[key]!r})")


@rule("submission.json: at least author, github_id, name, ...; a PR adds exactly one folder (its author's)")
def identity_is_given(folder: RecordFolder, report) -> None:
    """An empty ``author`` or ``github_id`` names nobody."""
    for key in ("author", "github_id"):
        if key in folder.sub and not str(folder.sub[key] or "").strip():
            report.add(VIOLATION, f"submission.json: {key} is empty")


@rule("the artifact (the bytes of train_gpt.py plus the compressed model); train_gpt.py must run from the folder")
def script_is_not_empty(folder: RecordFolder, report) -> None:
    """A 0-byte training script on the record track cannot have made the logs."""
    script = folder.script
    if script is not None and folder.track == RECORD_TRACK and script.stat().st_size == 0:
        report.add(VIOLATION, f"{script.name} is empty (0 bytes): no training script")


# ----------------------------------------------------------------------------------------------------------------
# the score


@rule("Score: val_bpb ... of the fixed FineWeb validation split (the first 50,000 documents)")
def whole_validation_split(folder: RecordFolder, report) -> None:
    """A score must cover the whole validation split: our ``val_scope:`` line states scored and split tokens and
    bytes (scored < split is a violation, and they must match submission.json's ``data`` where it states them);
    upstream logs state ``val_tokens: N``, compared between the backing logs of one data set."""
    data = folder.sub.get("data") if isinstance(folder.sub.get("data"), dict) else {}
    for rel in report.backing:
        for scope in folder.extras.get(rel, {}).get("val_scope", []):
            if is_partial(scope):
                report.add(
                    VIOLATION,
                    f"{rel}: scored {scope['scored_tokens']} of the validation split's {scope['split_tokens']} "
                    f"tokens ({scope['scored_bytes']} of {scope['split_bytes']} bytes): a score on part of the "
                    "validation split",
                    scope["line"],
                )
            for key, name in (("val_tokens", "split_tokens"), ("val_bytes", "split_bytes")):
                stated = data.get(key)
                if _is_number(stated) and int(stated) != scope[name]:
                    report.add(
                        VIOLATION,
                        f"{rel}: the validation split has {scope[name]} {name.split('_')[1]} but submission.json "
                        f"data.{key} says {int(stated)}",
                        scope["line"],
                    )
    by_data: dict[str, list[tuple[str, int]]] = {}
    for rel in report.backing:
        n = folder.extras.get(rel, {}).get("val_tokens")
        if n is not None:
            by_data.setdefault(str(folder.logs[rel].get("dataset")), []).append((rel, n))
    for dataset, seen in by_data.items():
        most = max(n for _, n in seen)
        for rel, n in seen:
            if n < most:
                report.add(
                    WARNING,
                    f"{rel}: val_tokens {n}, fewer than another backing log of the same data ({dataset}) states "
                    f"({most}): a part of the validation split?",
                    folder.extras[rel]["evidence"].get("val_tokens"),
                )


def _printed(line: str, key: str) -> tuple[float, int] | None:
    m = re.search(rf"{key}[:=]\s*([-+]?\d+(?:\.(\d+))?)", line or "")
    return (float(m.group(1)), len(m.group(2) or "")) if m else None


@rule("val_bpb = (sum of per-token NLL in nats) / (ln 2 · sum of bytes): one tokenizer and split, one bytes/token")
def loss_per_bpb_is_constant(folder: RecordFolder, report) -> None:
    """val_loss / val_bpb = ln 2 · bytes / tokens: one constant for a tokenizer and validation set. Every score line of
    the backing logs must agree with the lines of the same evaluation (the same tag: each evaluation, roundtrip,
    sliding, TTT, scores the split's tokens in its own windows, which moves the ratio by up to 1e-5) in the other
    seeds' logs and its rounded twin, to the precision they were printed with; a line that does not was edited, or
    scored other data."""
    groups: dict[tuple, list[tuple[float, float, str, str]]] = {}
    for rel in report.backing:
        info = folder.logs[rel]
        for tag in info["final"]:
            line = info["evidence"].get(f"final:{tag}", "")
            loss, bpb = _printed(line, "val_loss"), _printed(line, "val_bpb")
            if not loss or not bpb or bpb[0] <= 0 or loss[0] <= 0:
                continue
            tol = 0.5 * 10.0 ** -loss[1] / loss[0] + 0.5 * 10.0 ** -bpb[1] / bpb[0]
            key = (info.get("tokenizer"), info.get("dataset"), tag.removesuffix("_exact"))
            groups.setdefault(key, []).append((loss[0] / bpb[0], tol, rel, line))
    for members in groups.values():
        for ratio, tol, rel, line in members:
            others = [(r, t) for r, t, rr, ll in members if (rr, ll) != (rel, line)]
            off = [r for r, t in others if abs(ratio - r) / r > 2 * (tol + t) + 1e-9]
            if others and len(off) * 2 > len(others):
                typical = sorted(r for r, _ in others)[len(others) // 2]
                report.add(
                    VIOLATION,
                    f"{rel}: val_loss/val_bpb = {ratio:.6f} on this score line, but {typical:.6f} on {len(off)} of the "
                    f"{len(others)} other lines of this evaluation (same tokenizer and validation set): val_bpb and "
                    "val_loss disagree",
                    line,
                )


# ----------------------------------------------------------------------------------------------------------------
# the machine, the code


@rule("Training: at most 600 s of wall clock on 8×H100 SXM")
def hardware_is_8xh100(folder: RecordFolder, report) -> None:
    """On the 10-minute track, a backing log whose nvidia-smi table or world size shows other than 8 H100s."""
    if folder.track != RECORD_TRACK:
        return
    for rel in report.backing:
        x = folder.extras.get(rel, {})
        gpus = x.get("gpus") or {}
        if gpus and (len(gpus) != 8 or any("H100" not in name for name in gpus.values())):
            names = sorted(set(gpus.values()))
            report.add(
                WARNING,
                f"{rel}: the log's GPU table shows {len(gpus)} GPU(s) ({', '.join(names)}), not 8×H100",
                x["evidence"].get("gpus"),
            )
        elif x.get("world_size") is not None and x["world_size"] != 8:
            report.add(
                WARNING,
                f"{rel}: world_size {x['world_size']}, not the 8 GPUs of 8×H100",
                x["evidence"].get("world_size"),
            )


@rule("A record folder holds train_gpt.py ... one log per seed, train_seed<N>.log, as the script wrote it")
def logged_code_is_shipped_code(folder: RecordFolder, report) -> None:
    """A log that begins with its script's source must show the shipped script; a difference is a warning with a
    summary (logs of other scripts of the folder are matched to those scripts first)."""
    script = folder.script
    if script is None:
        return
    shipped = read_source_text(script)
    others = {
        read_source_text(p)
        for p in folder.path.rglob("*.py")
        if p.is_file() and p != script and len(p.relative_to(folder.path).parts) <= 3
    }
    for rel in report.backing:
        code = folder.extras.get(rel, {}).get("embedded_code")
        if code is None or code == shipped or code in others:
            continue
        report.add(
            WARNING,
            f"{rel}: the log begins with the source of the script that made it, which is not the shipped "
            f"{script.name}: {code_difference(code, shipped)}",
        )


COUNT_SLACK_BYTES, COUNT_SLACK = 64, 0.005  # python-minifier / liblzma versions: 37,155 exact on #2135, 5-17 B else


@rule("the artifact (the bytes of train_gpt.py plus the compressed model) is at most 16,000,000 bytes")
def counted_code_matches(folder: RecordFolder, report) -> None:
    """Upstream counts the code as pyminify + compression + base85 (``_compressed_code_size``). Where a backing log
    states that counted size and the shipped script is the logged one (its uncompressed size), count the shipped
    script the same way: a difference beyond what minifier and compressor versions move (``COUNT_SLACK``: a few
    bytes to tens on the corpus) is a warning. The counted size is reported per seed (``figures``)."""
    script = folder.script
    if script is None:
        return
    size = script.stat().st_size
    text = read_source_text(script)
    recipe = code_recipe(text)
    for rel in report.backing:
        info = folder.logs[rel]
        logged = info.get("code_bytes") if "code_bytes_compressed" in info["evidence"] else None
        if logged is None or info.get("code_bytes_uncompressed") != size or recipe is None:
            continue
        counted = counted_code_size(text, recipe)
        report.counted_code[rel] = counted
        if counted is not None and abs(counted - logged) > max(COUNT_SLACK_BYTES, COUNT_SLACK * logged):
            report.add(
                WARNING,
                f"{rel}: logs a counted (compressed) code size of {logged} bytes; the shipped {script.name}, counted "
                f"as its _compressed_code_size does (pyminify {' '.join(recipe['flags'])}, {recipe['compressor']}, "
                f"base85), is {counted} bytes",
                info["evidence"].get("code_bytes_compressed"),
            )
