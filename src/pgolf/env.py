"""The environment step: FlashAttention 3 (build from a pinned ref, or reuse what is installed) and the provenance
of the machine (versions of Python, torch, CUDA, FA3, GPU model and count, driver, nvidia-smi, git commit)."""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from pgolf import fsio

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


def probe_environment(repo_dir: str | os.PathLike = ".") -> dict:
    import torch

    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "gpu_count": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "driver": run_text(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]),
        "nvidia_smi": run_text(["nvidia-smi"]),
        "nvcc": run_text(["nvcc", "--version"]),
        "git_commit": run_text(["git", "-C", str(repo_dir), "rev-parse", "HEAD"]),
        "git_dirty": bool(run_text(["git", "-C", str(repo_dir), "status", "--porcelain", "--untracked-files=no"])),
        "image_digest": os.environ.get("PGOLF_IMAGE_DIGEST"),
        "packages": {},
    }
    from importlib.metadata import PackageNotFoundError, version

    for pkg in ("numpy", "sentencepiece", "zstandard", "brotli", "snakemake", "huggingface_hub", "flash_attn_3"):
        try:
            info["packages"][pkg] = version(pkg)
        except PackageNotFoundError:
            info["packages"][pkg] = None
    return info


def fa3_importable() -> bool:
    return importlib.util.find_spec("flash_attn_interface") is not None


def cache_key(ref: str, disable: list[str], arch: str) -> str:
    import torch

    blob = json.dumps([ref, torch.__version__, torch.version.cuda, sorted(disable), arch])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def build_fa3_wheel(repo: str, ref: str, disable: list[str], arch: str, cache_dir: Path, jobs: int) -> Path:
    """Build FA3 from `repo`'s hopper/ at `ref` into a wheel cached under (ref, torch, CUDA, switches, arch)."""
    key_dir = cache_dir / cache_key(ref, disable, arch)
    wheels = sorted(key_dir.glob("*.whl"))
    if wheels:
        print(f"fa3: cached wheel {wheels[-1]}")
        return wheels[-1]
    with tempfile.TemporaryDirectory(prefix="fa3-src-") as src:
        subprocess.run(["git", "init", "-q", src], check=True)
        subprocess.run(["git", "-C", src, "fetch", "-q", "--depth", "1", repo, ref], check=True)
        subprocess.run(["git", "-C", src, "checkout", "-q", "FETCH_HEAD"], check=True)
        subprocess.run(["git", "-C", src, "submodule", "update", "--init", "--depth", "1", "csrc/cutlass"], check=True)
        env = {**os.environ, "TORCH_CUDA_ARCH_LIST": arch, "MAX_JOBS": str(jobs), "FLASH_ATTENTION_FORCE_BUILD": "TRUE"}
        env.update({f"FLASH_ATTENTION_DISABLE_{s.upper()}": "TRUE" for s in disable})
        out = Path(tempfile.mkdtemp(prefix="fa3-wheel-", dir=cache_dir))
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-w", str(out), "."]
        subprocess.run(cmd, cwd=Path(src) / "hopper", env=env, check=True)
        built = sorted(out.glob("*.whl"))
        if not built:
            raise RuntimeError(f"fa3: building {repo}@{ref} produced no wheel")
        if key_dir.exists():
            shutil.rmtree(key_dir)
        os.replace(out, key_dir)
    return sorted(key_dir.glob("*.whl"))[-1]


def verify_fa3() -> dict:
    proc = subprocess.run([sys.executable, "-c", VERIFY_SNIPPET], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        return {"ok": False, "error": proc.stderr.strip()[-2000:]}
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["ok"] = res["max_abs_diff"] < 2e-2
    return res


def cmd_fa3(args: argparse.Namespace) -> int:
    cfg = json.loads(args.fa3_json)
    env = probe_environment(args.repo_dir)
    status: dict = {"enabled": bool(cfg.get("enabled")), "ref": cfg.get("ref"), "available": False}
    if fa3_importable():
        status["source"] = "preinstalled"
    elif not cfg.get("enabled"):
        status["reason"] = "disabled in the config (fa3.enabled: false)"
    elif not env["cuda_available"]:
        status["reason"] = "no CUDA device"
    elif not env["nvcc"]:
        status["reason"] = "no CUDA compiler (nvcc) to build it"
    else:
        wheel = build_fa3_wheel(
            cfg["repo"],
            cfg["ref"],
            list(cfg.get("disable", [])),
            cfg.get("arch", "9.0a"),
            Path(args.cache_dir),
            cfg.get("max_jobs") or os.cpu_count() or 4,
        )
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--no-deps", "--force-reinstall", str(wheel)], check=True
        )
        status.update(source="built", wheel=str(wheel))
    if "reason" in status:
        print(f"fa3: not available ({status['reason']}); training uses PyTorch SDPA attention")
    elif env["cuda_available"]:
        status["verify"] = verify_fa3()
        status["available"] = status["verify"]["ok"]
        if not status["available"]:
            raise RuntimeError(f"fa3: flash_attn_interface does not match SDPA: {status['verify']}")
    else:
        status["reason"] = "flash_attn_interface is installed but there is no CUDA device"
    env = probe_environment(args.repo_dir)  # again: the FA3 version may have changed
    env["fa3"] = env["packages"].get("flash_attn_3") if status["available"] else None
    env["fa3_status"] = status
    fsio.write_json(args.status, status)
    fsio.write_json(args.environment, env)
    print(json.dumps(status, indent=2, sort_keys=True))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fa3", help="provide FlashAttention 3 (or record why not) and probe the environment")
    p.add_argument("--fa3-json", required=True, help="the config's fa3 section as JSON")
    p.add_argument("--cache-dir", default=".cache/fa3")
    p.add_argument("--repo-dir", default=".")
    p.add_argument("--status", required=True, help="where to write the FA3 status JSON")
    p.add_argument("--environment", required=True, help="where to write the environment JSON")
    p.set_defaults(func=cmd_fa3)
