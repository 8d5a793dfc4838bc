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


def test_image_lock_pins_what_the_project_pins():
    """docker/requirements.lock (the image) must carry every exact pin of pyproject.toml's dependencies: a pin bumped
    in one place and not the other would make the image and the CPU install differ."""
    import re
    import tomllib

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = dict(m.groups() for d in deps if (m := re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)", d)))
    norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()  # noqa: E731
    lock = {
        norm(m.group(1)): m.group(2)
        for m in re.finditer(r"^([A-Za-z0-9_.-]+)==(\S+)", (REPO / "docker" / "requirements.lock").read_text(), re.M)
    }
    assert pins and {norm(k): v for k, v in pins.items()}.items() <= lock.items(), {
        k: (v, lock.get(norm(k))) for k, v in pins.items() if lock.get(norm(k)) != v
    }


def test_actionlint_the_github_action(tmp_path):
    """The Action (action.yml, used as a local action so actionlint reads its metadata) and the workflow a maintainer
    adds (.github/pgolf-check-records.example.yml): actionlint-clean, on pull_request with read-only permissions."""
    import shutil

    import yaml

    example = REPO / ".github" / "pgolf-check-records.example.yml"
    wf = yaml.safe_load(example.read_text())
    assert wf[True] == "pull_request" and wf["permissions"] == {"contents": "read"}  # YAML reads `on` as True
    assert "pull_request_target" not in (REPO / "action.yml").read_text() + example.read_text()
    (tmp_path / ".github" / "workflows").mkdir(parents=True)
    shutil.copy(REPO / "action.yml", tmp_path / "action.yml")
    local = example.read_text().replace("OWNER/pgolf@main", "./")
    (tmp_path / ".github" / "workflows" / "check.yml").write_text(local)
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)  # actionlint looks for a repository
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    for args, cwd in ((["actionlint", str(example)], REPO), (["actionlint"], tmp_path)):
        proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
