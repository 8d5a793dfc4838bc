"""One record folder, parsed once: ``parse_record`` reads submission.json, README.md (its text and tables), every log
(with the lines the rules need beyond ``pgolf.logs.parse_log``: hardware, the validation scope, the embedded source),
the training script and the code shipped beside it. ``pgolf check`` applies its rules to this object, ``pgolf
compare`` reads scores from the report built on it, and ``pgolf record`` checks the folder it wrote through it.

Nothing here imports or runs code from the folder: scripts are read as text (and minified as text, to count them as
upstream does, ``counted_code_size``).
"""

from __future__ import annotations

import ast
import base64
import difflib
import functools
import hashlib
import inspect
import lzma
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from pgolf.fsio import read_json
from pgolf.logs import parse_log
from pgolf.valscope import VAL_SCOPE

RECORD_TRACK = "track_10min_16mb"
NON_RECORD_TRACK = "track_non_record_16mb"
TRACK_RULES = {
    RECORD_TRACK: {"min_seeds": 3, "enforce_time": True},
    NON_RECORD_TRACK: {"min_seeds": 1, "enforce_time": False},
}
_LOG_SUFFIXES = (".log", ".txt")
_NOT_LOGS = re.compile(r"^(requirements.*|readme.*|license.*|notes?.*|results?.*)\.(txt|log)$", re.IGNORECASE)
SEED_IN_NAME = re.compile(r"seed[_-]?(\d+)", re.IGNORECASE)

# lines parse_log does not read
_VAL_TOKENS = re.compile(r"^val_tokens:\s*(\d+)\s*$")
_SMI_GPU = re.compile(r"^\|\s+(\d+)\s+(NVIDIA\s.*?|Tesla\s.*?)\s{2,}(?:On|Off)\s+\|")
_WORLD_SIZE = re.compile(r"^\s*world_size:\s*(\d+)\s*$")
_CODE_END = re.compile(r"^={100}$", re.MULTILINE)
_CODE_START = re.compile(r"^(\"\"\"|'''|#|import\s|from\s|\"[A-Z])")


def submission_path(record_dir: str | os.PathLike) -> Path | None:
    """The folder's submission.json, else its single ``submission*.json``; None when there is none."""
    record_dir = Path(record_dir)
    if (record_dir / "submission.json").is_file():
        return record_dir / "submission.json"
    others = sorted(p for p in record_dir.glob("submission*.json") if p.is_file())
    return others[0] if len(others) == 1 else None


def read_submission(record_dir: str | os.PathLike) -> dict:
    """The submission JSON of a record folder (``submission_path``), or {} when it is missing or unreadable."""
    path = submission_path(record_dir)
    if path is None:
        return {}
    try:
        data = read_json(path)
    except (FileNotFoundError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def record_track(record_dir: str | os.PathLike, sub: dict | None = None) -> tuple[str, str]:
    """(track, where it came from): the parent folder's name, else submission.json's ``track``/``non_record``."""
    record_dir = Path(record_dir).resolve()
    if record_dir.parent.name in TRACK_RULES:
        return record_dir.parent.name, f"the folder is under {record_dir.parent.name}/"
    sub = read_submission(record_dir) if sub is None else sub
    track = str(sub.get("track") or "").lower()
    if sub.get("non_record") is True or "non" in track:
        return NON_RECORD_TRACK, f"submission.json track {sub.get('track')!r} / non_record {sub.get('non_record')!r}"
    if "10min" in track or sub.get("non_record") is False:
        return RECORD_TRACK, f"submission.json track {sub.get('track')!r}"
    return RECORD_TRACK, "no track named (folder or submission.json): the record track's rules apply"


def _is_log(info: dict) -> bool:
    return bool(
        info["steps"] is not None
        or info["final"]
        or info["bytes_total"] is not None
        or info["model_bytes"] is not None
        or info["summaries"]
    )


def _log_files(record_dir: Path) -> list[Path]:
    out = []
    for path in sorted(record_dir.rglob("*")):
        rel = path.relative_to(record_dir)
        if not path.is_file() or path.suffix.lower() not in _LOG_SUFFIXES or _NOT_LOGS.match(path.name):
            continue
        if any(part.startswith(".") for part in rel.parts) or len(rel.parts) > 3:
            continue
        out.append(path)
    return out


def find_logs(record_dir: str | os.PathLike) -> dict[str, dict]:
    """Every training/evaluation log of a folder and its subfolders: {relative path: parsed log}."""
    record_dir = Path(record_dir)
    out: dict[str, dict] = {}
    for path in _log_files(record_dir):
        info = parse_log(path)
        if _is_log(info):
            out[path.relative_to(record_dir).as_posix()] = info
    return out


def log_extras(text: str) -> dict:
    """What a log shows beyond ``parse_log``: ``val_scope`` (our ``val_scope:`` line: scored and split tokens/bytes,
    with its evidence), ``val_tokens`` (an upstream ``val_tokens: N`` line), ``gpus`` (the nvidia-smi table's GPU
    rows: [(index, name)]), ``world_size``, ``hardware_evidence`` and ``embedded_code`` (the script source a log
    begins with, as upstream's baseline logs it, before a line of 100 ``=``; None when there is none)."""
    out: dict = {"val_scope": [], "val_tokens": None, "gpus": {}, "world_size": None, "evidence": {}}
    for lineno, raw in enumerate(re.split(r"\r\n|\r|\n", text), start=1):
        line = raw.strip()
        if m := VAL_SCOPE.match(line):  # the line as the training script writes it (pgolf.valscope)
            scope = {k: int(v) for k, v in m.groupdict().items()}
            out["val_scope"].append({**scope, "line": f"line {lineno}: {line[:200]}"})
        elif m := _VAL_TOKENS.match(line):
            out["val_tokens"] = int(m.group(1))
            out["evidence"]["val_tokens"] = f"line {lineno}: {line[:200]}"
        elif m := _SMI_GPU.match(line):
            out["gpus"].setdefault(int(m.group(1)), m.group(2).strip())
            out["evidence"].setdefault("gpus", f"line {lineno}: {line[:200]}")
        elif (m := _WORLD_SIZE.match(raw)) and out["world_size"] is None:
            out["world_size"] = int(m.group(1))
            out["evidence"]["world_size"] = f"line {lineno}: {line[:200]}"
    out["embedded_code"] = embedded_code(text)
    return out


def embedded_code(text: str) -> str | None:
    """The source a log begins with (upstream's ``log0(code)`` then ``log0("=" * 100)``), without the newline the
    logger added; None when the log does not begin with Python source followed by such a line."""
    first = next((line for line in text.splitlines() if line.strip()), "")
    if not _CODE_START.match(first.strip()):
        return None
    m = _CODE_END.search(text)
    if not m:
        return None
    code = text[: m.start()]
    return code[:-1] if code.endswith("\n") else code


def code_difference(logged: str, shipped: str) -> str:
    """A one-line summary of how the shipped source differs from the logged one: bytes, lines changed, where."""
    a, b = logged.splitlines(), shipped.splitlines()
    changed, where = 0, []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        changed += max(i2 - i1, j2 - j1)
        where.append(f"{j1 + 1}" if j2 - j1 <= 1 else f"{j1 + 1}-{j2}")
    delta = len(shipped.encode()) - len(logged.encode())
    places = ", ".join(where[:5]) + (f" and {len(where) - 5} more" if len(where) > 5 else "")
    return f"{delta:+d} bytes, {changed} line(s) changed (shipped file's lines {places})"


# ----------------------------------------------------------------------------------------------------------------
# counted code size: upstream's ``_compressed_code_size`` (pyminify, then lzma or brotli, base85, an exec wrapper)

DEFAULT_RECIPE = {
    "flags": ("--no-rename-locals", "--no-hoist-literals", "--remove-literal-statements"),
    "compressor": "brotli",
    "prefix": b'import brotli as B,base64 as A\nexec(B.decompress(A.b85decode("',
    "suffix": b'")))\n',
}
_RECIPE_FN = re.compile(r"^def _compressed_code_size\(.*?(?=^\S)", re.MULTILINE | re.DOTALL)
_BYTES = r"(b(?:'(?:[^'\\\n]|\\.)*'|\"(?:[^\"\\\n]|\\.)*\"))"  # a bytes literal, escapes included
_WRAPPER = re.compile(r"wrapper\s*=\s*" + _BYTES + r"\s*\+\s*encoded\s*\+\s*" + _BYTES)


def code_recipe(script_text: str) -> dict | None:
    """How a script counts its own code (its ``_compressed_code_size``): pyminify flags, compressor, exec wrapper;
    None when the script has no such function."""
    m = _RECIPE_FN.search(script_text)
    if not m:
        return None
    body = m.group(0)
    flags = tuple(re.findall(r"\"(--[a-z-]+)\"", body))
    compressor = "lzma" if "lzma.compress(" in body else "brotli" if "brotli.compress(" in body else None
    w = _WRAPPER.search(body)
    if compressor is None or w is None:
        return None
    try:
        prefix, suffix = ast.literal_eval(w.group(1)), ast.literal_eval(w.group(2))
    except (ValueError, SyntaxError):
        return None
    return {"flags": flags or DEFAULT_RECIPE["flags"], "compressor": compressor, "prefix": prefix, "suffix": suffix}


@functools.lru_cache(maxsize=64)
def _counted(digest: str, text: str, flags: tuple, compressor: str, prefix: bytes, suffix: bytes) -> int | None:
    import python_minifier

    params = inspect.signature(python_minifier.minify).parameters
    kwargs = {}
    for flag in flags:
        name = flag.removeprefix("--").replace("-", "_")
        key, value = (name.removeprefix("no_"), False) if name.startswith("no_") else (name, True)
        if key in params:
            kwargs[key] = value
    try:
        minified = python_minifier.minify(text, **kwargs).encode("utf-8")
    except Exception:  # noqa: BLE001 - not Python the minifier reads: not countable this way
        return None
    if compressor == "lzma":
        packed = lzma.compress(minified)
    else:
        import brotli

        packed = brotli.compress(minified, quality=11)
    return len(prefix) + len(base64.b85encode(packed)) + len(suffix)


def counted_code_size(script_text: str, recipe: dict | None = None) -> int | None:
    """The code's size as upstream counts it: ``pyminify`` (python-minifier, flags of the script's own
    ``_compressed_code_size``, else ``DEFAULT_RECIPE``), lzma or brotli (quality 11), base85, inside its exec wrapper.
    None when the source does not minify (not Python)."""
    r = recipe or code_recipe(script_text) or DEFAULT_RECIPE
    digest = hashlib.sha256(script_text.encode()).hexdigest()
    return _counted(digest, script_text, tuple(r["flags"]), r["compressor"], r["prefix"], r["suffix"])


# ----------------------------------------------------------------------------------------------------------------
# README tables, claimed seeds


def tables(text: str) -> list[list[list[str]]]:
    """Markdown tables of a text: each a list of rows of stripped cells (the ``---`` separator row dropped)."""
    found, current = [], []
    for line in text.splitlines() + [""]:
        stripped = line.strip()
        if stripped.startswith("|"):
            cells = [c.strip() for c in stripped.strip("|").split("|")]
            if not all(re.fullmatch(r":?-+:?", c) for c in cells if c):
                current.append(cells)
        elif current:
            found.append(current)
            current = []
    return found


def readme_seeds(readme_tables: list[list[list[str]]]) -> list[int]:
    """Seeds a README's results tables list (a ``seed`` column)."""
    seeds: list[int] = []
    for table in readme_tables:
        header = [re.sub(r"[*`]", "", c).strip().lower() for c in table[0]]
        if "seed" not in header:
            continue
        col = header.index("seed")
        for row in table[1:]:
            key = re.sub(r"[*`\s]", "", row[col]) if len(row) > col else ""
            if re.fullmatch(r"\d+", key) and int(key) not in seeds:
                seeds.append(int(key))
    return seeds


def seed_results(sub: dict) -> dict[int, dict]:
    """submission.json's per-seed entries (``seed_results``, or ``seeds`` given as an object), keyed by seed."""
    out: dict[int, dict] = {}
    for key in ("seed_results", "seeds"):
        block = sub.get(key)
        if isinstance(block, dict):
            for k, v in block.items():
                if isinstance(v, dict) and re.fullmatch(r"\d+", str(k)):
                    out.setdefault(int(k), v)
    return out


def submission_seeds(sub: dict) -> list[int]:
    """Seeds submission.json names (``seeds``, ``seed_results`` keys, ``seed``), deduplicated, in order."""
    found: list[int] = []
    seeds = sub.get("seeds")
    candidates = list(seeds.keys()) if isinstance(seeds, dict) else list(seeds or []) if isinstance(seeds, list) else []
    candidates += list(seed_results(sub).keys())
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


def disclosed_best_of(sub: dict, readme_text: str = "") -> tuple[int, int] | None:
    """(N, M) where submission.json or README.md discloses "best N of M seeds" (``best_of``/``seeds_run`` keys or the
    phrase); None when nothing says so."""
    for key in ("best_of", "seeds_run", "seeds_tried", "n_seeds_run"):
        v = sub.get(key)
        if isinstance(v, int) and not isinstance(v, bool):
            n = len(submission_seeds(sub)) or 1
            return n, v
    for text in (str(sub.get("blurb") or ""), readme_text):
        if m := re.search(r"best\s+(\d+)\s+(?:of|out of)\s+(\d+)\s+(?:seeds|runs)", text, re.IGNORECASE):
            return int(m.group(1)), int(m.group(2))
    return None


# ----------------------------------------------------------------------------------------------------------------
# the parsed record


@dataclass
class RecordFolder:
    """A record folder read once: every rule of ``pgolf.rules`` is a function of this object."""

    path: Path
    exists: bool
    sub_path: Path | None = None
    sub: dict = field(default_factory=dict)
    sub_error: str | None = None
    readme_text: str = ""
    has_readme: bool = False
    readme_tables: list = field(default_factory=list)
    track: str = RECORD_TRACK
    track_why: str = ""
    logs: dict[str, dict] = field(default_factory=dict)  # relative path -> parse_log
    extras: dict[str, dict] = field(default_factory=dict)  # relative path -> log_extras
    scripts: list[Path] = field(default_factory=list)  # train_gpt.py first, else train*.py
    large_files: list[tuple[str, int]] = field(default_factory=list)
    claimed: list[int] = field(default_factory=list)

    @property
    def script(self) -> Path | None:
        """The training script: train_gpt.py, else the folder's single train*.py."""
        if self.scripts and self.scripts[0].name == "train_gpt.py":
            return self.scripts[0]
        return self.scripts[0] if len(self.scripts) == 1 else None

    def text(self, rel: str) -> str:
        return (self.path / rel).read_text(encoding="utf-8", errors="replace")


def parse_record(record_dir: str | os.PathLike, *, max_file_bytes: int = 50_000_000) -> RecordFolder:
    """Read a record folder into a ``RecordFolder`` (never imports or runs anything from it)."""
    record_dir = Path(record_dir)
    folder = RecordFolder(record_dir, record_dir.is_dir())
    if not folder.exists:
        return folder
    folder.sub_path = submission_path(record_dir)
    if folder.sub_path is not None:
        try:
            loaded = read_json(folder.sub_path)
            folder.sub = loaded if isinstance(loaded, dict) else {}
            if not isinstance(loaded, dict):
                folder.sub_error = f"{folder.sub_path.name}: not a JSON object"
        except ValueError as e:
            folder.sub_error = f"{folder.sub_path.name}: {e}"
    folder.track, folder.track_why = record_track(record_dir, folder.sub)
    readme = record_dir / "README.md"
    folder.has_readme = readme.is_file()
    folder.readme_text = readme.read_text(encoding="utf-8", errors="replace") if folder.has_readme else ""
    folder.readme_tables = tables(folder.readme_text)
    for path in sorted(record_dir.rglob("*")):
        if path.is_file() and path.stat().st_size > max_file_bytes:
            folder.large_files.append((path.relative_to(record_dir).as_posix(), path.stat().st_size))
    main = record_dir / "train_gpt.py"
    folder.scripts = [main] if main.is_file() else sorted(p for p in record_dir.glob("train*.py") if p.is_file())
    for path in _log_files(record_dir):
        text = path.read_text(encoding="utf-8", errors="replace")
        info = parse_log(text)
        if _is_log(info):
            rel = path.relative_to(record_dir).as_posix()
            folder.logs[rel] = info
            folder.extras[rel] = log_extras(text)
    folder.claimed = submission_seeds(folder.sub) or readme_seeds(folder.readme_tables)
    return folder
