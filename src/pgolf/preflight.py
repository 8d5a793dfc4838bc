"""Checks that run when the workflow is parsed, before any job: a config that cannot work is refused at once, naming
the file or key, instead of failing minutes into a rented pod (or, worse, reporting "Nothing to be done").

- ``yaml_problem``: a YAML syntax error with its file, line and column (Snakemake's own message names neither);
- ``profile_overlays``: the config files a Snakemake profile names that a ``--configfile`` on the command line
  replaced (Snakemake's rule: a command-line option replaces the profile's), so the Snakefile can load them underneath;
- ``config_problems``: paths that do not exist and model shapes the training script would refuse, for the keys of
  the config merged with the script's own defaults (read from its source, without importing torch).
"""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import yaml


def yaml_problem(path: str | os.PathLike) -> str | None:
    """None when ``path`` parses as YAML, else "path:line:column: what"."""
    try:
        with open(path, encoding="utf-8") as f:
            yaml.safe_load(f)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        return f"{where}: YAML syntax error: {e.problem or e.context}"
    except yaml.YAMLError as e:
        return f"{path}: YAML syntax error: {e}"
    return None


def _option_values(argv: list[str], names: tuple[str, ...]) -> list[str]:
    """The values of a command-line option given as ``--opt V [V ...]`` or ``--opt=V``."""
    out, i = [], 0
    while i < len(argv):
        arg = argv[i]
        name, eq, value = arg.partition("=")
        if name in names:
            if eq:
                out.append(value)
            else:
                j = i + 1
                while j < len(argv) and not argv[j].startswith("-"):
                    out.append(argv[j])
                    j += 1
                i = j - 1
        i += 1
    return out


def _profile_file(profile: str, bases: list[Path]) -> tuple[Path, Path] | None:
    """(the folder a relative profile was found from, its settings file)."""
    for base in bases:
        path = base / profile
        if path.is_file():
            return base, path
        for name in ("config.v9+.yaml", "config.v8+.yaml", "config.yaml", "profile.yaml"):
            if (path / name).is_file():
                return base, path / name
    return None


def profile_overlays(argv: list[str], environ: dict, given: list[str], bases: list[str]) -> list[tuple[str, str]]:
    """[(profile, config file)] for each config file that a profile on the command line (``--profile``, or
    ``$SNAKEMAKE_PROFILE``) names and that the config files in effect (``given``: Snakemake's, absolute, after the
    command line replaced the profile's) do not include. A relative profile, and the paths in it, are looked up from
    the first of ``bases`` that has it (Snakemake's working folder may have moved to ``--directory`` by now)."""
    profiles = _option_values(argv, ("--profile",))
    if not profiles and environ.get("SNAKEMAKE_PROFILE"):
        profiles = [environ["SNAKEMAKE_PROFILE"]]
    have = {os.path.realpath(p) for p in given}
    missing = []
    for profile in profiles:
        found = _profile_file(profile, [Path(b) for b in bases])
        if found is None:
            continue
        base, file = found
        settings = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        wanted = settings.get("configfile") or settings.get("configfiles") or []
        for path in [wanted] if isinstance(wanted, str) else wanted:
            full = Path(path) if Path(path).is_absolute() else base / path
            if os.path.realpath(full) not in have:
                missing.append((profile, str(full)))
    return missing


def script_defaults(script: str | os.PathLike) -> dict:
    """The defaults of the training script's knobs, read from its ``Hyperparameters`` class (``name: T = knob(D, ...)``
    or ``name = _env("NAME", D)``) without running it; {} for a script that has no such class."""
    try:
        tree = ast.parse(Path(script).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return {}
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == "Hyperparameters":
            for stmt in node.body:
                target = value = None
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                    target, value = stmt.target.id, stmt.value
                elif isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
                    target, value = stmt.targets[0].id, stmt.value
                if target is None or not isinstance(value, ast.Call) or not value.args:
                    continue
                arg = value.args[-1] if getattr(value.func, "id", "") == "_env" else value.args[0]
                try:
                    out[target] = ast.literal_eval(arg)
                except ValueError:
                    continue
    return out


def model_problems(train: dict, defaults: dict, nproc: int) -> list[str]:
    """Shapes the script would refuse (or crash on) at start-up, named by their config keys."""
    v = {**defaults, **{k: val for k, val in train.items() if not isinstance(val, dict)}}
    out = []

    def get(key):
        value = v.get(key)
        return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    dim, heads, kv = get("model_dim"), get("num_heads"), get("num_kv_heads")
    if dim and heads and dim % heads:
        out.append(f"train.model_dim={dim} is not a multiple of train.num_heads={heads}")
    if heads and kv and heads % kv:
        out.append(f"train.num_heads={heads} is not a multiple of train.num_kv_heads={kv}")
    if dim and heads and not dim % heads:
        head_dim, rope = dim // heads, get("rope_dims")
        if head_dim % 2:
            out.append(f"train.model_dim/num_heads = {head_dim}: the head dimension must be even (RoPE)")
        if rope is not None and (rope % 2 or rope > head_dim):
            out.append(f"train.rope_dims={rope}: must be even and at most the head dimension {head_dim}")
    layers, xsa = get("num_layers"), get("xsa_last_n")
    if layers is not None and xsa is not None and xsa > layers:
        out.append(f"train.xsa_last_n={xsa} is more than train.num_layers={layers}")
    tokens, seq, accum = get("train_batch_tokens"), get("train_seq_len"), get("grad_accum_steps")
    if tokens and seq and accum is not None and nproc:
        steps = accum or max(1, 8 // nproc)
        if tokens % (nproc * steps) or (tokens // (nproc * steps)) % seq:
            out.append(
                f"train.train_batch_tokens={tokens} does not split into nproc_per_node({nproc}) x grad_accum_steps"
                f"({steps}) micro-batches of whole train.train_seq_len={seq} sequences"
            )
    return out


def path_problems(config: dict, resolve) -> list[str]:
    """Input files the config names that do not exist (``resolve`` maps a config path to the one the rules use)."""
    out = []
    data = config.get("data") or {}
    if data.get("source") == "documents":
        path = (data.get("documents") or {}).get("path")
        if path and not os.path.exists(resolve(path)):
            out.append(f"config data.documents.path: {path} not found (looked for {resolve(path)})")
    record = config.get("record") or {}
    for i, path in enumerate(record.get("extra_files") or []):
        if not os.path.exists(resolve(path)):
            out.append(f"config record.extra_files[{i}]: {path} not found (looked for {resolve(path)})")
    ref = record.get("reference")
    if ref and not os.path.isdir(resolve(ref)):
        out.append(f"config record.reference: {ref} is not a folder (looked for {resolve(ref)})")
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Trust checks before any job (issue 29): what a rented pod or a cluster gets wrong before the first minute is spent.

# the folders the pipeline reads and writes, which a pod often links to a network volume
LINKED_FOLDERS = ("data", "results", "records", "logs", ".cache")


def link_problems(root: str | os.PathLike) -> list[str]:
    """A working folder (``data/``, ``results/``, ...) that is a link to nothing: the volume it points to is not
    mounted (a new pod, a cluster node without the file system). Without this, the plan re-makes every product (and
    re-trains every seed) or fails creating the folder with no word on why."""
    out = []
    for name in LINKED_FOLDERS:
        path = Path(root, name)
        if path.is_symlink() and not path.exists():
            out.append(
                f"{name}/ is a link to {os.readlink(path)}, which does not exist (a volume not mounted?): mount it,"
                f" or remove the link {path} to start afresh"
            )
        elif path.exists() and not path.is_dir():
            out.append(f"{name}: {path} is not a folder (the pipeline writes its products under {name}/)")
    return out


def input_problems(config: dict, resolve) -> list[str]:
    """Input paths that exist but are not files (a folder given for a file)."""
    out = []
    script = (config.get("train") or {}).get("script")
    if script and os.path.isdir(resolve(script)):
        out.append(f"config train.script: {script} is a folder; expected the training script (a .py file)")
    data = config.get("data") or {}
    path = (data.get("documents") or {}).get("path") if data.get("source") == "documents" else None
    if path and os.path.isdir(resolve(path)):
        out.append(f"config data.documents.path: {path} is a folder; expected a JSON-lines file (.jsonl, .xz, .gz)")
    return out


def date_problem(date) -> str | None:
    """``record.date`` must be a calendar date written YYYY-MM-DD (2026-13-45 is not one); null is today."""
    import datetime

    if date is None:
        return None
    try:
        ok = isinstance(date, str) and datetime.date.fromisoformat(date).isoformat() == date
    except ValueError:
        ok = False
    return None if ok else f"record.date: {date!r} is not a date (expected YYYY-MM-DD, e.g. 2026-04-30)"


def record_problems(record: dict, record_dir: str | os.PathLike, run: str) -> list[str]:
    """The record section against the record folder it names: a real date, and a folder that no other run wrote (two
    runs with one ``record.name`` would overwrite each other's record, back and forth)."""
    out = [p for p in [date_problem(record.get("date"))] if p]
    try:
        owner = json.loads(Path(record_dir, "submission.json").read_text(encoding="utf-8")).get("run")
    except (OSError, ValueError, AttributeError):
        owner = None
    if isinstance(owner, str) and owner != run:
        out.append(
            f"record.name: {record_dir} is the record of run {owner!r}, not of this run {run!r}: give this run"
            f" another record.name, or remove {record_dir} to replace it"
        )
    return out


def eval_problems(config: dict, manifest: str | os.PathLike) -> list[str]:
    """An evaluation window longer than the validation split (the data set's manifest, when it exists, knows the
    split's size): refused before any job, not inside the evaluate step after training."""
    evaluation = config.get("eval") or {}
    seq = evaluation.get("eval_seq_len")
    if not isinstance(seq, int) or (config.get("train") or {}).get("mode", "staged") != "staged":
        return []
    try:
        m = json.loads(Path(manifest).read_text(encoding="utf-8"))
        tokens = sum(int(f["tokens"]) for f in m["val"]["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return []  # no data set yet: the evaluate step checks it
    limit = evaluation.get("val_tokens_limit") or 0
    targets = (min(limit, tokens) if limit > 0 else tokens) - 1
    if seq > targets:
        scope = f" (its first eval.val_tokens_limit={limit})" if 0 < limit < tokens else ""
        return [
            f"eval.eval_seq_len={seq} is longer than the validation split{scope}: {targets:,} target tokens in"
            f" {manifest}; lower eval.eval_seq_len"
        ]
    return []


def run_record_date(records: str | os.PathLike, track: str, name: str, run: str) -> str | None:
    """The date of the record folder that run ``run`` already wrote as ``<records>/<track>/<date>_<name>`` (its
    submission.json's ``run``), or None. With ``record.date: null`` (today), a run re-invoked after midnight (a pod
    session that spans two days, a failed step re-run the next morning) keeps its folder instead of writing a second
    one beside it: a pull request adds exactly one record folder."""
    dates = []
    for sub in sorted(Path(records, track).glob(f"*_{name}/submission.json")):
        date = sub.parent.name[: -len(name) - 1]
        try:
            owner = json.loads(sub.read_text(encoding="utf-8")).get("run")
        except (OSError, ValueError, AttributeError):
            continue
        if owner == run and date_problem(date) is None:
            dates.append(date)
    return dates[-1] if dates else None
