import datetime
import hashlib
import json
from pathlib import Path


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


def file_sha256(path):
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
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
# The hyperparameters as the script sees them (environment variables), for the record's README and command.
TRAIN_ENV = {
    k.upper(): v for k, v in config["train"].items() if k not in ("script", "env")
}
TRAIN_ENV.update(config["train"].get("env") or {})


def data_command():
    d = config["data"]
    out = str(Path(DATA_MANIFEST).parent)
    if d["source"] == "hub":
        h = d["hub"]
        cmd = [
            "pgolf",
            "data",
            "hub",
            "--out",
            out,
            "--name",
            d["name"],
            "--repo-id",
            h["repo_id"],
        ]
        cmd += [
            "--revision",
            h["revision"],
            "--variant",
            h["variant"],
            "--train-shards",
            str(h["train_shards"]),
        ]
        cmd += ["--remote-root", h.get("remote_root", "datasets")]
        if h.get("endpoint"):
            cmd += ["--endpoint", h["endpoint"]]
    else:
        doc = d["documents"]
        cmd = [
            "pgolf",
            "data",
            "documents",
            "--docs",
            repo_path(doc["path"]),
            "--out",
            out,
            "--name",
            d["name"],
        ]
        cmd += [
            "--vocab-size",
            str(doc["vocab_size"]),
            "--val-docs",
            str(doc["val_docs"]),
        ]
        for key in ("shard_tokens", "max_docs", "tokenizer_max_docs"):
            if doc.get(key):
                cmd += [f"--{key.replace('_', '-')}", str(doc[key])]
    return " ".join(json.dumps(c) if " " in c else c for c in cmd)


def data_inputs(wildcards):
    d = config["data"]
    return [repo_path(d["documents"]["path"])] if d["source"] == "documents" else []


def seed_path(name):
    return f"{OUT}/seed_{{seed}}/{name}"
