import datetime
import json
import os
import sys
from pathlib import Path

from pgolf.data import used_section
from pgolf.fsio import sha256_file
from pgolf.preflight import (
    dry_run_requested,
    eval_problems,
    executor_of,
    gpu_count,
    input_problems,
    link_problems,
    machine_problems,
    model_problems,
    path_problems,
    record_folder_problems,
    resolve_nproc,
    run_record_date,
    script_defaults,
)
from pgolf.stages import config_digest, train_env, train_identity


wildcard_constraints:
    seed=r"\d+",


RUN = config["run"]
SEEDS = [int(s) for s in config["seeds"]]
# Where the jobs run: on this machine (the pod) or on a cluster's nodes (profiles/slurm: executor slurm).
EXECUTOR = executor_of(
    sys.argv, os.environ, [os.getcwd(), workflow.basedir, os.environ.get("PWD", ".")]
)
LOCAL = EXECUTOR in ("local", "dryrun", "touch")
# The machine's CUDA GPUs (nvidia-smi, narrowed by CUDA_VISIBLE_DEVICES); None where the jobs run elsewhere.
MACHINE_GPUS = gpu_count() if config["device"] == "cuda" and LOCAL else None
# nproc_per_node: auto is the machine's GPU count (8 on a cluster, 1 on a CPU)
NPROC = resolve_nproc(config["nproc_per_node"], config["device"], MACHINE_GPUS)
# No two GPU jobs share a GPU: the gpus resource is the machine's count unless --resources gpus=N gives it.
if MACHINE_GPUS and "gpus" not in workflow.global_resources:
    workflow.register_resource("gpus", MACHINE_GPUS)
if MACHINE_GPUS is not None:
    _limit = getattr(workflow.global_resources.get("gpus"), "value", None) or "not set"
    print(
        f"pgolf: {MACHINE_GPUS} CUDA GPU(s) here; nproc_per_node {NPROC}"
        f"{' (auto)' if config['nproc_per_node'] == 'auto' else ''}; gpus resource {_limit}",
        file=sys.stderr,
    )
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
    _PROBLEMS += model_problems(config["train"], script_defaults(SCRIPT), NPROC)
if _PROBLEMS:
    raise WorkflowError(
        "the config cannot work:\n" + "\n".join(f"  - {p}" for p in _PROBLEMS)
    )


# The machine against the config (device cuda: the pod and SLURM profiles), when the run starts: GPUs, disk for the
# data, FA3 and system tools an upstream script needs, a record attempt's author and GitHub id. It refuses before any
# job, naming the key or the fact and what to do (pgolf.preflight.machine_problems); a dry run (-n) only lists them.
if config["device"] == "cuda" and dry_run_requested(sys.argv):
    for _problem in machine_problems(config, SCRIPT, os.getcwd(), MACHINE_GPUS, NPROC):
        print(f"pgolf preflight (a run would stop here): {_problem}", file=sys.stderr)


onstart:
    if config["device"] == "cuda":
        _problems = machine_problems(
            config,
            SCRIPT,
            os.getcwd(),
            MACHINE_GPUS if workflow.local_exec else None,
            NPROC,
        )
        if _problems:
            raise WorkflowError(
                "preflight: this run cannot succeed here, so nothing was started:\n"
                + "\n".join(f"  - {p}" for p in _problems)
            )
        _where = (
            f"{MACHINE_GPUS} GPU(s) here"
            if workflow.local_exec
            else f"executor {EXECUTOR}"
        )
        print(
            f"pgolf preflight: ok ({_where}, nproc_per_node {NPROC})",
            file=sys.stderr,
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
_PROBLEMS = record_folder_problems(RECORD_SETTINGS, RECORD_DIR, RUN)
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
        doc = d["documents"]
        extra = [doc[k] for k in ("prepare_script", "tokenizer") if doc.get(k)]
        return [here(repo_path(p)) for p in [doc["path"], *extra]]
    return []


def kept(path):
    """An output Snakemake must not delete before its job runs (the update flag): the step writes every product
    under a temporary name and renames it only when it succeeds, so a failed or killed re-run (a --forcerun, a
    record that fails its checks) leaves the last good product in place, and Snakemake restores it if the job
    fails. With durable results (DURABLE, below) only for local files: Snakemake can keep a product only as a local
    file, so a re-run of a step whose products are in the storage replaces them (they are gone if it fails).
    """
    from snakemake.io import is_flagged

    if workflow.storage_settings.default_storage_provider and not is_flagged(
        path, "local"
    ):
        return path
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


# Durable results (README, "Data on a volume, results that survive the pod"): with a default storage provider
# (`--default-storage-provider s3 --default-storage-prefix s3://<bucket>/<path>`, the extra "storage"), every product
# under results/ goes to the storage as its job ends, and a run on a new machine reuses what is there. What is the
# machine's own stays local: the repository's files, the data folder, the FA3 step's products (FA3 must be installed
# here) and the record folder (a copy goes to the storage as results/<run>/record.tar.gz). The data and FA3 steps,
# re-done on a new machine by `snakemake ... prepare`, do not make the finished seeds re-run (ancient).
DURABLE = bool(workflow.storage_settings.default_storage_provider)


def here(path):
    """A file of this machine: never in the default storage."""
    return local(path) if DURABLE else path


def prepared(path):
    """An input made by a per-machine step (data, FA3): local and, with durable results, ancient, so that re-doing the
    step on a new machine does not re-run the jobs whose products are already in the storage.
    """
    return ancient(local(path)) if DURABLE else path


def durable_guard(targets, products):
    """With durable results, the per-machine steps must be done before a run that needs them (`prepare`): a plan made
    while they are missing would re-run every seed whose products are already in the storage. Returns the refusal,
    or None."""
    if not DURABLE or "prepare" in targets:
        return None
    missing = [p for p in products if not os.path.exists(p)]
    if not missing:
        return None
    return (
        f"durable results ({workflow.storage_settings.default_storage_provider} storage): {', '.join(missing)}"
        " missing on this machine. Run the per-machine steps first, with the same options plus the target `prepare`"
        " (e.g. `snakemake prepare --profile profiles/pod <storage options>`), then this command again: the seeds"
        " already in the storage are then reused, not re-run."
    )
