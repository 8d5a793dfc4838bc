"""Per-seed overhead (issue 26, item 9): the quantize step's GPU claim and the GPU overhead benchmark's plumbing."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import REPO


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
    assert claims["quantize"] == claims["train"] == claims["evaluate"] == {8}, claims  # nproc_per_node: 8
    assert claims["data"] == {0}
