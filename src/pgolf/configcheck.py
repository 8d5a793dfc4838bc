"""``pgolf config FILE...``: check config overlays before Snakemake reads them.

Snakemake 9 reads the files given with ``--configfile`` on its command line itself, before the Snakefile
(``snakemake.settings.types.ConfigSettings.__post_init__`` loads them while it parses the options), so a YAML syntax
error in one stops it with "Config file is not valid JSON or YAML", naming neither the file nor the line, and no code
of the workflow can run first to say more. This command says it: the file, line and column of a syntax error, an
overlay that is not a mapping, and the schema's complaint about the config merged as Snakemake merges it
(``config/config.yaml``, then each file in order)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import yaml

from pgolf.preflight import yaml_problem


def _merge(base: dict, over: dict) -> dict:
    """Snakemake's update_config: nested mappings merged key by key, anything else replaced."""
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def config_problems(files: list[str | os.PathLike], base: str | os.PathLike, schema: str | os.PathLike) -> list[str]:
    """What is wrong with ``files`` as --configfile overlays of ``base`` (each problem names its file)."""
    problems, merged = [], {}
    for path in [base, *files]:
        if not Path(path).is_file():
            problems.append(f"{path}: file not found")
            continue
        problem = yaml_problem(path)
        if problem:
            problems.append(problem)
            continue
        obj = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        if obj is None:
            continue
        if not isinstance(obj, dict):
            problems.append(f"{path}: expected a mapping of config keys at the top level, got a {type(obj).__name__}")
            continue
        merged = _merge(merged, obj)
    if problems:
        return problems
    import jsonschema

    validator = jsonschema.Draft202012Validator(yaml.safe_load(Path(schema).read_text(encoding="utf-8")))
    for error in sorted(validator.iter_errors(merged), key=lambda e: list(e.absolute_path)):
        key = ".".join(str(p) for p in error.absolute_path) or "(top level)"
        problems.append(f"config {key}: {error.message}")
    return problems


def _cmd_config(args: argparse.Namespace) -> int:
    problems = config_problems(args.files, args.base, args.schema)
    for p in problems:
        print(p)
    if not problems:
        print(f"ok: {', '.join(map(str, args.files))} on top of {args.base}")
    return 1 if problems else 0


def register(sub) -> None:
    p = sub.add_parser(
        "config",
        help="check --configfile overlays (YAML syntax with file:line:column, the schema) before Snakemake reads them",
    )
    p.add_argument("files", nargs="+", help="the overlays, in the order given to --configfile")
    p.add_argument("--base", default="config/config.yaml", help="the workflow's own config (default: %(default)s)")
    p.add_argument(
        "--schema", default="workflow/schemas/config.schema.yaml", help="the config's schema (default: %(default)s)"
    )
    p.set_defaults(func=_cmd_config)
