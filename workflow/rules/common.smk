import datetime
import json
import os
from pathlib import Path

from pgolf.data import used_section
from pgolf.fsio import sha256_file
from pgolf.preflight import (
    eval_problems,
    input_problems,
    link_problems,
    model_problems,
    path_problems,
    record_problems,
    run_record_date,
    script_defaults,
)
from pgolf.stages import config_digest, train_env, train_identity


wildcard_constraints:
    seed=r"\d+",


RUN = config["run"]
SEEDS = [int(s) for s in config["seeds"]]
NPROC = int(config["nproc_per_node"])
OUT = f"results/{RUN}"
LOGS = f"logs/{RUN}"
GPUS = NPROC if config["device"] == "cuda" else 0
DATA_MANIFEST = f"data/{config['data']['name']}/manifest.json"
# the data step's done marker (per data set: runs share it), as done_marker's for the per-run steps
DATA_DONE = f"data/.done/{config['data']['name']}"
# Every rule runs the pgolf package; with --software-deployment-method conda this is its environment.
CONDA_ENV = str(Path(workflow.basedir) / "environment.yml")


def repo_path(path):
    """Paths in the config are relative to the repository (the Snakefile's folder) unless absolute. The rules get them
    relative to the working folder (the repository itself, usually): inputs and params then hold no absolute path, so
    a repository moved to another folder (or another user's home) re-runs nothing."""
    p = Path(path)
    return str(p) if p.is_absolute() else os.path.relpath(Path(workflow.basedir) / p)


SCRIPT = repo_path(config["train"]["script"])
# Refuse, before any job, a config that cannot work: missing input files, model shapes the script would refuse.
_PROBLEMS = (
    link_problems(".")
    + path_problems(config, repo_path)
    + input_problems(config, repo_path)
)
if config["train"].get("mode", "staged") == "staged" and os.path.exists(SCRIPT):
    _PROBLEMS += model_problems(
        config["train"], script_defaults(SCRIPT), int(config["nproc_per_node"])
    )
if _PROBLEMS:
    raise WorkflowError(
        "the config cannot work:\n" + "\n".join(f"  - {p}" for p in _PROBLEMS)
    )
# train.mode: "staged" (the default: our script, per seed train -> quantize -> evaluate) or "upstream" (an upstream
# record's train_gpt.py run whole by one rule per seed, which only train.env configures; see config/README.md).
TRAIN_MODE = config["train"].get("mode", "staged")
UPSTREAM = TRAIN_MODE == "upstream"
# the script that ships in the record and whose bytes count toward the cap: packed when record.pack_script is on
PACK_SCRIPT = bool(config["record"].get("pack_script", True)) and not UPSTREAM
SHIPPED = f"{OUT}/ship/train_gpt.py" if PACK_SCRIPT else SCRIPT
TRAIN_SECTION = {k: v for k, v in config["train"].items() if k != "mode"}
# The per-seed logs that make up a record's train_seed<N>.log, in order.
SEED_LOGS = ["train"] if UPSTREAM else ["train", "quantize", "eval"]


def file_sha256(path):
    try:
        return sha256_file(path)
    except FileNotFoundError:
        raise WorkflowError(f"config train.script: {path} not found") from None


# the training script's bytes: a parameter of the train rule (an edit re-trains) and part of what a seed ran under
SCRIPT_SHA256 = file_sha256(SCRIPT)


def as_json(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


# What every seed of the record must have run under (pgolf record checks each seed's metrics.json against it).
EXPECTED_CONFIGS = (
    {}
    if UPSTREAM
    else {
        "train": config_digest(train_identity(TRAIN_SECTION, SCRIPT_SHA256)),
        "quantize": config_digest(config["quantize"]),
        "eval": config_digest(config["eval"]),
    }
)


# The record folder is named by its date: config record.date, or when it is null the date of the folder this run
# already wrote (a run re-invoked after midnight keeps its one folder), else today.
RECORD_DATE = (
    config["record"].get("date")
    or run_record_date(
        "records", config["record"]["track"], config["record"]["name"], RUN
    )
    or datetime.date.today().isoformat()
)
RECORD_DIR = (
    f"records/{config['record']['track']}/{RECORD_DATE}_{config['record']['name']}"
)
RECORD_SETTINGS = {**config["record"], "date": RECORD_DATE}
# Refused before any job: an impossible date, a record folder another run wrote, a window longer than the split.
_PROBLEMS = record_problems(RECORD_SETTINGS, RECORD_DIR, RUN)
if not UPSTREAM:
    _PROBLEMS += eval_problems(config, DATA_MANIFEST)
if _PROBLEMS:
    raise WorkflowError(
        "the config cannot work:\n" + "\n".join(f"  - {p}" for p in _PROBLEMS)
    )
# Paths in the record section (the reference record folder, extra files) are relative to the repository.
if RECORD_SETTINGS.get("reference"):
    RECORD_SETTINGS["reference"] = repo_path(RECORD_SETTINGS["reference"])
if RECORD_SETTINGS.get("extra_files"):
    RECORD_SETTINGS["extra_files"] = [
        repo_path(f) for f in RECORD_SETTINGS["extra_files"]
    ]
# The hyperparameters as the script sees them (environment variables), for the record's README and command; an
# upstream script gets train.env alone.
TRAIN_ENV = train_env(
    {"env": config["train"].get("env")} if UPSTREAM else TRAIN_SECTION
)


def record_staged_args(input):
    """The record rule's options beyond the upstream mode's: the readable source of a packed script, and what the
    README's reproducing command needs from the data, quantize and eval sections (staged mode only).
    """
    import shlex

    args = []
    if input.human:
        args += ["--human-script", input.human]
    if not UPSTREAM:
        args += ["--quantize-json", as_json(config["quantize"])]
        args += ["--eval-json", as_json(config["eval"])]
    return " ".join(shlex.quote(str(a)) for a in args)


def data_section():
    """The data section that the data step gets (`pgolf data --data-json`), narrowed to what its
    source uses (for the hub, only the variant's repo) so that no other change re-runs the step;
    checked here, before any job."""
    try:
        return used_section(config["data"])
    except ValueError as e:
        raise WorkflowError(str(e)) from None


def data_inputs(wildcards):
    """The documents file of the documents source. The hub source has none: its lock
    file is rewritten by the rule itself, so it is not an input (that would re-trigger
    the rule)."""
    d = config["data"]
    if d["source"] == "documents":
        return [repo_path(d["documents"]["path"])]
    return []


def kept(path):
    """An output Snakemake must not delete before its job runs (the update flag): the step writes every product
    under a temporary name and renames it only when it succeeds, so a failed or killed re-run (a --forcerun, a
    record that fails its checks) leaves the last good product in place, and Snakemake restores it if the job
    fails."""
    return update(path)


def done_marker(step):
    """A rule's last output, written by its shell command after the step succeeded and deleted by Snakemake before
    the job runs: when a re-run fails, the kept products (``kept``) are restored but this is missing, so the next
    plan shows the job again (Snakemake drops a failed job's metadata, so the restored products alone would look up to
    date even when the job re-ran for a changed config)."""
    return f"{OUT}/.done/{step}"


# The steps after each step: its seeds' later steps and the record (data and fa3: every seed's).
LATER_STEPS = {
    "data": ["train", "train_upstream", "quantize", "evaluate"],
    "fa3": ["train", "train_upstream", "quantize", "evaluate"],
    "train": ["quantize", "evaluate"],
    "train_upstream": [],
    "quantize": ["evaluate"],
    "evaluate": [],
}


def stale_markers(step, seed=None):
    """The done markers of the steps after ``step`` (of its seed, or of every seed for data and fa3, and the
    record's), as one shell word list: the step's command removes them before it runs. Snakemake drops from its plan a
    failed (or killed) job when the jobs after it still have all their outputs, a missing input marker or not; with
    their markers gone too, the next plan shows the failed step and every step after it again.
    """
    seeds = SEEDS if seed is None else [seed]
    marks = [
        done_marker(f"seed_{s}.{later}") for s in seeds for later in LATER_STEPS[step]
    ]
    return " ".join([*marks, done_marker("record")])


def seed_path(name):
    return f"{OUT}/seed_{{seed}}/{name}"
