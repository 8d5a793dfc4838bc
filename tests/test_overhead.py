"""Per-seed overhead (issue 26, item 9): the quantize step's GPU claim and the GPU overhead benchmark's plumbing."""

from __future__ import annotations

import glob
import re
import subprocess
import sys

import pytest
from conftest import REPO, TINY_MODEL_ENV


def test_quantize_holds_the_gpus_like_train_and_evaluate(tmp_path):
    """GPTQ runs on the GPU when there is one: the quantize job claims the GPUs as train and evaluate do, so that it
    never runs beside the next seed's training on a GPU that training uses (before, it claimed none)."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path), "-n", "-p"]
    proc = subprocess.run([*cmd, "--until", "evaluate"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    claims = {}
    for rule, body in re.findall(r"^rule (\w+):\n(.*?)(?=^Shell command|^rule |\Z)", proc.stdout, re.M | re.S):
        m = re.search(r"resources: .*?\bgpus=(\d+)", body)
        claims.setdefault(rule, set()).add(int(m.group(1)) if m else 0)
    # nproc_per_node: auto, i.e. this machine's GPU count (1 without GPUs): the same claim for the three steps
    assert claims["quantize"] == claims["train"] == claims["evaluate"] and 0 not in claims["quantize"], claims
    assert claims["data"] == {0}


@pytest.mark.slow
def test_the_gpu_overhead_benchmark_runs_on_cpu(tiny_data, tmp_path):
    """benchmarks/overhead_gpu.py end to end on a tiny model on the CPU: a row per seed, the overhead column filled,
    the CPU-vs-GPU check run (CPU against itself here), the logs packed; what the GPU call will run, minus the GPU."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "tiny_train_000000.bin").symlink_to(sorted(glob.glob(tiny_data["train_glob"]))[0])
    (data / "fineweb_val_prefix_sp1024.bin").symlink_to(sorted(glob.glob(tiny_data["val_glob"]))[0])
    (data / "fineweb_1024_bpe.model").symlink_to(tiny_data["tokenizer_path"])
    skip = ("MAX_WALLCLOCK_SECONDS", "EVAL_SEQ_LEN", "TRAIN_LOG_EVERY")  # the benchmark's cap; the eval's own length
    tiny = {k: v for k, v in TINY_MODEL_ENV.items() if k not in skip}
    cmd = [
        sys.executable,
        str(REPO / "benchmarks" / "overhead_gpu.py"),
        "--data",
        str(data),
        "--out",
        str(tmp_path / "out"),
    ]
    cmd += ["--workdir", str(tmp_path / "wd"), "--cap", "3", "--val-tokens", "4096", "--budget", "600"]
    cmd += [f"--set={k}={v}" for k, v in tiny.items()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = (tmp_path / "out" / "table.md").read_text()
    rows = [line for line in table.splitlines() if re.match(r"\| [12] \|", line)]
    assert len(rows) == 2 and all(re.search(r"\*\*\d+\.\d\*\*", r) for r in rows), table
    assert "seed 1's" in rows[1] and table.count("IDENTICAL") == 2, table
    assert {"compare.log", "logs.tar.gz", "table.md"} <= {p.name for p in (tmp_path / "out").iterdir()}
