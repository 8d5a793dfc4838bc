"""The fa3 step without a GPU: a local git repository stands in for Dao-AILab/flash-attention (its hopper/setup.py
builds a wheel of a tiny flash_attn_interface that records the build switches it saw)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from pgolf import env as fa3env

FAKE_SETUP = """
import json, os, sys
from setuptools import setup
if "bdist_wheel" in sys.argv:  # pip also runs this file to read the metadata
    with open(os.environ["FAKE_FA3_BUILD_LOG"], "a") as f:
        f.write("built\\n")
seen = {k: v for k, v in sorted(os.environ.items()) if k.startswith(("FLASH_ATTENTION_", "TORCH_CUDA_ARCH_LIST"))}
with open("flash_attn_interface.py", "w") as f:
    f.write("BUILD_ENV = " + repr(json.dumps(seen)) + "\\nVERSION = " + repr(open("VERSION").read().strip()) + "\\n")
setup(name="flash_attn_3", version="3.0.0b1", py_modules=["flash_attn_interface"])
"""
SWITCHES = ["SM80", "FP8", "HDIM256"]
TORCH, CUDA = "2.9.1+cu128", "12.8"


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def fake_repo(tmp_path, monkeypatch) -> dict:
    """A git repository with hopper/setup.py in two commits (VERSION "one", then "two" on the branch head)."""
    repo = tmp_path / "flash-attention"
    (repo / "hopper").mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "t@example.com")
    git(repo, "config", "user.name", "t")
    (repo / "hopper" / "setup.py").write_text(FAKE_SETUP)
    commits = []
    for version in ("one", "two"):
        (repo / "hopper" / "VERSION").write_text(version)
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", version)
        commits.append(git(repo, "rev-parse", "HEAD"))
    log = tmp_path / "builds.log"
    monkeypatch.setenv("FAKE_FA3_BUILD_LOG", str(log))
    return {"repo": str(repo), "first": commits[0], "head": commits[1], "log": log, "cache": tmp_path / "cache"}


def built_module(wheel: Path) -> str:
    with zipfile.ZipFile(wheel) as z:
        return z.read("flash_attn_interface.py").decode()


def build(fake: dict, commit: str, switches=SWITCHES):
    return fa3env.build_fa3_wheel(fake["repo"], commit, switches, "9.0a", fake["cache"], 2, TORCH, CUDA)


def test_builds_the_pinned_commit_with_the_switches_and_reuses_the_cache(fake_repo):
    wheel, cached = build(fake_repo, fake_repo["first"])
    assert not cached and wheel.name.startswith("flash_attn_3-3.0.0b1")
    module = built_module(wheel)
    assert "VERSION = 'one'" in module  # the pinned commit, not the branch head
    seen = json.loads(module.split("BUILD_ENV = ", 1)[1].splitlines()[0].strip("'"))
    assert seen["FLASH_ATTENTION_DISABLE_SM80"] == seen["FLASH_ATTENTION_DISABLE_FP8"] == "TRUE"
    assert seen["FLASH_ATTENTION_DISABLE_HDIM256"] == "TRUE" and seen["TORCH_CUDA_ARCH_LIST"] == "9.0a"
    assert "FLASH_ATTENTION_DISABLE_HDIM64" not in seen
    key = fa3env.cache_key(fake_repo["first"], TORCH, CUDA, SWITCHES, "9.0a")
    assert wheel.parent == fake_repo["cache"] / key
    assert json.loads((wheel.parent / "build.json").read_text())["commit"] == fake_repo["first"]
    assert fake_repo["log"].read_text().count("built") == 1

    again, cached = build(fake_repo, fake_repo["first"], list(reversed(SWITCHES)))  # same switches, other order
    assert cached and again == wheel
    assert fake_repo["log"].read_text().count("built") == 1  # the builder did not run again


def test_cache_key_covers_commit_torch_cuda_switches_and_arch(fake_repo):
    base = fa3env.cache_key("a" * 40, TORCH, CUDA, SWITCHES, "9.0a")
    assert base == fa3env.cache_key("a" * 40, TORCH, CUDA, ["hdim256", "SM80", "FP8"], "9.0a")
    others = [
        fa3env.cache_key("b" * 40, TORCH, CUDA, SWITCHES, "9.0a"),
        fa3env.cache_key("a" * 40, "2.11.0+cu130", CUDA, SWITCHES, "9.0a"),
        fa3env.cache_key("a" * 40, TORCH, "13.0", SWITCHES, "9.0a"),
        fa3env.cache_key("a" * 40, TORCH, CUDA, SWITCHES[:2], "9.0a"),
        fa3env.cache_key("a" * 40, TORCH, CUDA, SWITCHES, "8.0"),
    ]
    assert base not in others and len(set(others)) == len(others)
    _, cached = build(fake_repo, fake_repo["head"])
    assert not cached
    _, cached = build(fake_repo, fake_repo["head"], SWITCHES[:2])  # other switches: another build
    assert not cached and fake_repo["log"].read_text().count("built") == 2


def test_a_missing_commit_is_a_clear_error(fake_repo):
    missing = "0123456789abcdef0123456789abcdef01234567"
    with pytest.raises(RuntimeError, match=f"commit {missing} not found in {fake_repo['repo']}"):
        build(fake_repo, missing)
    with pytest.raises(ValueError, match="not a 40-hex commit"):
        build(fake_repo, "v2.8.3")
    assert not fake_repo["log"].exists() and not list(fake_repo["cache"].glob("*/*.whl"))


def run_fa3(cfg: dict, tmp_path: Path, capsys) -> tuple[dict, dict, str]:
    args = argparse.Namespace(
        fa3_json=json.dumps(cfg),
        config=None,
        cache_dir=str(tmp_path / "cache"),
        repo_dir=str(Path(__file__).resolve().parents[1]),
        build_only=False,
        max_jobs=None,
        status=str(tmp_path / "fa3.json"),
        environment=str(tmp_path / "environment.json"),
    )
    assert fa3env.cmd_fa3(args) == 0
    out = capsys.readouterr().out
    return json.loads(Path(args.status).read_text()), json.loads(Path(args.environment).read_text()), out


def test_without_cuda_the_step_says_so_once_and_training_falls_back(fake_repo, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(fa3env, "fa3_importable", lambda: False)
    monkeypatch.setattr(fa3env, "probe_environment", lambda repo_dir: {**real_probe(repo_dir), "cuda_available": False})
    cfg = {"enabled": True, "repo": fake_repo["repo"], "commit": fake_repo["first"], "disable": SWITCHES}
    status, env, out = run_fa3(cfg, tmp_path, capsys)
    assert status["state"] == "unavailable" and status["reason"] == "no CUDA device" and not status["available"]
    assert out.count("fa3: not available (no CUDA device); training uses PyTorch SDPA attention") == 1
    assert env["fa3"] is None and env["fa3_status"] == status and not fake_repo["log"].exists()
    for key in ("torch", "cuda", "git_commit", "gpu_count", "driver", "nvidia_smi", "image_digest", "python"):
        assert key in env, key


real_probe = fa3env.probe_environment


def test_with_cuda_and_nvcc_the_step_builds_installs_verifies_then_reuses(fake_repo, tmp_path, capsys, monkeypatch):
    """The GPU path with the GPU parts replaced: the wheel is built from the pinned commit, installed (recorded, not
    installed into the test environment) and verified; the second run takes the cached wheel."""
    installed = []
    monkeypatch.setattr(fa3env, "fa3_importable", lambda: False)
    monkeypatch.setattr(fa3env, "install_wheel", installed.append)
    monkeypatch.setattr(fa3env, "verify_fa3", lambda: {"ok": True, "max_abs_diff": 0.0078125})
    fake_gpu = {"cuda_available": True, "nvcc": "Cuda compilation tools, release 12.8", "torch": TORCH, "cuda": CUDA}
    monkeypatch.setattr(fa3env, "probe_environment", lambda repo_dir: {**real_probe(repo_dir), **fake_gpu})
    cfg = {"enabled": True, "repo": fake_repo["repo"], "commit": fake_repo["first"], "disable": SWITCHES}
    status, _, _ = run_fa3(cfg, tmp_path, capsys)
    assert status["state"] == "built" and status["available"] and status["verify"]["ok"]
    assert status["switches"] == {f"FLASH_ATTENTION_DISABLE_{s}": "TRUE" for s in sorted(SWITCHES)}
    assert [str(w) for w in installed] == [status["wheel"]]
    status2, _, _ = run_fa3(cfg, tmp_path, capsys)
    assert status2["state"] == "cached" and status2["wheel"] == status["wheel"]
    assert fake_repo["log"].read_text().count("built") == 1


def test_the_step_runs_from_the_command_line_on_a_cpu_machine(tmp_path):
    """`pgolf fa3` as the rule runs it, with the production fa3 section, on this (GPU-less) machine."""
    import yaml

    cfg = yaml.safe_load((Path(__file__).resolve().parents[1] / "config" / "config.yaml").read_text())["fa3"]
    cmd = [sys.executable, "-m", "pgolf.cli", "fa3", "--fa3-json", json.dumps(cfg), "--cache-dir", str(tmp_path)]
    cmd += ["--status", str(tmp_path / "s.json"), "--environment", str(tmp_path / "e.json")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    status = json.loads((tmp_path / "s.json").read_text())
    import torch

    if not torch.cuda.is_available():
        assert status["state"] == "unavailable" and "training uses PyTorch SDPA" in proc.stdout
