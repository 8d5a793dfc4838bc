"""The project's own conventions, checked like any other behaviour: ruff, snakefmt, snakemake --lint, hadolint."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO

BIN = Path(sys.executable).parent


def run(*cmd: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)


def test_ruff_check_and_format():
    for cmd in (
        ("ruff", "check", "src", "tests", "benchmarks"),
        ("ruff", "format", "--check", "src", "tests", "benchmarks"),
    ):
        proc = run(*cmd)
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_snakefmt():
    proc = run("snakefmt", "--check", "Snakefile", "workflow")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_snakemake_lint(tmp_path):
    proc = run(sys.executable, "-m", "snakemake", "--lint", "-d", str(tmp_path), "-s", str(REPO / "Snakefile"))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Lints for" not in out, out


def test_hadolint_dockerfile():
    proc = run("hadolint", "docker/Dockerfile")
    assert proc.returncode == 0, proc.stdout + proc.stderr
