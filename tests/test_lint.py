"""The project's own conventions, checked like any other behaviour: ruff, snakefmt, snakemake --lint, hadolint,
actionlint (the GitHub workflows)."""

from __future__ import annotations

import os
import re
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


WORKFLOWS = REPO / ".github" / "workflows"
# an action pinned to a release tag (v6, v6.1.0) or a commit; never a branch
PINNED_ACTION = re.compile(r"^[\w.-]+/[\w./-]+@(v\d+(\.\d+){0,2}|[0-9a-f]{40})$")


def test_actionlint_workflows():
    files = sorted(WORKFLOWS.glob("*.y*ml"))
    assert files, f"no workflow under {WORKFLOWS}"
    proc = run("actionlint", "-color=false", *map(str, files))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _steps(workflow: dict) -> list[dict]:
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


def test_image_workflow_pushes_on_a_tag_and_records_the_digest():
    """docker/Dockerfile is built and pushed to GHCR on a release tag, every action pinned, and the pushed digest is
    what the release's image.txt (the README's and config's reference) holds."""
    import yaml

    text = (WORKFLOWS / "image.yml").read_text()
    wf = yaml.safe_load(text)
    on = wf[True]  # YAML 1.1 reads the key `on` as true
    assert on["push"]["tags"] == ["v*"]
    assert wf["permissions"]["packages"] == "write" and wf["permissions"]["contents"] == "write"
    steps = _steps(wf)
    uses = [s["uses"] for s in steps if "uses" in s]
    assert uses and all(PINNED_ACTION.match(u) for u in uses), uses
    build = next(s for s in steps if s.get("uses", "").startswith("docker/build-push-action@"))
    assert build["with"]["file"] == "docker/Dockerfile" and build["with"]["push"] is True
    assert "${{ env.IMAGE }}:${{ github.ref_name }}" in build["with"]["tags"]
    login = next(s for s in steps if s.get("uses", "").startswith("docker/login-action@"))
    assert login["with"]["registry"] == "ghcr.io"
    assert 'echo "IMAGE=ghcr.io/' in text
    record = next(s for s in steps if "steps.build.outputs.digest" in str(s.get("env", {})))
    assert (
        build["id"] == "build"
        and 'echo "$ref" > image.txt' in record["run"]
        and 'ref="${IMAGE}@${DIGEST}"' in record["run"]
    )
    assert any("gh release upload" in s.get("run", "") and "image.txt" in s.get("run", "") for s in steps)


def test_image_entrypoint_runs_a_pod_start_command_or_snakemake(tmp_path):
    """A pod's start command (`sleep infinity`) replaces the image's CMD, not its entry point: the entry point runs a
    command given instead, and gives Snakemake its options otherwise (docker run IMAGE --cores all --profile ...)."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "snakemake").write_text('#!/bin/sh\necho "snakemake:$*"\n')
    (fake / "snakemake").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}{os.pathsep}{os.environ.get('PATH', '')}"}
    entry = str(REPO / "docker" / "entrypoint.sh")
    for args, out in (
        (["--cores", "all", "--profile", "profiles/pod"], "snakemake:--cores all --profile profiles/pod"),
        (["all"], "snakemake:all"),  # a target, not a command
        (["echo", "a pod"], "a pod"),
        ([], "snakemake:"),
    ):
        proc = subprocess.run(["sh", entry, *args], capture_output=True, text=True, env=env)
        assert proc.returncode == 0 and proc.stdout.strip() == out, (args, proc.stdout, proc.stderr)
    assert os.access(entry, os.X_OK)
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["/usr/local/bin/pgolf-entrypoint"]' in dockerfile
    # COPY keeps the mode git checked out (100755: no --chmod, which older BuildKit front ends lack)
    assert "COPY docker/entrypoint.sh /usr/local/bin/pgolf-entrypoint" in dockerfile
    staged = subprocess.run(["git", "ls-files", "-s", "docker/entrypoint.sh"], cwd=REPO, capture_output=True, text=True)
    assert staged.stdout.startswith("100755 ") or not staged.stdout, staged.stdout


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
