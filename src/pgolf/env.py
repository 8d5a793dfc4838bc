"""The environment step: FlashAttention 3 (built from a pinned commit into a cached wheel, a pinned prebuilt wheel, or
what is installed, verified against PyTorch SDPA on the GPU) and the provenance of the machine (versions of Python,
torch, CUDA, FA3, GPU model and count, driver, nvidia-smi, git commit, container image)."""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from pgolf import fsio

GIT = ["git", "-c", "safe.directory=*"]
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")

VERIFY_SNIPPET = """
import json, torch, torch.nn.functional as F
from flash_attn_interface import flash_attn_func
torch.manual_seed(0)
q, k, v = (torch.randn(2, 256, 8, 64, device="cuda", dtype=torch.bfloat16) for _ in range(3))
out = flash_attn_func(q, k, v, causal=True)
out = out[0] if isinstance(out, tuple) else out
ref = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
print(json.dumps({"max_abs_diff": (out.float() - ref.transpose(1, 2).float()).abs().max().item()}))
"""


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


def fa3_importable() -> bool:
    return importlib.util.find_spec("flash_attn_interface") is not None


def switch_env(disable: list[str]) -> dict[str, str]:
    """The FLASH_ATTENTION_DISABLE_* variables of the config's disable list."""
    return {f"FLASH_ATTENTION_DISABLE_{s.upper()}": "TRUE" for s in sorted(disable)}


def cache_key(commit: str, torch_version: str, cuda_version: str | None, disable: list[str], arch: str) -> str:
    """The wheel's cache key: (commit, torch version, CUDA version, sorted switches, arch)."""
    blob = json.dumps([commit, torch_version, cuda_version, sorted(s.upper() for s in disable), arch])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _git(*args: str, cwd: str | os.PathLike | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)


def checkout_commit(repo: str, commit: str, dest: Path) -> None:
    """`repo` at `commit` in `dest` (a shallow fetch of the commit, else a full fetch); a clear error when absent."""
    if not COMMIT_RE.match(commit):
        raise ValueError(f"fa3: commit {commit!r} of {repo} is not a 40-hex commit (config fa3.commit)")
    _git("init", "-q", str(dest))
    if _git("fetch", "-q", "--depth", "1", repo, commit, cwd=dest).returncode != 0:
        full = _git("fetch", "-q", repo, "+refs/heads/*:refs/remotes/src/*", "+refs/tags/*:refs/tags/*", cwd=dest)
        if full.returncode != 0:
            raise RuntimeError(f"fa3: cannot fetch {repo}: {full.stderr.strip()}")
    if _git("checkout", "-q", "--detach", commit, cwd=dest).returncode != 0:
        raise RuntimeError(f"fa3: commit {commit} not found in {repo} (config fa3.commit)")
    head = _git("rev-parse", "HEAD", cwd=dest).stdout.strip()
    if head != commit:
        raise RuntimeError(f"fa3: {repo} checked out {head}, not the pinned commit {commit}")
    if (dest / ".gitmodules").is_file() and "csrc/cutlass" in (dest / ".gitmodules").read_text():
        sub = _git("submodule", "update", "--init", "--depth", "1", "csrc/cutlass", cwd=dest)
        if sub.returncode != 0:
            raise RuntimeError(f"fa3: the csrc/cutlass submodule of {repo}@{commit}: {sub.stderr.strip()}")


def build_fa3_wheel(
    repo: str,
    commit: str,
    disable: list[str],
    arch: str,
    cache_dir: Path,
    jobs: int,
    torch_version: str,
    cuda_version: str | None,
) -> tuple[Path, bool]:
    """FA3 built from `repo`'s hopper/ at `commit` into a wheel cached under cache_dir/<cache_key>/; returns the wheel
    and whether it came from the cache (then nothing is fetched or built)."""
    key = cache_key(commit, torch_version, cuda_version, disable, arch)
    key_dir = Path(cache_dir) / key
    wheels = sorted(key_dir.glob("*.whl"))
    if wheels:
        print(f"fa3: cached wheel {wheels[-1]} (key {key})")
        return wheels[-1], True
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fa3-src-") as src:
        checkout_commit(repo, commit, Path(src))
        hopper = Path(src) / "hopper"
        if not (hopper / "setup.py").is_file():
            raise RuntimeError(f"fa3: {repo}@{commit} has no hopper/setup.py")
        env = {**os.environ, "TORCH_CUDA_ARCH_LIST": arch, "MAX_JOBS": str(jobs), "FLASH_ATTENTION_FORCE_BUILD": "TRUE"}
        env.update(switch_env(disable))
        out = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=cache_dir))
        print(f"fa3: building {repo}@{commit} hopper/ for {arch} with {', '.join(sorted(switch_env(disable)))}")
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-w", str(out), "."]
        proc = subprocess.run(cmd, cwd=hopper, env=env)
        built = sorted(out.glob("*.whl"))
        if proc.returncode != 0 or not built:
            shutil.rmtree(out, ignore_errors=True)
            raise RuntimeError(f"fa3: building {repo}@{commit} hopper/ failed (pip wheel exit {proc.returncode})")
        build = {"repo": repo, "commit": commit, "torch": torch_version, "cuda": cuda_version, "arch": arch}
        fsio.write_json(out / "build.json", build | {"switches": switch_env(disable)})
        if key_dir.exists():
            shutil.rmtree(key_dir)
        os.replace(out, key_dir)
    wheel = sorted(key_dir.glob("*.whl"))[-1]
    print(f"fa3: built {wheel} (key {key})")
    return wheel, False


def fetch_fa3_wheel(url: str, sha256: str, cache_dir: Path) -> tuple[Path, bool]:
    """A pinned prebuilt wheel, downloaded once into cache_dir/prebuilt/<sha256>/ and checked against its sha256."""
    import urllib.request

    dest = Path(cache_dir) / "prebuilt" / sha256 / url.rsplit("/", 1)[-1]
    if dest.is_file() and fsio.sha256_file(dest) == sha256:
        return dest, True
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    urllib.request.urlretrieve(url, tmp)
    got = fsio.sha256_file(tmp)
    if got != sha256:
        tmp.unlink()
        raise RuntimeError(f"fa3: {url} has sha256 {got}, not the pinned {sha256} (config fa3.wheel.sha256)")
    os.replace(tmp, dest)
    return dest, False


def install_wheel(wheel: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--force-reinstall", str(wheel)], check=True)


def verify_fa3() -> dict:
    """flash_attn_interface against PyTorch SDPA on the GPU (bf16, causal)."""
    proc = subprocess.run([sys.executable, "-c", VERIFY_SNIPPET], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        return {"ok": False, "error": proc.stderr.strip()[-2000:]}
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["ok"] = res["max_abs_diff"] < 2e-2
    return res


def load_fa3_config(args: argparse.Namespace) -> dict:
    if args.fa3_json:
        return json.loads(args.fa3_json)
    import yaml

    with open(args.config) as f:
        cfg = yaml.safe_load(f) or {}
    if not isinstance(cfg.get("fa3"), dict):
        raise ValueError(f"{args.config}: no fa3 section")
    return cfg["fa3"]


def _build(cfg: dict, cache_dir: Path, jobs: int | None, env: dict) -> tuple[Path, bool]:
    for key in ("repo", "commit"):
        if not cfg.get(key):
            raise ValueError(f"config fa3.{key} is required to build FlashAttention 3")
    jobs = jobs or cfg.get("max_jobs") or os.cpu_count() or 4
    return build_fa3_wheel(
        cfg["repo"], cfg["commit"], list(cfg.get("disable", [])), cfg.get("arch", "9.0a"), cache_dir, jobs,
        env["torch"], env["cuda"],
    )  # fmt: skip


def provide_fa3(cfg: dict, env: dict, cache_dir: Path) -> dict:
    """Make FA3 importable if it can run here; the status says how (state) or why not (reason)."""
    status: dict = {"enabled": bool(cfg.get("enabled")), "commit": cfg.get("commit"), "available": False}
    wheel_cfg = cfg.get("wheel") or {}
    if not cfg.get("enabled"):
        status.update(state="unavailable", reason="disabled in the config (fa3.enabled: false)")
    elif fa3_importable():
        status.update(state="preinstalled", image_fa3_source=env.get("image_fa3_source"))
    elif not env["cuda_available"]:
        status.update(state="unavailable", reason="no CUDA device")
    elif wheel_cfg:
        wheel, cached = fetch_fa3_wheel(wheel_cfg["url"], wheel_cfg["sha256"], cache_dir)
        install_wheel(wheel)
        status.update(state="prebuilt", wheel=str(wheel), cached=cached)
    elif not env["nvcc"]:
        status.update(state="unavailable", reason="no CUDA compiler (nvcc) to build it")
    else:
        wheel, cached = _build(cfg, cache_dir, None, env)
        install_wheel(wheel)
        status.update(state="cached" if cached else "built", wheel=str(wheel), switches=switch_env(cfg["disable"]))
        status["cache_key"] = wheel.parent.name
    if status["state"] == "unavailable":
        return status
    if not env["cuda_available"]:
        status.update(state="unavailable", reason="flash_attn_interface is installed but there is no CUDA device")
        return status
    status["verify"] = verify_fa3()
    if not status["verify"]["ok"]:
        raise RuntimeError(f"fa3: flash_attn_interface does not match PyTorch SDPA: {status['verify']}")
    status["available"] = True
    return status


def cmd_fa3(args: argparse.Namespace) -> int:
    cfg = load_fa3_config(args)
    env = probe_environment(args.repo_dir)
    if args.build_only:  # the image's FA3 stage: a wheel into the cache, no GPU needed (nvcc is)
        if not env["nvcc"]:
            raise RuntimeError("fa3 --build-only: no CUDA compiler (nvcc) on PATH")
        wheel, _ = _build(cfg, Path(args.cache_dir), args.max_jobs, env)
        print(wheel)
        return 0
    for name in ("status", "environment"):
        if not getattr(args, name):
            raise ValueError(f"pgolf fa3: --{name} is required (unless --build-only)")
    status = provide_fa3(cfg, env, Path(args.cache_dir))
    if status["state"] == "unavailable":
        print(f"fa3: not available ({status['reason']}); training uses PyTorch SDPA attention")
    env = probe_environment(args.repo_dir)  # again: the FA3 version may have changed
    env["fa3"] = env["packages"].get("flash_attn_3") if status["available"] else None
    env["fa3_status"] = status
    fsio.write_json(args.status, status)
    fsio.write_json(args.environment, env)
    print(json.dumps(status, indent=2, sort_keys=True))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fa3", help="provide FlashAttention 3 (or record why not) and probe the environment")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--fa3-json", help="the config's fa3 section as JSON")
    src.add_argument("--config", help="a config YAML file whose fa3 section to use")
    p.add_argument("--cache-dir", default=".cache/fa3")
    p.add_argument("--repo-dir", default=".")
    p.add_argument("--build-only", action="store_true", help="only build the wheel into the cache (needs nvcc, no GPU)")
    p.add_argument("--max-jobs", type=int, default=None, help="parallel compile jobs (default: fa3.max_jobs or CPUs)")
    p.add_argument("--status", help="where to write the FA3 status JSON")
    p.add_argument("--environment", help="where to write the environment JSON")
    p.set_defaults(func=cmd_fa3)
