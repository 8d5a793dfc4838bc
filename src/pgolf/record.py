"""Assemble a record folder (README.md, submission.json, train_gpt.py, per-seed logs, requirements.txt, the loss-curve
plot ``loss_curves.png``, the readable ``train_gpt_human.py`` beside a packed ``train_gpt.py``, and any extra file the
script needs).

The folder is built in a temporary folder beside the target, checked with ``pgolf.check.check_record``, and only then
renamed into place; an older record folder is replaced only once the new one is complete and has passed the checks.
On request the loss-curve plot and the per-seed table (HTML and CSV) are also written to a report folder, for
``snakemake --report``. Also registers the ``record``, ``check`` and ``compare`` subcommands.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path

from pgolf import ARTIFACT_CAP_BYTES, EVAL_BUDGET_S, TRAIN_BUDGET_S
from pgolf.check import check_record, describe
from pgolf.compare import compare_records
from pgolf.fsio import read_json, sha256_file, write_bytes, write_json, write_text
from pgolf.logs import parse_log
from pgolf.pack import HUMAN_NAME, ship
from pgolf.preflight import date_problem, script_defaults
from pgolf.provenance import data_provenance, pinned_requirements
from pgolf.readme import _readme, is_non_record, recipe_blurb, reproduce_env
from pgolf.recordfolder import parse_record
from pgolf.report import PLOT_NAME, loss_curve_png, seed_table_csv, seed_table_html
from pgolf.stages import is_secret, measure
from pgolf.stats import mean, std
from pgolf.valscope import scope_problems

LOG_PARTS = ("train.log", "quantize.log", "eval.log")
_SEED_DIR = re.compile(r"^seed_(\d+)$")
_GENERATED = re.compile(
    r"^(README\.md|submission\.json|train_gpt\.py|train_gpt_human\.py|requirements\.txt|loss_curves\.png|train_seed\d+\.log)$"
)


def seed_inputs(metrics: list[str], logs: list[str], artifacts: list[str] | None = None) -> list[dict]:
    """The record's inputs as the rule declares them, one entry per seed: its metrics.json, its logs (in the order
    given: the seed's train_seed<N>.log is their concatenation) and its artifact, each seed's files being those in the
    folder of its metrics.json. A log or artifact that belongs to no seed is an error naming it."""
    seeds = [{"dir": Path(m).parent, "metrics": Path(m), "logs": [], "artifact": None} for m in metrics]
    by_dir = {s["dir"].resolve(): s for s in seeds}
    if len(by_dir) != len(seeds):
        raise ValueError(f"two metrics.json in one folder: {metrics}")
    for path in logs:
        owner = by_dir.get(Path(path).parent.resolve())
        if owner is None:
            raise ValueError(f"{path}: a log beside no seed's metrics.json")
        owner["logs"].append(Path(path))
    for path in artifacts or []:
        owner = by_dir.get(Path(path).parent.resolve())
        if owner is None:
            raise ValueError(f"{path}: an artifact beside no seed's metrics.json")
        owner["artifact"] = Path(path)
    return seeds


def _load_seed(seed: Path | dict) -> dict:
    """metrics.json and the concatenated logs of one seed: the declared inputs of ``seed_inputs``, or (a folder) the
    stage logs ``LOG_PARTS`` or the files listed in metrics.json's ``logs`` (an upstream script's single log)."""
    declared = seed if isinstance(seed, dict) else {"dir": Path(seed), "metrics": Path(seed) / "metrics.json"}
    seed_dir = declared["dir"]
    metrics = read_json(declared["metrics"])
    if declared.get("logs"):
        paths = declared["logs"]
    else:
        names = metrics.get("logs") or LOG_PARTS
        if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) and "/" not in n for n in names):
            raise ValueError(f"{declared['metrics']}: 'logs' must be a list of file names")
        paths = [seed_dir / name for name in names]
    parts = []
    for path in paths:
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
    artifact = declared.get("artifact") or seed_dir / ARTIFACT_NAME
    return {"seed": seed, "dir": seed_dir, "metrics": metrics, "log": log, "artifact": artifact}


ARTIFACT_NAME = "final_model.ptz"


def verify_seed_files(seeds: list[dict], script: Path, expected_configs: dict | None) -> None:
    """The claims of each seed's metrics.json checked against the files themselves: the artifact in the seed folder
    (bytes and sha256), the script the record ships (the code bytes the cap counted), and the configuration the seed
    ran under (the digests of its train, quantize and eval sections against those of the config given now).
    ``bytes_total`` becomes what the files measure; any mismatch is an error naming the file."""
    code = measure(script)
    for s in seeds:
        m, where = s["metrics"], s["dir"] / "metrics.json"
        if "artifact_sha256" in m:  # staged mode (an upstream script's log states its own sizes)
            artifact = s["artifact"]
            if not artifact.is_file():
                raise FileNotFoundError(f"{artifact}: the artifact {where} describes is missing")
            got = measure(artifact)
            if got != {"bytes": m["artifact_bytes"], "sha256": m["artifact_sha256"]}:
                raise ValueError(
                    f"{artifact}: {got['bytes']:,} bytes, sha256 {got['sha256'][:16]}..., but {where} scored "
                    f"{m['artifact_bytes']:,} bytes, sha256 {m['artifact_sha256'][:16]}...: the file was replaced "
                    "after it was scored; re-run its quantize step"
                )
            if "code_sha256" in m and (m["code_bytes"], m["code_sha256"]) != (code["bytes"], code["sha256"]):
                raise ValueError(
                    f"{script}: the record ships {code['bytes']:,} bytes of code (sha256 {code['sha256'][:16]}...), "
                    f"but seed {s['seed']}'s cap check counted {m['code_bytes']:,} (sha256 {m['code_sha256'][:16]}...)"
                    "; re-run its quantize step with the script that ships"
                )
            total = got["bytes"] + code["bytes"]
            if m.get("bytes_total") != total:
                raise ValueError(f"{where}: bytes_total {m.get('bytes_total')} but the files measure {total:,}")
        for key, want in (expected_configs or {}).items():
            have = (m.get("config_sha256") or {}).get(key)
            if have != want:
                raise ValueError(
                    f"{where}: seed {s['seed']} ran under another {key} configuration than the config given now "
                    f"(digest {str(have)[:12]} vs {str(want)[:12]}): its products are left from an earlier run; "
                    f"re-run it (snakemake --forcerun {s['dir'] / 'checkpoint.pt' if key == 'train' else where})"
                )


def _uniform(values: list):
    """The one value all seeds share, else None (ignoring missing values)."""
    present = [v for v in values if v is not None]
    return present[0] if present and all(v == present[0] for v in present) else None


def _round(x: float | None, nd: int = 8) -> float | None:
    return None if x is None else round(float(x), nd)


def _mean_of(seeds: list[dict], key: str) -> float | None:
    values = [s["metrics"].get(key) for s in seeds]
    return mean([float(v) for v in values]) if values and all(isinstance(v, (int, float)) for v in values) else None


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
            "artifact_sha256": m.get("artifact_sha256"),
            "bytes_total": m["bytes_total"],
            "steps": m.get("steps"),
            "step_avg_ms": m.get("step_avg_ms"),
            "train_time_s": m.get("train_time_s"),
            "eval_time_s": m.get("eval_time_s"),
            "pre_quant_val_bpb": _round(m.get("pre_quant_val_bpb")),
            "attention_backend": m.get("attention_backend"),
        }
        if m.get("phases"):  # an upstream script's run, phase by phase from its log (pgolf.logs.upstream_phases)
            seed_results[str(s["seed"])]["phases"] = {k: v for k, v in m["phases"].items() if k != "evals"}
    return {
        "run": _uniform([s["metrics"].get("run") for s in seeds]),  # the pipeline run that owns the folder
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
        "ttt": _uniform([s["metrics"].get("ttt") for s in seeds]),  # legal score-first TTT's settings, when on
        "attention_backend": _uniform([s["metrics"].get("attention_backend") for s in seeds]),
        "hardware": _hardware(environment, seeds, nproc),
        "pytorch_version": environment.get("torch"),
        "cuda_version": environment.get("cuda"),
        "flash_attn_version": environment.get("fa3"),
        "python_version": environment.get("python"),
        "git_commit": environment.get("git_commit"),
        "provenance": provenance(environment),
    }


PROVENANCE_KEYS = (
    "image_digest", "image_base", "container_id", "git_commit", "git_dirty", "python", "torch", "cuda", "fa3",
    "gpu", "gpu_count", "gpus", "driver", "nvcc", "platform", "nvidia_smi",
)  # fmt: skip


def provenance(environment: dict) -> dict:
    """What ran (the fa3 step's environment.json): image, project commit, versions, GPUs, driver, nvidia-smi, and how
    FA3 was provided (or why not)."""
    out = {key: environment.get(key) for key in PROVENANCE_KEYS}
    status = environment.get("fa3_status") or {}
    out["fa3_state"] = status.get("state")
    out["fa3_reason"] = status.get("reason")
    out["fa3_fallback"] = status.get("fallback")
    return out


def settings_problems(settings: dict) -> list[str]:
    """The record settings a README or submission.json cannot carry: a ``date`` that is no calendar date."""
    return [p for p in [date_problem(settings.get("date"))] if p]


def record_owner(out: Path) -> str | None:
    """The pipeline run that wrote the record folder ``out`` (its submission.json's ``run``), or None."""
    try:
        run = json.loads((out / "submission.json").read_text(encoding="utf-8")).get("run")
    except (OSError, ValueError, AttributeError):
        return None
    return run if isinstance(run, str) else None


def user_files(out: Path, extra_names: set[str]) -> list[Path]:
    """What a user added to an existing record folder (NOTES.md, figures/, ...): every entry but the files the record
    generates and its configured extra files; a rebuild keeps them."""
    if not out.is_dir():
        return []
    return sorted(p for p in out.iterdir() if not _GENERATED.match(p.name) and p.name not in extra_names)


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
    seed_dirs: list[Path | dict],
    script: Path,
    environment: dict,
    settings: dict,
    hparams: dict,
    nproc: int,
    report_dir: str | os.PathLike | None = None,
    expected_configs: dict | None = None,
    data_manifest: str | os.PathLike | None = None,
    human_script: str | os.PathLike | None = None,
) -> dict:
    """Write the record folder ``out_dir`` from per-seed result folders; returns the submission.json contents.

    ``hparams`` are the settings of the README's reproducing command (``reproduce_env``). With ``human_script`` (the
    readable source of a packed ``script``), the folder also gets it as ``train_gpt_human.py``; ``script`` must then be
    exactly what ``pgolf pack`` makes of it, or ValueError. When the two are the same bytes (packing would not shrink
    the script) no copy is added.

    ``settings["extra_files"]`` (paths) are copied into the folder under their own names (files or folders the script
    needs). With ``report_dir``, the loss-curve plot and the per-seed table (``seed_results.html``/``.csv``) are also
    written there, once the record is in place. With ``data_manifest``, submission.json's ``data`` and the README's
    ``## Data`` section say what the record was trained on (``pgolf.provenance``). Raises ValueError (leaving any
    previous ``out_dir`` untouched) if the finished folder fails ``check_record``.
    """
    out = Path(out_dir)
    if not seed_dirs:
        raise ValueError("no seed folders given")
    seeds = [_load_seed(d if isinstance(d, dict) else Path(d)) for d in seed_dirs]
    numbers = [s["seed"] for s in seeds]
    if len(set(numbers)) != len(numbers):
        raise ValueError(f"duplicate seeds: {numbers}")
    script = Path(script)
    if not script.is_file():
        raise FileNotFoundError(f"{script}: file not found")
    human = Path(human_script) if human_script is not None else None
    if human is not None:
        if not human.is_file():
            raise FileNotFoundError(f"{human}: file not found")
        if human.read_bytes() == script.read_bytes():
            human = None
        elif ship(human.read_bytes())[0] != script.read_bytes():
            raise ValueError(f"{script} is not what `pgolf pack` makes of {human}: the readable copy would not match")
    verify_seed_files(seeds, script, expected_configs)
    problems = settings_problems(settings)
    for s in seeds:  # a score on less than the whole validation split is never a record's (either track)
        problems += scope_problems(s["seed"], s["log"].decode("utf-8", "replace"), "artifact_sha256" in s["metrics"])
    run = _uniform([s["metrics"].get("run") for s in seeds])
    owner = record_owner(out)
    if run and owner and owner != run:
        problems.append(
            f"{out} is the record of run {owner!r}, not of this run {run!r} (two runs with one record.name would "
            f"overwrite each other's record): give this run another record.name, or remove {out} to replace it"
        )
    if problems:
        raise ValueError("cannot write the record:\n" + "\n".join(f"  - {p}" for p in problems))
    settings = dict(settings)
    if not settings.get("blurb"):  # derived from the run's own settings, never another config's
        source = human if human is not None else script
        settings["blurb"] = recipe_blurb(hparams or {}, script_defaults(source))
        if settings.get("reference") and not any("artifact_sha256" in s["metrics"] for s in seeds):
            settings["blurb"] = f"A reproduction of {Path(settings['reference']).name}: its train_gpt.py, run whole."
        if not settings["blurb"]:
            raise ValueError(
                "record.blurb: empty, and the pipeline cannot describe this run's recipe (a script without a"
                " Hyperparameters table it can read): write one in the config's record section"
            )
    environment = dict(environment or {})
    hparams = {k: v for k, v in (hparams or {}).items() if not is_secret(k)}  # never publish credentials
    extras = [Path(p) for p in settings.get("extra_files") or []]
    for path in extras:
        if not path.exists():
            raise FileNotFoundError(f"{path}: extra file not found")
        if _GENERATED.match(path.name):
            raise ValueError(f"extra file {path}: {path.name} is a name the record generates")
    if len({p.name for p in extras}) != len(extras):
        raise ValueError(f"extra files with the same name: {[str(p) for p in extras]}")

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o777 & ~mask)  # mkdtemp makes a private folder; the record gets the usual permissions
    try:
        shutil.copyfile(script, tmp / "train_gpt.py")
        if sha256_file(tmp / "train_gpt.py") != sha256_file(script):
            raise RuntimeError(f"copy of {script} differs from the original")
        if human is not None:
            shutil.copyfile(human, tmp / HUMAN_NAME)
        for s in seeds:
            write_bytes(tmp / f"train_seed{s['seed']}.log", s["log"])
        for path in extras:
            if path.is_dir():
                shutil.copytree(path, tmp / path.name)
            else:
                shutil.copy2(path, tmp / path.name)
        plot = loss_curve_png({s["seed"]: parse_log(s["log"].decode("utf-8", errors="replace")) for s in seeds})
        write_bytes(tmp / PLOT_NAME, plot)
        # what the script (its readable source, where it ships packed) and its helper files need beyond pip
        code = [human or script, *(p for p in extras if p.suffix in (".py", ".sh", ".c"))]
        code_text = "\n".join(Path(p).read_text(errors="replace") for p in code if Path(p).is_file())
        requirements = pinned_requirements(settings.get("requirements"), environment, code_text)
        write_text(tmp / "requirements.txt", requirements)
        sub = _submission(settings, environment, seeds, nproc)
        if data_manifest is not None:
            sub["data"] = data_provenance(data_manifest)
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
        extra_names = [p.name for p in extras]
        readme = _readme(sub, settings, environment, seeds, hparams, nproc, comparison, extra_names, human is not None)
        write_text(tmp / "README.md", readme)

        problems = check_record(
            parse_record(tmp),  # the one parsed record object pgolf check and compare read
            min_seeds=int(settings.get("min_seeds", 3)),
            cap_bytes=ARTIFACT_CAP_BYTES,
            train_budget_s=TRAIN_BUDGET_S,
            eval_budget_s=EVAL_BUDGET_S,
            enforce_time=bool(settings.get("enforce_time_limits", not is_non_record(settings))),
            strict=True,  # a record the pipeline wrote must agree with its logs exactly: warnings fail it too
        )
        if problems:
            raise ValueError(f"record {out} fails its checks:\n{describe(problems)}")
        kept = user_files(out, {p.name for p in extras})
        for path in kept:  # a user's notes and figures survive the rebuild
            if path.is_dir():
                shutil.copytree(path, tmp / path.name, symlinks=True)
            else:
                shutil.copy2(path, tmp / path.name, follow_symlinks=False)
        if kept:
            print(f"{out}: kept what was added to the record folder: {', '.join(p.name for p in kept)}")
        _install(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    if report_dir is not None:
        report = Path(report_dir)
        write_bytes(report / PLOT_NAME, plot)
        write_text(report / "seed_results.html", seed_table_html(seeds, sub))
        write_text(report / "seed_results.csv", seed_table_csv(seeds))
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
    if args.metrics:
        seeds = seed_inputs(args.metrics, args.logs or [], args.artifacts)
    elif args.run_dir and args.seeds:
        seeds = [Path(args.run_dir) / f"seed_{s}" for s in args.seeds]
    else:
        raise ValueError("give each seed's --metrics (with its --logs and --artifacts), or --run-dir and --seeds")
    hparams = reproduce_env(
        _json_arg(args.hparams_json),
        # the staged script reads these paths; an upstream script reads DATA_PATH (run-upstream's links)
        args.data_manifest if (args.quantize_json or args.eval_json) else None,
        _json_arg(args.quantize_json) if args.quantize_json else None,
        _json_arg(args.eval_json) if args.eval_json else None,
    )
    sub = build_record(
        args.out,
        seeds,
        Path(args.script),
        read_json(args.environment),
        _json_arg(args.settings_json),
        hparams,
        args.nproc,
        report_dir=args.report_dir,
        expected_configs=_json_arg(args.expect_configs) if args.expect_configs else None,
        data_manifest=args.data_manifest,
        human_script=args.human_script,
    )
    print(f"wrote {args.out}: {len(sub['seeds'])} seed(s), val_bpb {sub['val_bpb']}, bytes_total {sub['bytes_total']}")
    return 0


def register(subparsers) -> None:
    """Add the ``record`` subcommand."""
    p = subparsers.add_parser("record", help="assemble a record folder from per-seed results")
    p.add_argument("--metrics", nargs="+", help="each seed's metrics.json (its logs and artifact lie beside it)")
    p.add_argument("--logs", nargs="*", help="the seeds' logs, each seed's in order (train_seed<N>.log joins them)")
    p.add_argument("--artifacts", nargs="*", help="the seeds' artifacts (staged mode): checked against metrics.json")
    p.add_argument("--run-dir", help="instead of --metrics: results/<run>, holding seed_<N>/ folders")
    p.add_argument("--seeds", nargs="+", type=int, help="with --run-dir: the seeds")
    p.add_argument("--script", required=True, help="the training script (becomes train_gpt.py)")
    p.add_argument("--human-script", help=f"the readable source of a packed --script (shipped as {HUMAN_NAME})")
    p.add_argument("--environment", required=True, help="environment JSON file")
    p.add_argument("--settings-json", required=True, help="record settings: a JSON object or a JSON file")
    p.add_argument("--hparams-json", required=True, help="hyperparameters (env var -> value): JSON object or file")
    p.add_argument("--nproc", required=True, type=int, help="processes per node the training ran with")
    p.add_argument("--quantize-json", help="the config's quantize section (JSON): into the reproducing command")
    p.add_argument("--eval-json", help="the config's eval section (JSON): into the reproducing command")
    p.add_argument("--out", required=True, help="the record folder to write")
    p.add_argument("--report-dir", help="also write the loss-curve plot and the per-seed table (HTML, CSV) here")
    p.add_argument(
        "--expect-configs", help="JSON {section: digest}: every seed must have run under these (stages.config_digest)"
    )
    p.add_argument(
        "--data-manifest",
        help="the data set's manifest.json: its provenance goes into the record (and, staged, its paths into the"
        " README's reproducing command)",
    )
    p.set_defaults(func=_cmd_record)
