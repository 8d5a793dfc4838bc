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
    if data.get("source") == "local":
        path = (data.get("local") or {}).get("path")
        if path and not os.path.isfile(os.path.join(resolve(path), "manifest.json")):
            out.append(f"config data.local.path: {path} holds no manifest.json (looked in {resolve(path)})")
    record = config.get("record") or {}
    for i, path in enumerate(record.get("extra_files") or []):
        if not os.path.exists(resolve(path)):
            out.append(f"config record.extra_files[{i}]: {path} not found (looked for {resolve(path)})")
    ref = record.get("reference")
    if ref and not os.path.isdir(resolve(ref)):
        out.append(f"config record.reference: {ref} is not a folder (looked for {resolve(ref)})")
    return out
