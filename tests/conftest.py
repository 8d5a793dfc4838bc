"""Shared fixtures: the repository's paths, ../shared (optional), and a tiny data set built from the demo corpus."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SCRIPT = REPO / "src" / "pgolf" / "train_gpt.py"
DEMO_CORPUS = REPO / "demo" / "wiki_vital_en.jsonl.xz"
FIXTURES = SHARED / "fixtures" / "upstream-records"
NAIVE = "2026-03-17_NaiveBaseline"
MARCH = "2026-03-21_11L_XSA4_EMA_PartialRoPE_LateQAT_1.1248"
APRIL = "2026-04-27_SP8192_LQER_SparseGate_BOSSmearFix_9HpStack_1.0611"


def fixture(name: str) -> Path:
    path = FIXTURES / name
    if not path.is_dir():
        pytest.skip(f"upstream record fixtures not found at {FIXTURES} (they live in the shared folder)")
    return path


def load_script():
    """Import the self-contained training script as a module (it is also run as a file)."""
    spec = importlib.util.spec_from_file_location("train_gpt_under_test", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # torch.compile resolves a function's module by name
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def train_script():
    return load_script()


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> dict:
    """A tokenizer (sp1024 spec) and train/val shards from the first 400 demo documents."""
    from pgolf.data import docs_to_shards, load_manifest, train_tokenizer, write_manifest

    out = tmp_path_factory.mktemp("tiny_data")
    model = train_tokenizer(DEMO_CORPUS, out / "tok", vocab_size=1024, max_docs=400)
    docs_to_shards(DEMO_CORPUS, model, out, prefix="tiny", val_docs=30, shard_tokens=40_000, max_docs=400)
    write_manifest(out, name="tiny", source="documents", tokenizer_path=model, prefix="tiny")
    return load_manifest(out / "manifest.json") | {"manifest_path": str(out / "manifest.json")}


TINY_MODEL_ENV = {
    "NUM_LAYERS": "2",
    "MODEL_DIM": "64",
    "NUM_HEADS": "2",
    "NUM_KV_HEADS": "1",
    "XSA_LAST_N": "1",
    "BIGRAM_VOCAB_SIZE": "256",
    "BIGRAM_DIM": "16",
    "TRAIN_SEQ_LEN": "128",
    "EVAL_SEQ_LEN": "128",
    "EVAL_STRIDE": "64",
    "TRAIN_BATCH_TOKENS": "1024",
    "GRAD_ACCUM_STEPS": "1",
    "ITERATIONS": "8",
    "WARMUP_STEPS": "0",
    "WARMDOWN_ITERS": "3",
    "MAX_WALLCLOCK_SECONDS": "0",
    "TRAIN_LOG_EVERY": "1",
    "MUON_MOMENTUM_WARMUP_STEPS": "2",
    "EMA_DECAY": "0.5",
    "QUANT_KEEP_FLOAT_NUMEL": "1024",
}


def run_script(args: list[str], env: dict, data: dict, cwd: Path, nproc: int = 0, check: bool = True, script=SCRIPT):
    """Run the training script (or a copy of it, e.g. the packed one) under torchrun when nproc > 0 on the tiny data."""
    full_env = {
        **os.environ,
        **TINY_MODEL_ENV,
        "TRAIN_FILES": data["train_glob"],
        "VAL_FILES": data["val_glob"],
        "TOKENIZER_PATH": data["tokenizer_path"],
        "OMP_NUM_THREADS": "1",
        **env,
    }
    if nproc:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    else:
        cmd = [sys.executable]
    proc = subprocess.run([*cmd, str(script), *args], env=full_env, cwd=cwd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"script failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def env_with_venv() -> dict:
    """The environment with this interpreter's bin folder first on PATH (the rules call `pgolf`)."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def snakemake(workdir: Path, *args: str, configs=(), check: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--cores", "2"]
    cmd += list(args)
    if configs:
        cmd += ["--configfile", *map(str, configs)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env_with_venv())
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def job_counts(proc: subprocess.CompletedProcess) -> dict[str, int]:
    """The 'Job stats' table of a (dry) run; {} when there is nothing to be done."""
    text = proc.stdout + proc.stderr
    if "Nothing to be done" in text:
        return {}
    table = text.split("Job stats:", 1)[1]
    counts = {}
    for line in table.splitlines()[3:]:
        m = re.match(r"^(\w+)\s+(\d+)\s*$", line)
        if not m:
            break
        counts[m.group(1)] = int(m.group(2))
    counts.pop("total", None)
    return counts


DATA_COMMAND = "pgolf data --data-json "


def data_rule_arguments(output: str) -> dict:
    """The data rule's command in a dry run's printed shell commands (``pgolf data --data-json ... --root ...``),
    resolved as the command resolves it: the arguments of the hub download (or documents build) it runs."""
    import json
    import shlex

    from pgolf.data import documents_arguments, hub_arguments

    line = next(x for x in output.splitlines() if DATA_COMMAND in x)
    words = shlex.split(line[line.index(DATA_COMMAND) :])
    section = json.loads(words[words.index("--data-json") + 1])
    root = words[words.index("--root") + 1]
    resolve = hub_arguments if section["source"] == "hub" else documents_arguments
    return resolve(section, root)


def private_hf_home(tmp_path: Path, monkeypatch) -> Path:
    """A private Hugging Face home, online, no token, for a test's stand-in hub; returns its hub cache folder."""
    import huggingface_hub.constants as hf_constants

    hf_home = tmp_path / "hf_home"
    for key, value in {
        "HF_HOME": str(hf_home),
        "HF_HUB_OFFLINE": "0",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "NO_PROXY": "127.0.0.1,localhost",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)  # these two are read at import time
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(hf_home / "hub"))
    return hf_home / "hub"
