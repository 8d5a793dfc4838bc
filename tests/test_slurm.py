"""profiles/slurm: a dry run with the tests' config, every seed's train and evaluate a separate 8-GPU SLURM job, all
of them in the image pinned by digest (apptainer). The apptainer binary is not installed here: a shim on PATH answers
the version check that Snakemake makes before a dry run; nothing is pulled or run in a container."""

from __future__ import annotations

import os
import re

from conftest import REPO, job_counts, snakemake

IMAGE = "docker://registry.example.org/pgolf@sha256:" + "0123456789abcdef" * 4


def dry_run(tmp_path, image: str):
    shim = tmp_path / "bin"
    shim.mkdir(exist_ok=True)
    (shim / "apptainer").write_text('#!/bin/sh\necho "apptainer version 1.4.5"\n')
    (shim / "apptainer").chmod(0o755)
    overlay = tmp_path / "container.yaml"
    overlay.write_text(f'container: "{image}"\n')
    os.environ["PATH"] = f"{shim}{os.pathsep}{os.environ['PATH']}"
    try:
        return snakemake(
            tmp_path / "wd",
            "-n",
            "--profile",
            str(REPO / "profiles" / "slurm"),
            configs=[REPO / ".test" / "config.yaml", overlay],
            check=False,
        )
    finally:
        os.environ["PATH"] = os.environ["PATH"].split(os.pathsep, 1)[1]


def test_slurm_profile_runs_each_seed_as_its_own_8_gpu_job_in_the_pinned_image(tmp_path):
    proc = dry_run(tmp_path, IMAGE)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert job_counts(proc)["train"] == 2 and job_counts(proc)["evaluate"] == 2
    assert f"Singularity image {IMAGE} will be pulled" in out
    blocks = re.split(r"\n(?=\[[^\]]+\]\nrule )", out)
    train = [b for b in blocks if "\nrule train:" in b]
    assert sorted(re.search(r"wildcards: seed=(\d+)", b).group(1) for b in train) == ["1", "2"]
    for block in train + [b for b in blocks if "\nrule evaluate:" in b]:
        resources = re.search(r"resources: (.*)", block).group(1)
        assert re.search(r"(^|, )gpu=8(,|$)", resources), resources
        assert "slurm_partition=" in resources
    quantize = [b for b in blocks if "\nrule quantize:" in b]  # GPTQ on a GPU: one is enough
    assert len(quantize) == 2 and all(re.search(r"resources: .*\bgpu=1\b", b) for b in quantize)


def test_the_container_must_be_pinned_by_digest(tmp_path):
    proc = dry_run(tmp_path, "docker://registry.example.org/pgolf:latest")
    assert proc.returncode != 0
    assert "container" in proc.stdout + proc.stderr and "pgolf:latest" in proc.stdout + proc.stderr
