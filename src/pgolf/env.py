"""The provenance of the machine, probed by the fa3 step (pgolf.fa3) into environment.json: versions of Python, torch,
CUDA, FA3, GPU model and count, driver, nvidia-smi, nvcc, the project's git commit, the container image."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from pathlib import Path

GIT = ["git", "-c", "safe.directory=*"]


def run_text(cmd: list[str], timeout: float = 30) -> str | None:
    """stdout of a command, or None when it is missing or fails."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def container_id() -> str | None:
    """The id of the container this process runs in (docker, containerd, podman), from /proc/self; None outside."""
    for name in ("/proc/self/cgroup", "/proc/self/mountinfo"):
        try:
            text = Path(name).read_text()
        except OSError:
            continue
        m = re.search(r"(?:docker|containers|libpod|cri-containerd)[-/]([0-9a-f]{64})", text)
        if m:
            return m.group(1)
    return None


def probe_environment(repo_dir: str | os.PathLike = ".") -> dict:
    """What runs: Python, torch, CUDA, GPUs, driver, nvidia-smi, nvcc, the project's git commit and the container image
    (PGOLF_IMAGE_DIGEST, set at run time; PGOLF_BASE_IMAGE and PGOLF_FA3_SOURCE, set by docker/Dockerfile)."""
    import torch

    cuda = torch.cuda.is_available()
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else []
    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cuda_available": cuda,
        "gpu": gpus[0] if gpus else None,
        "gpu_count": len(gpus),
        "gpus": gpus,
        "driver": run_text(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]),
        "nvidia_smi": run_text(["nvidia-smi"]),
        "nvcc": run_text(["nvcc", "--version"]),
        # safe.directory: in the container the mounted tree belongs to another user, which git otherwise refuses
        "git_commit": run_text([*GIT, "-C", str(repo_dir), "rev-parse", "HEAD"]),
        "git_dirty": bool(run_text([*GIT, "-C", str(repo_dir), "status", "--porcelain", "--untracked-files=no"])),
        "image_digest": os.environ.get("PGOLF_IMAGE_DIGEST"),
        "image_base": os.environ.get("PGOLF_BASE_IMAGE"),
        "image_fa3_source": os.environ.get("PGOLF_FA3_SOURCE"),
        "container_id": container_id(),
        "packages": {},
    }
    if info["driver"]:
        info["driver"] = info["driver"].splitlines()[0].strip()
    from importlib.metadata import PackageNotFoundError, version

    for pkg in ("numpy", "sentencepiece", "zstandard", "brotli", "snakemake", "huggingface_hub", "flash_attn_3"):
        try:
            info["packages"][pkg] = version(pkg)
        except PackageNotFoundError:
            info["packages"][pkg] = None
    return info
