import datetime
import json
from pathlib import Path

from pgolf.fsio import sha256_file
from pgolf.stages import train_env


wildcard_constraints:
    seed=r"\d+",


RUN = config["run"]
SEEDS = [int(s) for s in config["seeds"]]
NPROC = int(config["nproc_per_node"])
OUT = f"results/{RUN}"
LOGS = f"logs/{RUN}"
GPUS = NPROC if config["device"] == "cuda" else 0
DATA_MANIFEST = f"data/{config['data']['name']}/manifest.json"
# Every rule runs the pgolf package; with --software-deployment-method conda this is its environment.
CONDA_ENV = str(Path(workflow.basedir) / "environment.yml")


def repo_path(path):
    """Paths in the config are relative to the repository (the Snakefile's folder) unless absolute."""
    p = Path(path)
    return str(p if p.is_absolute() else Path(workflow.basedir) / p)


SCRIPT = repo_path(config["train"]["script"])
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


def as_json(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


# The record folder is named by its date: config record.date, or today when it is null.
RECORD_DATE = config["record"].get("date") or datetime.date.today().isoformat()
RECORD_DIR = (
    f"records/{config['record']['track']}/{RECORD_DATE}_{config['record']['name']}"
)
RECORD_SETTINGS = {**config["record"], "date": RECORD_DATE}
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
        args += ["--data-manifest", input.data]
        args += ["--quantize-json", as_json(config["quantize"])]
        args += ["--eval-json", as_json(config["eval"])]
    return " ".join(shlex.quote(str(a)) for a in args)


def data_command():
    """The `pgolf data hub|documents` command of the data rule (the rule adds --threads)."""
    import shlex

    d = config["data"]
    out = str(Path(DATA_MANIFEST).parent)
    if d["source"] == "hub":
        h = d["hub"]
        variant = h["variant"]
        repos = h.get("repos") or {}
        if variant not in repos:
            raise WorkflowError(
                f"config data.hub.repos has no entry for data.hub.variant {variant!r}"
                f" (it has: {', '.join(sorted(repos)) or 'none'});"
                f" add {variant}: {{repo_id: ..., revision: ...}}"
            )
        repo = repos[variant]
        root = repo.get("remote_root", h.get("remote_root", "datasets"))
        cmd = ["pgolf", "data", "hub", "--out", out, "--name", d["name"]]
        cmd += ["--variant", variant, "--train-shards", str(h["train_shards"])]
        cmd += ["--repo-id", repo["repo_id"], "--revision", str(repo["revision"])]
        cmd += ["--remote-root", root, "--max-workers", str(h.get("max_workers", 8))]
        cmd += ["--timeout", str(h.get("timeout_s", 30))]
        cmd += ["--retries", str(h.get("retries", 5))]
        if h.get("endpoint"):
            cmd += ["--endpoint", h["endpoint"]]
        lock = h.get("lock", "config/data.lock.json")
        if lock:
            cmd += ["--lock", repo_path(lock)]
        if h.get("update_lock"):
            cmd += ["--update-lock"]
    else:
        doc = d["documents"]
        cmd = ["pgolf", "data", "documents", "--docs", repo_path(doc["path"])]
        cmd += ["--out", out, "--name", d["name"]]
        cmd += ["--vocab-size", str(doc["vocab_size"])]
        cmd += ["--val-docs", str(doc["val_docs"])]
        for key in ("shard_tokens", "max_docs", "tokenizer_max_docs"):
            if doc.get(key):
                cmd += [f"--{key.replace('_', '-')}", str(doc[key])]
    return " ".join(shlex.quote(c) for c in cmd)


def data_inputs(wildcards):
    """The documents file of the documents source. The hub source has none: its lock
    file is rewritten by the rule itself, so it is not an input (that would re-trigger
    the rule)."""
    d = config["data"]
    if d["source"] == "documents":
        return [repo_path(d["documents"]["path"])]
    return []


def seed_path(name):
    return f"{OUT}/seed_{{seed}}/{name}"
