"""Check a record folder (ours or upstream, as its authors wrote it) against the challenge's rules and its own logs.

``inspect_record`` returns a ``Report``: the track and the rules taken from it, the logs found, the score read for
each seed and a list of findings, each a ``Finding`` of one of three severities:

- **violation** (the folder fails): over the 16,000,000-byte cap (the logged total, or the model plus every code file
  the run used, shipped beside ``train_gpt.py`` and not counted in the logged code size), over 600 s of training
  (the timed loop plus calibration that reads training data, e.g. ``GPTQ:collected 67 Hessians in 3.5s``) or of
  evaluation on the 10-minute track, claimed seeds with no log, fewer seeds than the track asks for, a submitted score
  that no log shows, a log that does not start with its run's header (a truncated log), a missing README.md or
  submission.json, no training script at all, a submission.json without ``name``, ``github_id`` or ``val_bpb``, a
  val_bpb that counted other bytes than its data set calls for (the validation byte sidecar where submission.json's
  ``data`` says there is one, the tokenizer's pieces where there is none);
- **warning** (an inconsistency, listed, not failing): a code size logged vs shipped that differs by a few bytes,
  rounded step counts or times, a README number that disagrees with the logs, a missing ``blurb``/``bytes_total``, a
  ``bytes_total`` that is not one seed's logged total, a script under another name;
- **note**: how something was read (which log backs which seed, which line is the score, what was not counted).

Every violation names the file and quotes the log line that shows it (``evidence``).

Which files are what (by content and rule, never by folder name):

- logs: every ``*.log``/``*.txt`` of the folder and its subfolders that reads as a training or evaluation log
  (``pgolf.logs.parse_log`` finds steps, a score or an artifact size in it); ``submission.json``, else the one
  ``submission*.json``;
- a log's seed is the one the log states (``seed:N``, the ``Hyperparameters`` block, a ``seed=N`` configuration
  line), else the one its file name gives (``train_seed42.log``, ``ternary_log_42.txt``, ``logs/train0.txt`` where 0 is
  a claimed seed), else the single claimed seed when there is one log;
- which metric line is the record's score: the one the record itself submitted. For each kind of score line (TTT,
  sliding window, roundtrip, ...) present for every seed, the per-seed values (one log per seed where a seed has
  several: the original and a rerun, a training log and an evaluation log in a subfolder) are matched against
  submission.json's ``seed_results`` and its ``val_bpb`` (the mean over seeds or one seed's value); the first kind
  that matches, in the order TTT, sliding, roundtrip, other, is the score. The logs picked are the seed's backing
  logs: the rules on time and size apply to them (and to the training log of the same seed when the score comes from
  an evaluation-only log); other logs (ablations, reruns not submitted) are listed but not held to the rules;
- the track: the folder's parent (``track_10min_16mb``, ``track_non_record_16mb``), else submission.json's ``track``
  or ``non_record``. A record attempt needs 3 seeds and the time budgets; a non-record needs 1 seed and no time limit.
  Both have the byte cap.

Number tolerance: a value with d decimals in submission.json must be within ``10**-d`` of the logs (at least 2e-8,
at most 1e-3), or within the resolution the log printed its value with (times); byte counts exactly.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from pgolf.logs import metric_kind
from pgolf.recordfolder import (
    NON_RECORD_TRACK,
    RECORD_TRACK,
    SEED_IN_NAME,
    TRACK_RULES,
    RecordFolder,
    find_logs,
    parse_record,
    read_submission,
    record_track,
    submission_path,
)
from pgolf.recordfolder import seed_results as _seed_results
from pgolf.recordfolder import tables as _tables
from pgolf.rules import NOTE, RULES, VIOLATION, WARNING, severity_rank

REQUIRED_KEYS = ("name", "github_id", "val_bpb")  # what the challenge asks for
EXPECTED_KEYS = ("author", "date", "val_loss", "bytes_total", "blurb")  # usual; missing is a warning
__all__ = [
    "NON_RECORD_TRACK",
    "RECORD_TRACK",
    "TRACK_RULES",
    "RecordFolder",
    "find_logs",
    "parse_record",
    "read_submission",
    "record_track",
    "submission_path",
]
_CODE_SUFFIXES = (".py", ".cpp", ".cu", ".c", ".h", ".hpp", ".cuh")
_SEED_IN_NAME = SEED_IN_NAME
_KIND_ORDER = ("ttt", "sliding", "roundtrip", "other")

UNKNOWN_SEED = -1  # the seed of a record's single log that states none (and no seed is claimed)


@dataclass
class Finding:
    """One finding: severity (``violation``/``warning``/``note``), the text, and the log line that shows it."""

    severity: str
    text: str
    evidence: str | None = None

    def __str__(self) -> str:
        return self.text + (f" [{self.evidence}]" if self.evidence else "")


@dataclass
class Report:
    """What ``inspect_record`` found in one folder."""

    record_dir: Path
    track: str
    min_seeds: int
    enforce_time: bool
    findings: list[Finding] = field(default_factory=list)
    logs: dict[str, dict] = field(default_factory=dict)  # relative path -> parsed log
    seeds: dict[int, dict] = field(default_factory=dict)  # seed -> {"log", "score", "train_log"}
    seed_logs: dict[int, list[str]] = field(default_factory=dict)  # seed -> every log of that seed
    aliases: dict[int, int] = field(default_factory=dict)  # a claimed seed -> the seed its (misnamed) log ran
    score_kind: str | None = None  # the family of score lines read (a tag without ``_exact``)
    score_eval: str | None = None  # how they were evaluated (``score_kind()``: ttt, sliding, roundtrip, other)
    folder: RecordFolder | None = None  # the parsed folder the rules read
    limits: dict = field(default_factory=dict)  # cap_bytes, train_budget_s, eval_budget_s
    backing: list[str] = field(default_factory=list)  # the logs held to the rules
    shipped_code: int | None = None  # bytes of the script plus the code beside it that the run uses
    uncounted: dict[str, int] = field(default_factory=dict)  # log -> code bytes its logged total leaves out
    counted_code: dict[str, int | None] = field(default_factory=dict)  # log -> the shipped script counted as upstream
    figures: dict[int, dict] = field(default_factory=dict)  # seed -> the figures every verdict shows (``figures``)

    @property
    def violations(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == VIOLATION]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == WARNING]

    @property
    def verdict(self) -> str:
        return "FAIL" if self.violations else "PASS"

    def add(self, severity: str, text: str, evidence: str | None = None) -> None:
        self.findings.append(Finding(severity, text, evidence))

    @property
    def worst(self) -> Finding | None:
        """The most severe violation (``pgolf.rules.severity_rank``: time or bytes, seeds, the log, a missing key),
        else the first warning."""
        if self.violations:
            return min(self.violations, key=lambda f: severity_rank(f.text))
        return self.warnings[0] if self.warnings else None


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
    """How far a submitted bpb/loss may be from the logs: one unit in its last decimal, within [2e-8, 1e-3]."""
    return max(min(1e-3, 10.0 ** -_decimals(value)), 2e-8)


def close(submitted: float, logged: float) -> bool:
    """Whether ``submitted`` agrees with ``logged`` within ``tolerance(submitted)``."""
    return abs(float(submitted) - float(logged)) <= tolerance(submitted) * (1 + 1e-9) + 1e-12


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _name_seed(rel: str, claimed: list[int], n_logs: int) -> int | None:
    """The seed a log's file name gives: ``seed<N>`` anywhere, else a number in the name that is a claimed seed."""
    name = Path(rel).name
    if m := _SEED_IN_NAME.search(name):
        return int(m.group(1))
    numbers = [int(x) for x in re.findall(r"(?<![\d.])(\d+)(?![\d.]*\d)", Path(rel).stem)]
    hits = [n for n in numbers if n in claimed]
    if len(hits) == 1:
        return hits[0]
    if len(claimed) == 1 and n_logs == 1:
        return claimed[0]
    return None


def seed_logs(record_dir: str | os.PathLike) -> tuple[dict[int, tuple[Path, dict]], list[tuple[Path, dict]], list[str]]:
    """Map seeds to one parsed log each (the backing log ``inspect_record`` picks).

    Returns (``{seed: (log path, parsed)}``, every log as (path, parsed), warnings found while mapping).
    """
    report = inspect_record(record_dir, require_script=False)
    record_dir = Path(record_dir)
    by_seed = {s: (record_dir / v["log"], report.logs[v["log"]]) for s, v in report.seeds.items()}
    every = [(record_dir / rel, info) for rel, info in report.logs.items()]
    return dict(sorted(by_seed.items())), every, [f.text for f in report.warnings]


def _log_seeds(logs: dict[str, dict], claimed: list[int], report: Report) -> dict[int, list[str]]:
    """{seed: [relative log paths]} by what each log states (else its file name)."""
    by_seed: dict[int, list[str]] = {}
    for rel, info in logs.items():
        from_name = _name_seed(rel, claimed, len(logs))
        seed = info["seed"]
        if seed is None:
            seed = from_name
            if seed is not None:
                report.add(NOTE, f"{rel}: no seed logged; seed {seed} from its file name")
        elif from_name is not None and from_name != seed and _SEED_IN_NAME.search(Path(rel).name):
            report.add(
                WARNING,
                f"{rel}: the file name says seed {from_name} but the log says seed {seed} (the log's seed is used)",
                info["evidence"].get("seed"),
            )
        if seed is None and not claimed and len(logs) == 1:
            seed = UNKNOWN_SEED
            report.add(NOTE, f"{rel}: the record's only log; it states no seed (read as one seed)")
        if seed is None:
            report.add(NOTE, f"{rel}: no seed in the log or its name; not mapped to a seed")
            continue
        by_seed.setdefault(seed, []).append(rel)
    return by_seed


def _seed_name(seed: int) -> str:
    return "?" if seed == UNKNOWN_SEED else str(seed)


def _family(tag: str) -> str:
    return tag.removesuffix("_exact")


def _candidates(info: dict) -> dict[str, dict]:
    """{family: entry} of the score lines of a log (an ``_exact`` line over its rounded twin; no pre-quant lines)."""
    out: dict[str, dict] = {}
    for tag, entry in info["final"].items():
        if metric_kind(tag) == "pre_quant":
            continue
        fam = _family(tag)
        if fam not in out or tag.endswith("_exact"):
            out[fam] = {"tag": tag, **entry, "line": info["evidence"].get(f"final:{tag}")}
    if not out and info["score"] is not None and info["score"]["tag"] == "pgolf_summary":
        out["pgolf_summary"] = {**info["score"], "line": "pgolf_summary"}
    return out


def score_kind(entry: dict) -> str:
    """How a score line was evaluated: ``ttt``, ``sliding``, ``roundtrip`` or ``other`` (``metric_kind`` of its tag,
    where a ``final_eval_mode:sliding_window`` line before it or a ``stride`` on it says sliding windows)."""
    kind = metric_kind(entry.get("tag", ""))
    if kind in ("roundtrip", "other") and ("sliding" in str(entry.get("eval_mode", "")) or entry.get("stride")):
        return "sliding"
    return kind


def _kind_rank(fam: str) -> int:
    kind = metric_kind(fam) if fam != "pgolf_summary" else "other"
    return _KIND_ORDER.index(kind) if kind in _KIND_ORDER else len(_KIND_ORDER)


def _pick_score(report: Report, sub: dict, by_seed: dict[int, list[str]], seeds: list[int]) -> None:
    """Choose the score kind and one backing log per seed (module docstring); fills ``report.seeds``."""
    logs = report.logs
    families: dict[str, dict[int, list[tuple[str, dict]]]] = {}
    for seed in seeds:
        for rel in by_seed.get(seed, []):
            for fam, entry in _candidates(logs[rel]).items():
                families.setdefault(fam, {}).setdefault(seed, []).append((rel, entry))
    complete = {f: v for f, v in families.items() if all(s in v for s in seeds)}
    per_seed = _seed_results(sub)
    target = sub.get("val_bpb") if _is_number(sub.get("val_bpb")) else None

    def matches(combo: dict[int, tuple[str, dict]]) -> str | None:
        given = {s: per_seed[s]["val_bpb"] for s in combo if _is_number(per_seed.get(s, {}).get("val_bpb"))}
        if given and not all(close(given[s], combo[s][1]["val_bpb"]) for s in given):
            return None
        if target is not None:
            values = [e["val_bpb"] for _, e in combo.values()]
            if close(target, sum(values) / len(values)):
                return "the mean over seeds"
            one = [s for s, (_, e) in combo.items() if close(target, e["val_bpb"])]
            if one:
                return f"seed {one[0]}'s value"
            return None
        return "the per-seed results" if given else None

    chosen: tuple[str, dict[int, tuple[str, dict]], str] | None = None
    for fam in sorted(complete, key=lambda f: (_kind_rank(f), list(families).index(f))):
        options = [[(s, o) for o in complete[fam][s]] for s in seeds]
        hits = []
        for combo in itertools.islice(itertools.product(*options), 20_000):  # a few logs per seed at most
            picked = dict(combo)
            how = matches(picked)
            if how:
                mean_bpb = sum(e["val_bpb"] for _, e in picked.values()) / len(picked)
                named = -sum(1 for rel, _ in picked.values() if _SEED_IN_NAME.search(Path(rel).name))
                hits.append((abs(mean_bpb - target) if target is not None else 0.0, named, len(hits), picked, how))
        if hits:
            # where a seed has several logs: the closest reading, then logs named for their seed (train_seed<N>.log
            # over a copy named train.log)
            *_, picked, how = min(hits, key=lambda h: (round(h[0], 12), h[1], h[2]))
            chosen = (fam, picked, how)
            break
    if chosen is None and seeds and complete:
        fam = min(complete, key=lambda f: (_kind_rank(f), list(families).index(f)))
        picked = {s: complete[fam][s][-1] for s in seeds}
        if target is not None or per_seed:
            shown = ", ".join(f"{_seed_name(s)}: {e['val_bpb']}" for s, (_, e) in picked.items())
            claimed = f"val_bpb {target}" if target is not None else "the seed_results val_bpb"
            values = sorted({round(e["val_bpb"], 8) for v in families.values() for o in v.values() for _, e in o})
            report.add(
                VIOLATION,
                f"submission.json: {claimed} is shown by no log: no score line of the seeds' logs gives it "
                f"(mean or one seed) (e.g. {fam}: {shown}; logged scores {', '.join(map(str, values[:8]))})",
            )
        else:
            report.add(
                WARNING, f"no submitted val_bpb: the score is read from the {fam} lines (TTT, sliding, roundtrip order)"
            )
        chosen = (fam, picked, "precedence")
    if chosen is None:
        if target is not None and seeds:
            report.add(
                VIOLATION,
                f"submission.json: val_bpb {target} is shown by no log: the logs of seed(s) "
                f"{', '.join(_seed_name(s) for s in seeds)} have no final score line for every seed",
            )
        return
    fam, picked, how = chosen
    report.score_kind = fam
    report.score_eval = score_kind(next(iter(picked.values()))[1])
    report.add(NOTE, f"score: {fam} lines ({how})")
    for seed, (rel, entry) in picked.items():
        train_log = rel
        if logs[rel]["train_time_ms"] is None:
            trained = [r for r in by_seed.get(seed, []) if logs[r]["train_time_ms"] is not None]
            if trained:
                train_log = trained[0]
                report.add(NOTE, f"seed {seed}: score from {rel}, training from {train_log}")
        report.seeds[seed] = {"log": rel, "score": entry, "train_log": train_log}
    report.seeds = dict(sorted(report.seeds.items()))


def _script(record_dir: Path, report: Report, require_script: bool) -> Path | None:
    """The training script: train_gpt.py, else the one ``train*.py`` of the folder (a warning)."""
    if (record_dir / "train_gpt.py").is_file():
        return record_dir / "train_gpt.py"
    others = sorted(p for p in record_dir.glob("train*.py") if p.is_file())
    if not require_script:
        return others[0] if len(others) == 1 else None
    if len(others) == 1:
        report.add(WARNING, f"no train_gpt.py: the training script is {others[0].name}")
        return others[0]
    if others:
        report.add(WARNING, f"no train_gpt.py; {len(others)} training scripts ({', '.join(p.name for p in others)})")
        return None
    report.add(VIOLATION, "missing train_gpt.py (no training script in the folder)")
    return None


def _used_code(record_dir: Path, script: Path | None, texts: list[str]) -> list[Path]:
    """Source files shipped beside the script that the run used: named (file name or module name, as a word) in the
    script, in a backing log, or in a file already found used."""
    files = [
        p
        for p in sorted(record_dir.rglob("*"))
        if p.is_file()
        and p.suffix.lower() in _CODE_SUFFIXES
        and p != script
        and len(p.relative_to(record_dir).parts) <= 3
    ]
    if script is not None:  # the readable copy of a packed script is that script, not more code (pgolf pack)
        from pgolf.pack import HUMAN_NAME, ship

        packed = script.read_bytes()
        files = [
            p
            for p in files
            if not (
                p.name == HUMAN_NAME and ship(p.read_text(encoding="utf-8", errors="replace"))[0].encode() == packed
            )
        ]
    queue = list(texts)
    if script is not None:
        queue.append(script.read_text(encoding="utf-8", errors="replace"))
    used: list[Path] = []
    while queue:
        text = queue.pop()
        for p in files:
            if p in used:
                continue
            if re.search(rf"(?<![\w.]){re.escape(p.name)}(?![\w])", text) or re.search(
                rf"(?<![\w.]){re.escape(p.stem)}(?![\w])", text
            ):
                used.append(p)
                queue.append(p.read_text(encoding="utf-8", errors="replace"))
    return used


def inspect_record(
    record_dir: str | os.PathLike | RecordFolder,
    min_seeds: int | None = None,
    cap_bytes: int = 16_000_000,
    train_budget_s: float = 600,
    eval_budget_s: float = 600,
    enforce_time: bool | None = None,
    *,
    require_script: bool = True,
    overshoot_steps: float = 2.0,
    max_file_bytes: int = 50_000_000,
    track: str | None = None,
) -> Report:
    """Check a record folder (a path, or one already parsed by ``parse_record``); ``min_seeds``/``enforce_time``/
    ``track`` default to the folder's track's rules. The reading rules here pick the seeds, the score and the backing
    logs; then every rule of ``pgolf.rules.RULES`` runs over the parsed folder; then the figures are computed."""
    folder = (
        record_dir if isinstance(record_dir, RecordFolder) else parse_record(record_dir, max_file_bytes=max_file_bytes)
    )
    record_dir = folder.path
    sub, sub_path, sub_error = folder.sub, folder.sub_path, folder.sub_error
    track = track or folder.track
    rules = TRACK_RULES.get(track, TRACK_RULES[RECORD_TRACK])
    report = Report(
        record_dir,
        track,
        rules["min_seeds"] if min_seeds is None else min_seeds,
        rules["enforce_time"] if enforce_time is None else enforce_time,
    )
    report.folder = folder
    report.limits = {"cap_bytes": cap_bytes, "train_budget_s": train_budget_s, "eval_budget_s": eval_budget_s}
    if not folder.exists:
        report.add(VIOLATION, f"{record_dir}: not a folder")
        return report
    report.add(
        NOTE, f"track {track} ({folder.track_why}): {report.min_seeds} seed(s), time limits {report.enforce_time}"
    )

    if not folder.has_readme:
        report.add(VIOLATION, "missing README.md")
    if sub_path is None:
        report.add(VIOLATION, "missing submission.json")
    elif sub_path.name != "submission.json":
        report.add(WARNING, f"the submission file is {sub_path.name}, not submission.json")
    if sub_error:
        report.add(VIOLATION, sub_error)
    for key in REQUIRED_KEYS:
        if sub_path is not None and not sub_error and key not in sub:
            report.add(VIOLATION, f"{sub_path.name}: missing key {key!r} (the challenge asks for it)")
    for key in EXPECTED_KEYS:
        if sub_path is not None and not sub_error and key not in sub:
            report.add(WARNING, f"{sub_path.name}: missing key {key!r}")
    for rel, size in folder.large_files:
        report.add(VIOLATION, f"{rel}: {size} bytes, over the {max_file_bytes}-byte file limit")
    script = _script(record_dir, report, require_script)

    report.logs = folder.logs
    if not report.logs:
        report.add(VIOLATION, "no training log (no *.log / *.txt file with steps, a score or an artifact size)")
    readme_text = folder.readme_text
    claimed = folder.claimed
    by_seed = _log_seeds(report.logs, claimed, report)
    report.seed_logs = by_seed
    seeds = [s for s in claimed if s in by_seed]
    for seed in claimed:
        if seed in by_seed:
            continue
        named = [
            (rel, s)
            for s, rels in by_seed.items()
            for rel in rels
            if s not in claimed and _name_seed(rel, claimed, len(report.logs)) == seed
        ]
        shown = _logs_showing(report, sub, seed, claimed, by_seed) if len(named) != 1 else []
        if len(named) == 1:
            rel, logged = named[0]
            report.findings = [f for f in report.findings if not f.text.startswith(f"{rel}: the file name says seed")]
            report.add(
                WARNING,
                f"seed {seed} is claimed; its log {rel} ran seed {logged} (read as seed {logged})",
                report.logs[rel]["evidence"].get("seed"),
            )
            seeds.append(logged)
            report.aliases[seed] = logged
        elif len(shown) == 1:
            rel, logged, value = shown[0]
            report.add(
                WARNING,
                f"seed {seed} is claimed but no log states it; {rel} shows its submitted val_bpb {value} and says "
                f"seed {_seed_name(logged)}: a mislabelled seed (read as seed {_seed_name(logged)})",
                report.logs[rel]["evidence"].get("seed"),
            )
            if logged not in by_seed:
                by_seed[logged] = [rel]
            seeds.append(logged)
            report.aliases[seed] = logged
        else:
            report.add(VIOLATION, f"seed {seed} is claimed (submission.json / README) but no log is for it")
    seeds = seeds or sorted(by_seed)
    _pick_score(report, sub, by_seed, seeds)
    if len(report.seeds) < report.min_seeds:
        listed = ", ".join(_seed_name(s) for s in report.seeds) or "none"
        report.add(
            VIOLATION,
            f"only {len(report.seeds)} seed(s) with a score ({listed}); the {track} track asks for at least "
            f"{report.min_seeds}",
        )
    backing = []
    for s in report.seeds.values():
        backing += [s["log"]] + ([s["train_log"]] if s["train_log"] != s["log"] else [])
    for seed in seeds:
        if seed not in report.seeds:  # a claimed seed's logs without the score: still held to the rules
            backing += [rel for rel in by_seed.get(seed, []) if rel not in backing]
    report.backing = backing
    for rel in report.logs:
        if rel not in backing:
            report.add(NOTE, f"{rel}: not a backing log of the submitted score; not held to the rules")
    for rel in backing:
        _check_run(report, rel, report.logs[rel], cap_bytes, train_budget_s, eval_budget_s, overshoot_steps)
    for seed, v in report.seeds.items():
        sized = [r for r in dict.fromkeys([v["log"], v["train_log"]]) if _logged_total(report.logs[r]) is not None]
        if not sized:
            report.add(
                VIOLATION,
                f"seed {_seed_name(seed)}: no log shows the artifact's size ({v['log']} has no Serialized model / "
                "Total submission size line): the byte cap cannot be checked",
            )
    for rel, info in report.logs.items():  # a truncated log can never pass, backing or not
        if rel not in backing and not info["start"]["ok"]:
            report.add(VIOLATION, f"{rel}: not a valid log: {info['start']['why']}", info["start"]["first"])
    _check_code(report, record_dir, script, backing, cap_bytes)
    if sub:
        _check_submission(report, sub, cap_bytes)
        _check_byte_source(report, sub)
    if readme_text:
        for text in check_readme(readme_text, report):
            report.add(WARNING, text)
    for r in RULES:
        r.check(folder, report)
    report.figures = figures(report)
    return report


def _logs_showing(
    report: Report, sub: dict, seed: int, claimed: list[int], by_seed: dict[int, list[str]]
) -> list[tuple[str, int, float]]:
    """Logs of the folder (any script's, mapped to an unclaimed seed or to none) whose score lines show the val_bpb
    submission.json gives for ``seed``: [(log, the seed it states, the value)]."""
    want = _seed_results(sub).get(seed, {}).get("val_bpb")
    if not _is_number(want):
        return []
    taken = {rel for s in claimed for rel in by_seed.get(s, [])}
    out = []
    for rel, info in report.logs.items():
        if rel in taken:
            continue
        for entry in _candidates(info).values():
            if close(want, entry["val_bpb"]):
                logged = info["seed"] if info["seed"] is not None else UNKNOWN_SEED
                out.append((rel, logged, entry["val_bpb"]))
                break
    return out


def figures(report: Report) -> dict[int, dict]:
    """Per seed, the figures every verdict shows: the score and its line; bytes as the log counted them (its total,
    plus code the run uses that the total leaves out) and as shipped (the logged model plus the code files as they
    are), against the cap; the counted and shipped code; the train loop plus calibration on training data and the
    evaluation, against their budgets; the margin to each limit (positive: within it)."""
    cap = report.limits.get("cap_bytes", 16_000_000)
    train_budget = report.limits.get("train_budget_s", 600)
    eval_budget = report.limits.get("eval_budget_s", 600)
    out: dict[int, dict] = {}
    for seed, v in report.seeds.items():
        info, train = report.logs[v["log"]], report.logs[v["train_log"]]
        sized = info if _logged_total(info) is not None else train
        total = _logged_total(sized)
        rel_sized = v["log"] if sized is info else v["train_log"]
        counted = None if total is None else total + report.uncounted.get(rel_sized, 0)
        model = sized.get("model_bytes")
        shipped = None if model is None or report.shipped_code is None else model + report.shipped_code
        loop_ms = train.get("train_time_ms")
        calib_ms = train.get("calib_ms") or 0.0
        train_s = None if loop_ms is None else (loop_ms + calib_ms) / 1000.0
        score = v["score"]
        eval_s = info.get("total_eval_time_s")
        if eval_s is None and score.get("eval_time_ms") is not None:
            eval_s = score["eval_time_ms"] / 1000.0
        if eval_s is None:
            eval_s = info.get("eval_time_s")
        code_logged = sized.get("code_bytes")
        out[seed] = {
            "log": v["log"],
            "train_log": v["train_log"],
            "val_bpb": score["val_bpb"],
            "val_loss": score["val_loss"],
            "score_line": score.get("line"),
            "bytes_counted": counted,
            "bytes_shipped": shipped,
            "cap_bytes": cap,
            "bytes_margin": None if counted is None else cap - counted,
            "bytes_shipped_margin": None if shipped is None else cap - shipped,
            "code_counted": code_logged,
            "code_counted_shipped_script": report.counted_code.get(rel_sized),
            "code_shipped": report.shipped_code,
            "train_loop_s": None if loop_ms is None else loop_ms / 1000.0,
            "calibration_s": calib_ms / 1000.0,
            "train_s": train_s,
            "train_budget_s": train_budget,
            "train_margin_s": None if train_s is None else train_budget - train_s,
            "eval_s": eval_s,
            "eval_budget_s": eval_budget,
            "eval_margin_s": None if eval_s is None else eval_budget - eval_s,
            "time_limits": report.enforce_time,
        }
    return out


def check_record(record_dir: str | os.PathLike, min_seeds: int | None = None, *args, strict: bool = False, **kw):
    """Violations of a record folder (``inspect_record``), one line each; an empty list means it passes.

    ``strict=True`` (our own records, built by ``pgolf record``) also fails on warnings: a record the pipeline wrote
    must agree with its logs exactly.
    """
    report = inspect_record(record_dir, min_seeds, *args, **kw)
    return [str(f) for f in report.findings if f.severity == VIOLATION or (strict and f.severity == WARNING)]


def _check_byte_source(report: Report, sub: dict) -> None:
    """val_bpb must count the bytes its data set calls for: with a validation byte sidecar (submission.json
    ``data.val_bytes_sidecar``, e.g. CaseOps text, whose pieces are not the original bytes) the sidecar's, without
    one the tokenizer pieces'. Checked for the logs that say what they counted (``parse_log``'s ``val_bytes``)."""
    data = sub.get("data")
    if not isinstance(data, dict) or "val_bytes_sidecar" not in data:
        return
    want = "sidecar" if data["val_bytes_sidecar"] else "pieces"
    names = {"sidecar": "the validation byte sidecar", "pieces": "the tokenizer's pieces"}
    for rel, info in report.logs.items():
        if info.get("val_bytes") not in (None, want):
            report.add(
                VIOLATION,
                f"{rel}: val_bpb counted the bytes of {names[info['val_bytes']]}, but the data set"
                f" ({data.get('name')}) calls for {names[want]} (submission.json data.val_bytes_sidecar)",
            )


def _check_run(
    report: Report,
    rel: str,
    info: dict,
    cap_bytes: int,
    train_budget_s: float,
    eval_budget_s: float,
    overshoot_steps: float,
) -> None:
    """A backing log: it starts as a log does, its artifact is within the cap, train and eval time within budget."""
    ev = info["evidence"]
    if not info["start"]["ok"]:
        report.add(VIOLATION, f"{rel}: not a valid log: {info['start']['why']}", info["start"]["first"])
    total = _logged_total(info)
    if total is not None and total - info["bytes_total_resolution"] > cap_bytes:
        report.add(
            VIOLATION,
            f"{rel}: code + model = {total} bytes, over the {cap_bytes}-byte cap",
            ev.get("bytes_total") or ev.get("model_bytes"),
        )
    if not report.enforce_time:
        return
    ms = info["train_time_ms"]
    if ms is None:
        if info["steps"] is not None:
            report.add(WARNING, f"{rel}: no train time logged")
    else:
        calib = info.get("calib_ms") or 0.0
        total_ms = ms + calib  # calibration reads training data: it counts against the training budget
        allowance = overshoot_steps * ms / info["steps"] if info["stopped_early"] and info["steps"] else 0.0
        if total_ms > train_budget_s * 1000 + allowance:
            extra = f" = {ms:.0f} ms of training + {calib:.0f} ms of calibration on training data" if calib else ""
            extra += f" (allowing {allowance:.0f} ms for the step in flight at the cap)" if allowance else ""
            quote = ev.get("train_time_ms", "")
            if calib:
                quote += f"; {ev.get('calib')}"
            report.add(
                VIOLATION, f"{rel}: train time {total_ms:.0f} ms{extra} exceeds the {train_budget_s:g} s budget", quote
            )
        if info.get("calib_selfgen_ms"):
            report.add(
                NOTE,
                f"{rel}: {info['calib_selfgen_ms']:.0f} ms of calibration on self-generated data (no training data) "
                "not counted as training",
                ev.get("calib_selfgen"),
            )
    score = report.seeds.get(next((s for s, v in report.seeds.items() if v["log"] == rel), -1), {}).get("score")
    if info["total_eval_time_s"] is not None:
        if info["total_eval_time_s"] > eval_budget_s:
            report.add(
                VIOLATION,
                f"{rel}: eval time {info['total_eval_time_s']:.1f} s exceeds the {eval_budget_s:g} s budget",
                ev.get("total_eval_time_s"),
            )
    elif score is not None and score.get("eval_time_ms") is not None and score["eval_time_ms"] > eval_budget_s * 1e3:
        report.add(
            VIOLATION,
            f"{rel}: the score's evaluation alone took {score['eval_time_ms'] / 1000:.1f} s, over the "
            f"{eval_budget_s:g} s budget",
            score.get("line"),
        )
    elif info["eval_time_s"] is not None and info["eval_time_s"] > eval_budget_s and info["eval_times_ms"]:
        report.add(
            WARNING,
            f"{rel}: its evaluations add up to {info['eval_time_s']:.1f} s (over {eval_budget_s:g} s), diagnostics "
            "included; no total_eval_time line says what the submitted evaluation took",
        )


def _logged_total(info: dict) -> int | None:
    """The artifact size a log shows: its total, else model + code; None when it shows neither."""
    if info["bytes_total"] is not None:
        return info["bytes_total"]
    if info["model_bytes"] is not None and info["code_bytes"] is not None:
        return info["model_bytes"] + info["code_bytes"]
    return None


def _check_code(report: Report, record_dir: Path, script: Path | None, backing: list[str], cap: int) -> None:
    """Code size: logged vs shipped (a warning), and code shipped beside the script that the run used but the logged
    total does not count (a violation when it takes the total over the cap)."""
    if script is None:
        return
    size = script.stat().st_size
    texts = [(record_dir / rel).read_text(encoding="utf-8", errors="replace") for rel in backing]
    used = _used_code(record_dir, script, texts)
    shipped = size + sum(p.stat().st_size for p in used)
    report.shipped_code = shipped
    names = ", ".join([script.name] + [p.relative_to(record_dir).as_posix() for p in used])
    if used:
        report.add(NOTE, f"code the run uses: {names} ({shipped} bytes)")
    sizes = {size, shipped} | {p.stat().st_size for p in used}
    for rel in backing:
        info = report.logs[rel]
        logged = info["code_bytes_uncompressed"]
        if logged is not None and logged not in sizes:
            report.add(
                WARNING,
                f"{rel}: logs a code size of {logged} bytes but {script.name} is {size} bytes ({size - logged:+d} "
                "bytes): the shipped code is not the code that made this log",
                info["evidence"].get("code_bytes"),
            )
        uncounted = max(0, shipped - max(logged, size)) if logged is not None else shipped - size
        total = info["bytes_total"]
        if total is None and info["model_bytes"] is not None and info["code_bytes"] is not None:
            total = info["model_bytes"] + info["code_bytes"]
        if used and uncounted > 0:
            report.uncounted[rel] = uncounted
        if used and uncounted > 0 and total is not None and total <= cap < total + uncounted:
            report.add(
                VIOLATION,
                f"{rel}: the logged total {total} bytes leaves out {uncounted} bytes of code the run uses ({names}); "
                f"counted, the artifact is {total + uncounted} bytes, over the {cap}-byte cap",
                info["evidence"].get("bytes_total"),
            )


def _seed_info(report: Report) -> dict[int, dict]:
    """{seed: parsed backing log with ``score`` set to the line the record's score was read from}."""
    out = {}
    for seed, v in report.seeds.items():
        info = dict(report.logs[v["log"]])
        info["score"] = {"tag": v["score"]["tag"], "val_bpb": v["score"]["val_bpb"], "val_loss": v["score"]["val_loss"]}
        train = report.logs[v["train_log"]]
        for key in ("steps", "train_time_ms", "step_avg_ms", "step_avg_logged", "pre_quant"):
            if info.get(key) is None:
                info[key] = train.get(key)
        info["all_final"] = [report.logs[rel]["final"] for rel in report.seed_logs.get(seed, [v["log"]])]
        out[seed] = info
    return out


def _check_submission(report: Report, sub: dict, cap: int) -> None:
    """submission.json against the logs: over the cap is a violation; disagreements are warnings."""
    scored = _seed_info(report)
    for key in ("bytes_total",):  # a non-numeric val_bpb/val_loss: pgolf.rules.scores_are_numbers
        if key in sub and not _is_number(sub[key]):
            report.add(WARNING, f"submission.json: {key} is not a number ({sub[key]!r})")
    if _is_number(sub.get("bytes_total")) and sub["bytes_total"] > cap:
        report.add(VIOLATION, f"submission.json: bytes_total {sub['bytes_total']} is over the {cap}-byte cap")
    if scored and _is_number(sub.get("val_loss")) and _is_number(sub.get("val_bpb")):
        losses = [i["score"]["val_loss"] for i in scored.values()]
        options = [sum(losses) / len(losses), *losses]
        if not any(close(sub["val_loss"], x) for x in options):
            each = ", ".join(f"{_seed_name(s)}: {x}" for s, x in zip(scored, losses, strict=True))
            report.add(
                WARNING,
                f"submission.json: val_loss {sub['val_loss']} is neither the mean over seeds ({options[0]:.8f}) nor a "
                f"seed's logged value ({each})",
            )
    totals = {s: i["bytes_total"] for s, i in scored.items() if i["bytes_total"] is not None}
    if _is_number(sub.get("bytes_total")) and totals and sub["bytes_total"] not in totals.values():
        mean_total = sum(totals.values()) / len(totals)
        how = " (their mean, rounded)" if abs(sub["bytes_total"] - mean_total) <= 1 else ""
        if not how:
            models = {i["model_bytes"] for i in scored.values()} - {None}
            how = " (a logged model size: the code is not counted)" if sub["bytes_total"] in models else ""
        report.add(
            NOTE if how == " (their mean, rounded)" else WARNING,
            f"submission.json: bytes_total {sub['bytes_total']} is no seed's logged total{how} "
            f"({', '.join(f'{_seed_name(s)}: {t}' for s, t in totals.items())})",
        )
    codes = {i["code_bytes"] for i in scored.values() if i["code_bytes"] is not None}
    codes |= {i["code_bytes_uncompressed"] for i in scored.values() if i["code_bytes_uncompressed"] is not None}
    if _is_number(sub.get("bytes_code")) and codes and sub["bytes_code"] not in codes:
        report.add(
            WARNING,
            f"submission.json: bytes_code {sub['bytes_code']} disagrees with the logged code size "
            f"({', '.join(str(c) for c in sorted(codes))})",
        )
    _check_spread(report, sub, scored)

    for seed, entry in _seed_results(sub).items():
        if seed not in scored:
            continue
        info = scored[seed]
        where = f"submission.json: seed_results[{seed}]"
        score = info["score"]
        for metric in ("val_bpb", "val_loss"):
            if metric in entry and (not _is_number(entry[metric]) or not close(entry[metric], score[metric])):
                report.add(WARNING, f"{where}.{metric} {entry[metric]} disagrees with the log ({score[metric]})")
        for key in ("artifact_bytes", "bytes_total"):
            allowed = {info["bytes_total"], info["model_bytes"]} - {None}
            if key in entry and allowed and entry[key] not in allowed:
                report.add(
                    WARNING,
                    f"{where}.{key} {entry[key]} is neither the logged total nor the logged model size "
                    f"({', '.join(str(a) for a in sorted(allowed))})",
                )
        if _is_number(entry.get("steps")) and info["steps"] is not None and entry["steps"] != info["steps"]:
            report.add(WARNING, f"{where}.steps {entry['steps']} disagrees with the log ({info['steps']})")
        logged = {
            "train_time_s": None if info["train_time_ms"] is None else info["train_time_ms"] / 1000.0,
            "train_time_ms": info["train_time_ms"],
            "eval_time_s": info["eval_time_s"],
            "step_avg_ms": info["step_avg_ms"] if info["step_avg_logged"] else None,
            "pre_quant_val_bpb": (info["pre_quant"] or {}).get("val_bpb"),
        }
        for key, value in logged.items():
            if entry.get(key) is not None and value is not None:
                if not _is_number(entry[key]) or not _close_to_log(entry[key], value):
                    report.add(WARNING, f"{where}.{key} {entry[key]} disagrees with the log ({value})")


def _close_to_log(submitted: float, logged: float) -> bool:
    """``close``, also allowing the resolution either side printed its value with (``total_eval_time:60.0s``,
    ``train_time:240259ms``, a submission's one-decimal ``step_avg``)."""
    resolution = max(10.0 ** -_decimals(logged), 10.0 ** -_decimals(submitted))
    return abs(float(submitted) - float(logged)) <= max(tolerance(submitted), resolution) * (1 + 1e-9) + 1e-12


def _check_spread(report: Report, sub: dict, scored: dict[int, dict]) -> None:
    """submission.json's pre-quant figures (the mean over seeds or one seed's) and stds (sample or population)."""
    pre = [i["pre_quant"] for i in scored.values() if i["pre_quant"] is not None]
    for key in ("pre_quant_val_bpb", "pre_quant_val_loss"):
        metric = key.removeprefix("pre_quant_")
        if _is_number(sub.get(key)) and pre and len(pre) == len(scored):
            values = [p[metric] for p in pre]
            options = [sum(values) / len(values), *values]
            if not any(close(sub[key], v) for v in options):
                report.add(
                    WARNING,
                    f"submission.json: {key} {sub[key]} matches neither the mean over seeds ({options[0]:.8f}) nor "
                    f"any seed's logged value ({', '.join(str(v) for v in values)})",
                )
    for key in ("val_bpb_std", "val_loss_std"):
        metric = key.removesuffix("_std")
        if _is_number(sub.get(key)) and len(scored) >= 2:
            values = [i["score"][metric] for i in scored.values()]
            sample, population = statistics.stdev(values), statistics.pstdev(values)
            if not any(_close_to_log(sub[key], x) for x in (sample, population)):
                report.add(
                    WARNING,
                    f"submission.json: {key} {sub[key]} is neither the sample ({sample:.8f}) nor the population "
                    f"({population:.8f}) std of the logged seeds",
                )


_HEADLINE = re.compile(r"\*\*\s*val_bpb\s*[:=]\s*(?P<x>\d+\.\d+)\s*\*\*")
_CELL_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")
_SKIP_HEADER = re.compile(
    r"delta|diff|improv|\bvs\b|gain|std|reference|previous|baseline|leader|pre[- ]?ttt|post[- ]?ema|standard|"
    r"diagnostic|before|without|no[- ]ttt|\bbase\b|ablation|\bprior\b",
    re.IGNORECASE,
)


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
    if "train time" in h or "training time" in h or re.fullmatch(r"train(?:ing)? (?:ms|s|sec|seconds|\(ms\)|\(s\))", h):
        return "train time", lambda i: scaled(i["train_time_ms"]), False
    if "eval time" in h or re.search(r"\beval (?:ms|s|sec|seconds|\(ms\)|\(s\))$", h):
        return "eval time", lambda i: scaled(None if i["eval_time_s"] is None else i["eval_time_s"] * 1000.0), False
    if "artifact" in h:
        return "artifact bytes", lambda i: {i["bytes_total"], i["model_bytes"]} - {None} or None, True
    if "total" in h and ("byte" in h or "size" in h):
        return "total bytes", lambda i: i["bytes_total"], True
    if re.search(r"pre[- ]?quant", h):
        return f"pre-quant {metric}", lambda i: (i["pre_quant"] or {}).get(metric), False
    if "roundtrip" in h or re.search(r"post[- ]?quant", h):
        return f"roundtrip {metric}", lambda i: _logged_values(i, metric, "roundtrip"), False
    for kind in ("sliding", "ttt"):
        if kind in h:
            return f"{kind} {metric}", lambda i, k=kind: _logged_values(i, metric, k), False
    if "bpb" in h or "loss" in h or h == "score":
        return f"score {metric}", lambda i: _logged_values(i, metric, None), False
    return None


def _logged_values(info: dict, metric: str, kind: str | None) -> set | None:
    """Every value of ``metric`` the seed's logs give on score lines of one kind (``score_kind``; any kind but
    pre-quantization when None): a README column is read as any of the evaluations its seed logged."""
    values = set()
    for final in info.get("all_final") or [info["final"]]:
        for tag, entry in final.items():
            k = score_kind({"tag": tag, **entry})
            if k != "pre_quant" and (kind is None or k == kind):
                values.add(entry[metric])
    return values or None


def _number(cell: str) -> str | None:
    cleaned = re.sub(r"[*`\s,]", "", cell)
    return cleaned if _CELL_NUMBER.fullmatch(cleaned) else None


def check_readme(text: str, report: Report) -> list[str]:
    """Where README.md's headline val_bpb or its per-seed results tables disagree with the logs (warnings).

    Columns are read by meaning (``_readme_column``); columns of another reading (pre-TTT, post-EMA, "standard",
    diagnostic, deltas, stds, baselines) are not checked.
    """
    problems = []
    scored = _seed_info(report)
    by_seed = {s: (report.seeds[s]["log"], i) for s, i in scored.items()}
    if scored and (m := _HEADLINE.search(text)):
        shown = m.group("x")
        n = len(scored)
        options = [sum(i["score"]["val_bpb"] for i in scored.values()) / n]
        options += [i["score"]["val_bpb"] for i in scored.values()]
        if not any(_readme_close(shown, x, exact=False) for x in options):
            seeds_txt = ", ".join(f"{_seed_name(s)}: {i['score']['val_bpb']}" for s, i in scored.items())
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
                seed = report.aliases.get(int(key), int(key))
                if seed not in by_seed:
                    continue  # claimed seeds without a log are reported once, as violations
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


def _num(x, spec: str = ",.0f", unit: str = "") -> str:
    return "n/a" if x is None else format(x, spec) + unit


def _margin(x, spec: str, unit: str) -> str:
    if x is None:
        return "n/a"
    return ("+" if x >= 0 else "-") + format(abs(x), spec) + unit + (" left" if x >= 0 else " OVER")


def format_figures(report: Report) -> list[str]:
    """The per-seed figures of a report (``figures``), one block per seed."""
    lines = []
    for seed, f in report.figures.items():
        lines.append(f"  seed {_seed_name(seed)}: val_bpb {f['val_bpb']} val_loss {f['val_loss']}  ({f['log']})")
        if f["score_line"]:
            lines.append(f"      score: {f['score_line']}")
        lines.append(
            f"      bytes: {_num(f['bytes_counted'])} counted, {_num(f['bytes_shipped'])} shipped "
            f"(model + code files as shipped) vs {f['cap_bytes']:,}: margin {_margin(f['bytes_margin'], ',.0f', ' B')}"
            + (f", shipped {_margin(f['bytes_shipped_margin'], ',.0f', ' B')}" if f["bytes_shipped"] else "")
        )
        counted_script = f["code_counted_shipped_script"]
        lines.append(
            f"      code: {_num(f['code_counted'])} B counted by the log, {_num(f['code_shipped'])} B shipped"
            + (f", shipped script counted as upstream: {counted_script:,} B" if counted_script is not None else "")
        )
        limit = "" if f["time_limits"] else " (no time limit on this track)"
        lines.append(
            f"      train: {_num(f['train_loop_s'], '.1f', ' s')} loop + {f['calibration_s']:.1f} s calibration on "
            f"training data = {_num(f['train_s'], '.1f', ' s')} vs {f['train_budget_s']:g} s: "
            f"margin {_margin(f['train_margin_s'], '.1f', ' s')}{limit}"
        )
        lines.append(
            f"      eval: {_num(f['eval_s'], '.1f', ' s')} vs {f['eval_budget_s']:g} s: "
            f"margin {_margin(f['eval_margin_s'], '.1f', ' s')}{limit}"
        )
    return lines


def _group(text: str) -> str:
    """The group a warning is listed under: the file it is about (README.md, submission.json, a log), else other."""
    head = text.split(":", 1)[0]
    if head in ("README.md", "submission.json") or head.endswith((".log", ".txt", ".json")):
        return head
    if head.startswith("seed "):
        return "seeds"
    return "other"


def format_report(report: Report, verbose: bool = False) -> str:
    """A reviewer's reading of a report: the verdict, the figures per seed, the violations (most severe first), the
    warnings grouped by the file they are about (and notes when ``verbose``)."""
    n = len(report.seeds)
    head = f"{report.verdict}: {report.record_dir} ({report.track}; {n} seed(s) scored"
    head += f", score from {report.score_kind} lines)" if report.score_kind else ")"
    lines = [head, *format_figures(report)]
    for f in sorted(report.violations, key=lambda f: severity_rank(f.text)):
        lines.append(f"  violation: {f.text}")
        if f.evidence:
            lines.append(f"      {f.evidence}")
    groups: dict[str, list[Finding]] = {}
    for f in report.warnings:
        groups.setdefault(_group(f.text), []).append(f)
    for group, items in groups.items():
        lines.append(f"  warnings ({group}, {len(items)}):")
        for f in items:
            lines.append(f"    - {f.text}")
            if f.evidence:
                lines.append(f"        {f.evidence}")
    if verbose:
        for f in report.findings:
            if f.severity == NOTE:
                lines.append(f"  note: {f.text}")
                if f.evidence:
                    lines.append(f"      {f.evidence}")
    return "\n".join(lines)


def _by_severity(findings: list[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: severity_rank(f.text))


def report_json(report: Report, root: str | os.PathLike | None = None) -> dict:
    """A report as data for tools (``--json``): the verdict, the figures per seed, each finding with its evidence."""
    folder = report.record_dir
    if root is not None and folder.is_relative_to(root):
        folder = folder.relative_to(root)
    worst = report.worst
    return {
        "folder": str(folder),
        "verdict": report.verdict,
        "track": report.track,
        "score_kind": report.score_kind,
        "seeds": {_seed_name(s): f for s, f in report.figures.items()},
        "most_severe": None if worst is None else {"severity": worst.severity, "text": worst.text},
        "violations": [
            {"text": f.text, "evidence": f.evidence}
            for f in sorted(report.violations, key=lambda f: severity_rank(f.text))
        ],
        "warnings": [{"text": f.text, "evidence": f.evidence, "group": _group(f.text)} for f in report.warnings],
        "notes": [f.text for f in report.findings if f.severity == NOTE],
    }


def find_records(root: str | os.PathLike) -> list[Path]:
    """Record folders under ``root``: folders holding a submission*.json, README.md or a log, whose parent does not
    (``root`` itself when it is one)."""
    root = Path(root)
    if (
        (root / "README.md").is_file()
        and (submission_path(root) or find_logs(root))
        and root.parent.name in TRACK_RULES
    ):
        return [root]
    out = []
    for track in sorted(p for p in root.iterdir() if p.is_dir()):
        if track.name in TRACK_RULES or track.name.startswith("track_"):
            out += sorted(p for p in track.iterdir() if p.is_dir() and not p.name.startswith("."))
        elif track.name not in ("__pycache__",) and not track.name.startswith("."):
            out.append(track)
    return out


def _table_margins(r: Report) -> str:
    """The smallest margins over the seeds: bytes, train seconds, eval seconds."""
    figs = list(r.figures.values())

    def least(key):
        vals = [f[key] for f in figs if f[key] is not None]
        return min(vals) if vals else None

    b, t, e = least("bytes_margin"), least("train_margin_s"), least("eval_margin_s")
    out = f"{_num(b, ',.0f')} B"
    if r.enforce_time:
        out += f" {_num(t, '.1f')} s {_num(e, '.1f')} s"
    return out


def check_table(reports: list[Report], root: str | os.PathLike | None = None, markdown: bool = False) -> str:
    """One line per folder: folder, verdict, counts, the smallest margins (bytes, train s, eval s), and its most
    severe violation (time or bytes before seeds before a missing key; ``Report.worst``), else its first warning.
    ``markdown``: a Markdown table (the GitHub Action's job summary)."""
    rows = []
    for r in reports:
        folder = (
            str(r.record_dir.relative_to(root)) if root and r.record_dir.is_relative_to(root) else str(r.record_dir)
        )
        first = r.worst
        why = "" if first is None else ("" if r.violations else "(warning) ") + first.text
        rows.append((folder, r.verdict, f"{len(r.violations)}v/{len(r.warnings)}w", _table_margins(r), why))
    passed = sum(1 for r in reports if not r.violations)
    if markdown:
        lines = ["| folder | verdict | found | margins (bytes, train, eval) | most severe violation (else warning) |"]
        lines.append("|---|---|---|---|---|")
        for folder, verdict, counts, margins, why in rows:
            cell = why.replace("|", "\\|")[:300]
            lines.append(f"| `{folder}` | **{verdict}** | {counts} | {margins} | {cell} |")
        lines.append("")
        lines.append(f"{passed} of {len(reports)} folder(s) pass")
        return "\n".join(lines)
    width = max([len(f) for f, *_ in rows] + [6])
    mwidth = max([len(m) for *_, m, _ in rows] + [7])
    lines = [f"{'folder':<{width}}  verdict  found   {'margins':<{mwidth}}  most severe violation (else first warning)"]
    for folder, verdict, counts, margins, why in rows:
        lines.append(f"{folder:<{width}}  {verdict:<7}  {counts:<6}  {margins:<{mwidth}}  {why[:160]}")
    lines.append(f"{passed} of {len(reports)} folder(s) pass")
    return "\n".join(lines)


def describe(problems: list[str]) -> str:
    """Problems as an indented bullet list (for error messages)."""
    return "\n".join(f"  - {p}" for p in problems)


def _cmd_check(args: argparse.Namespace) -> int:
    """``pgolf check DIR``: one folder, its figures and findings; ``pgolf check --all DIR``: every record under DIR,
    one table; ``--json``: the same as data."""
    import json

    options = dict(
        min_seeds=args.min_seeds,
        enforce_time=False if args.no_time_limits else None,
        require_script=not args.no_script,
    )
    if args.all:
        root = Path(args.record_dir)
        if not root.is_dir():
            print(f"{root}: not a folder")
            return 2
        reports = [inspect_record(d, **options) for d in find_records(root)]
        if args.json:
            print(json.dumps([report_json(r, root) for r in reports], indent=1))
        else:
            print(check_table(reports, root, markdown=args.markdown))
        return 1 if any(r.violations for r in reports) else 0
    report = inspect_record(args.record_dir, **options)
    print(json.dumps(report_json(report), indent=1) if args.json else format_report(report, verbose=args.verbose))
    return 1 if report.violations else 0


def register(subparsers) -> None:
    """Add the ``check`` subcommand."""
    p = subparsers.add_parser("check", help="check a record folder against the rules and its logs")
    p.add_argument("record_dir", help="a record folder (or, with --all, a records/ tree)")
    p.add_argument("--all", action="store_true", help="check every record folder under record_dir; print one table")
    p.add_argument(
        "--min-seeds", type=int, default=None, help="seeds required (default: the track's rule, 3 for a record, 1 else)"
    )
    p.add_argument("--no-time-limits", action="store_true", help="do not enforce the train/eval time budgets")
    p.add_argument("--no-script", action="store_true", help="accept a folder without train_gpt.py")
    p.add_argument("-v", "--verbose", action="store_true", help="also print the notes (which log backs which seed)")
    p.add_argument("--json", action="store_true", help="print the verdict, figures and findings as JSON")
    p.add_argument("--markdown", action="store_true", help="with --all: the table in Markdown (a job summary)")
    p.set_defaults(func=_cmd_check)
