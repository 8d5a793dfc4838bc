"""The fa3 step (``pgolf fa3``): provide FlashAttention 3 or record why not, and what training falls back to.

Where FA3 comes from (config ``fa3``):

- ``source: wheel`` (the default): the pinned prebuilt wheel ``fa3.wheel`` ({url, sha256}), downloaded once into
  ``<cache>/prebuilt/<sha256>/`` and checked against its sha256; the url may also be a local file.
- ``source: build``: ``hopper/`` of ``fa3.repo`` (a URL, a local clone or a git bundle: a machine without network
  builds from a bundle) at ``fa3.commit``, built into ``<cache>/<key>/`` (the key covers commit, torch, CUDA, the
  sorted switches and arch). Its whole output goes to the build log (``--build-log``, beside the step's log); a
  failure quotes the first compiler error lines and names that log.
- an FA3 already installed (the image's) is used as it is (``preinstalled``).

The cache is safe under concurrent runs: a file lock (fcntl) per cache entry, held while the wheel is fetched or
built and installed; the second run finds the wheel and only installs it (a cache hit). On a GPU the installed FA3 is
checked against PyTorch SDPA.

When FA3 cannot be provided (disabled, no CUDA, no nvcc, no network, a failed build or check), ``fa3.required: true``
fails the step with the reason; ``false`` records the reason and the fallback that training's ``attn_backend: auto``
then takes (``fa4`` or ``sdpa``) in the status, which reaches the environment.json, every seed's step log and the
record. Upstream record scripts need FA3 (they import ``flash_attn_interface`` with no fallback):
``require_for_script`` stops such a run before training.

Only the standard library at import time (plus PyYAML for ``--config``, torch for the probe): ``python -m pgolf.fa3``
runs with ``src/`` on PYTHONPATH on a machine without Snakemake, jsonschema or the compressors.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from pgolf import fsio

COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
SOURCES = ("wheel", "build")
DIST = "flash_attn_3"
# A compiler diagnostic: `file.cpp:751: error: ...`, `file.h:10:5: fatal error: ...`, nvcc's `file.cu(12): error: ...`
COMPILER_ERROR_RE = re.compile(r"^\s*\S.*?(?::\d+(?::\d+)?|\(\d+\)):\s*(?:fatal\s+)?error\b", re.IGNORECASE)
# Anything else that reads as an error (a Python traceback's last line, ninja, pip), used when no compiler line exists
OTHER_ERROR_RE = re.compile(r"\b(?:\w*Error|error)\b[:!]|ninja: build stopped|FAILED:", re.IGNORECASE)
NETWORK_HINTS = (
    "could not resolve host",
    "name or service not known",
    "temporary failure in name resolution",
    "network is unreachable",
    "connection timed out",
    "connection refused",
    "failed to connect",
    "unable to access",
)
HEARTBEAT_S = 30.0

VERIFY_SNIPPET = """
import json, torch, torch.nn.functional as F
from flash_attn_interface import flash_attn_func
torch.manual_seed(0)
q = torch.randn(2, 512, 8, 64, device="cuda", dtype=torch.bfloat16)
k, v = (torch.randn(2, 512, 4, 64, device="cuda", dtype=torch.bfloat16) for _ in range(2))
out = flash_attn_func(q, k, v, causal=True)
out = out[0] if isinstance(out, tuple) else out
ref = F.scaled_dot_product_attention(
    q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True, enable_gqa=True
).transpose(1, 2)
print(json.dumps({"max_abs_diff": (out.float() - ref.float()).abs().max().item(), "case": "bf16 causal GQA 8/4"}))
"""


class Unavailable(Exception):
    """FA3 cannot be provided on this machine (the message says why); not a mistake in the config."""


# --- small helpers -------------------------------------------------------------------------------------------------


def switch_env(disable: list[str]) -> dict[str, str]:
    """The FLASH_ATTENTION_DISABLE_* variables of the config's disable list."""
    return {f"FLASH_ATTENTION_DISABLE_{s.upper()}": "TRUE" for s in sorted(disable)}


def cache_key(commit: str, torch_version: str, cuda_version: str | None, disable: list[str], arch: str) -> str:
    """The built wheel's cache key: (commit, torch version, CUDA version, sorted switches, arch)."""
    blob = json.dumps([commit, torch_version, cuda_version, sorted(s.upper() for s in disable), arch])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@contextlib.contextmanager
def cache_lock(cache_dir: str | os.PathLike, name: str) -> Iterator[None]:
    """An exclusive lock on one cache entry (``<cache>/.<name>.lock``, fcntl), so that concurrent runs build, fetch
    and install one at a time; the next one then finds the finished entry."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f".{name}.lock"
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"fa3: waiting for {path} (another run holds it)", flush=True)
            t0 = time.perf_counter()
            fcntl.flock(f, fcntl.LOCK_EX)
            print(f"fa3: got {path} after {time.perf_counter() - t0:.1f} s", flush=True)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def first_errors(lines: list[str], limit: int = 3) -> list[str]:
    """The first compiler error lines of a build's output (else the first other error lines), stripped, distinct."""
    for pattern in (COMPILER_ERROR_RE, OTHER_ERROR_RE):
        found: list[str] = []
        for line in lines:
            text = line.strip()
            if pattern.search(text) and text not in found:
                found.append(text[:400])
                if len(found) == limit:
                    break
        if found:
            return found
    return []


def _network_problem(text: str) -> bool:
    low = text.lower()
    return any(hint in low for hint in NETWORK_HINTS)


def _git(*args: str, cwd: str | os.PathLike | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-c", "safe.directory=*", *args], cwd=cwd, capture_output=True, text=True)


def checkout_commit(repo: str, commit: str, dest: Path) -> None:
    """`repo` (a URL, a local clone or a git bundle) at `commit` in `dest`: a shallow fetch of the commit, else a
    fetch of every branch and tag. No network is Unavailable; a commit that is not there is a config error."""
    if not COMMIT_RE.match(commit):
        raise ValueError(f"fa3: commit {commit!r} of {repo} is not a 40-hex commit (config fa3.commit)")
    local = Path(repo).expanduser()
    if "://" not in repo and not repo.startswith("git@") and not local.exists():
        raise ValueError(f"fa3: {repo} does not exist (config fa3.repo: a URL, a local clone or a git bundle)")
    if local.exists():
        repo = str(local.resolve())
    _git("init", "-q", str(dest))
    if _git("fetch", "-q", "--depth", "1", repo, commit, cwd=dest).returncode != 0:
        full = _git("fetch", "-q", repo, "+refs/heads/*:refs/remotes/src/*", "+refs/tags/*:refs/tags/*", cwd=dest)
        if full.returncode != 0:
            err = full.stderr.strip()
            if _network_problem(err):
                raise Unavailable(
                    f"no network: cannot fetch {repo} ({err.splitlines()[-1] if err else 'git fetch failed'}); "
                    "set fa3.repo to a local clone or git bundle, or use fa3.source: wheel with a local wheel"
                )
            raise RuntimeError(f"fa3: cannot fetch {repo}: {err} (config fa3.repo)")
    if _git("checkout", "-q", "--detach", commit, cwd=dest).returncode != 0:
        raise RuntimeError(f"fa3: commit {commit} not found in {repo} (config fa3.commit)")
    head = _git("rev-parse", "HEAD", cwd=dest).stdout.strip()
    if head != commit:
        raise RuntimeError(f"fa3: {repo} checked out {head}, not the pinned commit {commit}")
    if (dest / ".gitmodules").is_file() and "csrc/cutlass" in (dest / ".gitmodules").read_text():
        sub = _git("submodule", "update", "--init", "--depth", "1", "csrc/cutlass", cwd=dest)
        if sub.returncode != 0:
            err = sub.stderr.strip()
            what = "no network" if _network_problem(err) else "cannot fetch"
            raise Unavailable(
                f"{what}: the csrc/cutlass submodule of {repo}@{commit} ({err.splitlines()[-1] if err else ''}); "
                "a source with CUTLASS vendored (e.g. the git bundle of ../shared/fa3) builds offline"
            )


def run_logged(cmd: list[str], cwd: Path, env: dict, log_path: Path) -> tuple[int, list[str]]:
    """Run `cmd` with stdout and stderr together appended, line by line as written, to `log_path`; a heartbeat line
    on our stdout every HEARTBEAT_S seconds. Returns the exit status and the output's lines."""
    lines: list[str] = []
    t0 = last = time.perf_counter()
    with open(log_path, "a", encoding="utf-8", errors="replace") as log:
        log.write(f"$ cd {cwd} && {' '.join(cmd)}\n")
        log.flush()
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            lines.append(line.rstrip("\n"))
            now = time.perf_counter()
            if now - last >= HEARTBEAT_S:
                log.flush()
                print(f"fa3: still building ({now - t0:.0f} s, {len(lines)} lines of output)", flush=True)
                last = now
        code = proc.wait()
        log.write(f"[exit {code} after {time.perf_counter() - t0:.1f} s]\n")
    return code, lines


# --- the two sources -----------------------------------------------------------------------------------------------


def build_fa3_wheel(
    repo: str,
    commit: str,
    disable: list[str],
    arch: str,
    cache_dir: Path,
    jobs: int,
    torch_version: str,
    cuda_version: str | None,
    log_path: Path,
) -> tuple[Path, bool]:
    """FA3 built from `repo`'s hopper/ at `commit` into a wheel cached under cache_dir/<key>/ (with build.json and
    the build's log); returns the wheel and whether it came from the cache. A failed build is Unavailable, quoting
    the first compiler error lines and naming `log_path`, which holds the whole output."""
    key = cache_key(commit, torch_version, cuda_version, disable, arch)
    key_dir = Path(cache_dir) / key
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with cache_lock(cache_dir, key):
        wheels = sorted(key_dir.glob("*.whl"))
        if wheels:
            print(f"fa3: cache hit: {wheels[-1]} (key {key})", flush=True)
            return wheels[-1], True
        with tempfile.TemporaryDirectory(prefix="fa3-src-") as src:
            checkout_commit(repo, commit, Path(src))
            hopper = Path(src) / "hopper"
            if not (hopper / "setup.py").is_file():
                raise RuntimeError(f"fa3: {repo}@{commit} has no hopper/setup.py (config fa3.repo / fa3.commit)")
            env = {
                **os.environ,
                "TORCH_CUDA_ARCH_LIST": arch,
                "MAX_JOBS": str(jobs),
                "FLASH_ATTENTION_FORCE_BUILD": "TRUE",
                **switch_env(disable),
            }
            out = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=cache_dir))
            print(f"fa3: building {repo}@{commit} hopper/ ({arch}, MAX_JOBS={jobs}); output: {log_path}", flush=True)
            # -v: pip passes the compiler's output through (without it pip shows only its own summary); --no-index:
            # nothing is fetched (no waiting on a network that is not there)
            cmd = [sys.executable, "-m", "pip", "wheel", "-v", "--no-build-isolation", "--no-deps", "--no-index"]
            cmd += ["-w", str(out), "."]
            t0 = time.perf_counter()
            code, lines = run_logged(cmd, hopper, env, log_path)
            seconds = time.perf_counter() - t0
            built = sorted(out.glob("*.whl"))
            if code != 0 or not built:
                shutil.rmtree(out, ignore_errors=True)
                errors = first_errors(lines)
                quoted = "\n".join(f"  {e}" for e in errors) if errors else "  (no error line found in the output)"
                raise Unavailable(
                    f"building {repo}@{commit} hopper/ failed (pip wheel exit {code}) after {seconds:.0f} s; "
                    f"first error lines:\n{quoted}\nthe whole build output is in {log_path}"
                )
            build = {"repo": repo, "commit": commit, "torch": torch_version, "cuda": cuda_version, "arch": arch}
            fsio.write_json(out / "build.json", build | {"switches": switch_env(disable), "seconds": round(seconds, 1)})
            shutil.copyfile(log_path, out / "build.log")
            if key_dir.exists():
                shutil.rmtree(key_dir)
            os.replace(out, key_dir)
    wheel = sorted(key_dir.glob("*.whl"))[-1]
    print(f"fa3: built {wheel} in {seconds:.0f} s (key {key})", flush=True)
    return wheel, False


def fetch_fa3_wheel(url: str, sha256: str, cache_dir: Path, timeout_s: float = 60) -> tuple[Path, bool]:
    """A pinned prebuilt wheel, downloaded once into cache_dir/prebuilt/<sha256>/ and checked against its sha256;
    `url` may be a local file. No network is Unavailable (the message says where to put the file to use it offline)."""
    name = urllib.parse.unquote(url.rsplit("/", 1)[-1])
    dest = Path(cache_dir) / "prebuilt" / sha256 / name
    with cache_lock(cache_dir, f"prebuilt-{sha256[:16]}"):
        if dest.is_file() and fsio.sha256_file(dest) == sha256:
            print(f"fa3: cache hit: {dest}", flush=True)
            return dest, True
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".part")
        print(f"fa3: fetching {url}", flush=True)
        try:
            if "://" not in url:
                shutil.copyfile(Path(url).expanduser(), tmp)
            else:
                with urllib.request.urlopen(url, timeout=timeout_s) as resp, open(tmp, "wb") as f:
                    shutil.copyfileobj(resp, f)
        except FileNotFoundError:
            raise ValueError(f"fa3: {url} does not exist (config fa3.wheel.url)") from None
        except urllib.error.HTTPError as e:
            tmp.unlink(missing_ok=True)
            raise Unavailable(f"cannot download {url}: HTTP {e.code} {e.reason} (config fa3.wheel.url)") from None
        except (urllib.error.URLError, OSError) as e:
            tmp.unlink(missing_ok=True)
            reason = getattr(e, "reason", e)
            raise Unavailable(
                f"no network: cannot download {url} ({reason}); to use it offline, copy the wheel to {dest} "
                f"(sha256 {sha256}), or set fa3.source: build with a local fa3.repo"
            ) from None
        got = fsio.sha256_file(tmp)
        if got != sha256:
            tmp.unlink()
            raise RuntimeError(f"fa3: {url} has sha256 {got}, not the pinned {sha256} (config fa3.wheel.sha256)")
        os.replace(tmp, dest)
    print(f"fa3: fetched {dest} (sha256 {sha256})", flush=True)
    return dest, False


# --- installing and checking ---------------------------------------------------------------------------------------


def fa3_importable() -> bool:
    return importlib.util.find_spec("flash_attn_interface") is not None


def installed_from() -> str | None:
    """Where the installed flash_attn_3 came from (pip's direct_url.json: a file:// URL for a wheel), else None."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        text = distribution(DIST).read_text("direct_url.json")
    except PackageNotFoundError:
        return None
    try:
        return json.loads(text).get("url") if text else None
    except json.JSONDecodeError:
        return None


def install_wheel(wheel: Path) -> None:
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--force-reinstall", str(wheel)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
        raise Unavailable(f"pip cannot install {wheel}: " + " | ".join(tail))
    importlib.invalidate_caches()


def uninstall_wheel() -> None:
    subprocess.run([sys.executable, "-m", "pip", "uninstall", "-y", DIST], capture_output=True, text=True)
    importlib.invalidate_caches()


def verify_fa3() -> dict:
    """flash_attn_interface against PyTorch SDPA on the GPU (bf16, causal, GQA), in a fresh interpreter."""
    try:
        proc = subprocess.run([sys.executable, "-c", VERIFY_SNIPPET], capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": "the check against SDPA did not finish in 600 s"}
    if proc.returncode != 0:
        return {"ok": False, "error": proc.stderr.strip()[-2000:]}
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["ok"] = res["max_abs_diff"] < 2e-2
    return res


def fallback_backend() -> str:
    """What training's attn_backend auto takes without FA3: fa4 when flash_attn.cute imports on a Hopper or newer GPU
    (as train_gpt.attention_backend decides), else sdpa."""
    try:
        import torch

        hopper = torch.cuda.is_available() and torch.cuda.get_device_capability(0)[0] >= 9
        return "fa4" if hopper and importlib.util.find_spec("flash_attn.cute") is not None else "sdpa"
    except Exception:  # a broken flash_attn package, no torch: the plain fallback
        return "sdpa"


# --- the step ------------------------------------------------------------------------------------------------------


def source_of(cfg: dict) -> str:
    source = cfg.get("source") or ("wheel" if cfg.get("wheel") else "build")
    if source not in SOURCES:
        raise ValueError(f"config fa3.source: {source!r}, expected one of {', '.join(SOURCES)}")
    return source


def build_settings(cfg: dict) -> tuple[str, str, list[str], str]:
    for key in ("repo", "commit"):
        if not cfg.get(key):
            raise ValueError(f"config fa3.{key} is required to build FlashAttention 3 (fa3.source: build)")
    return cfg["repo"], cfg["commit"], list(cfg.get("disable") or []), cfg.get("arch") or "9.0a"


def make_wheel(cfg: dict, env: dict, cache_dir: Path, build_log: Path, jobs: int | None) -> tuple[Path, bool, dict]:
    """The wheel of the configured source (fetched or built, or from the cache): (wheel, cache hit, status keys)."""
    if source_of(cfg) == "wheel":
        wheel_cfg = cfg.get("wheel") or {}
        for key in ("url", "sha256"):
            if not wheel_cfg.get(key):
                raise ValueError(f"config fa3.wheel.{key} is required for fa3.source: wheel")
        wheel, cached = fetch_fa3_wheel(wheel_cfg["url"], wheel_cfg["sha256"], cache_dir)
        return wheel, cached, {"state": "prebuilt", "url": wheel_cfg["url"], "sha256": wheel_cfg["sha256"]}
    repo, commit, disable, arch = build_settings(cfg)
    if not env.get("nvcc"):
        raise Unavailable("no CUDA compiler (nvcc) on PATH to build it")
    jobs = jobs or cfg.get("max_jobs") or os.cpu_count() or 4
    wheel, cached = build_fa3_wheel(repo, commit, disable, arch, cache_dir, jobs, env["torch"], env["cuda"], build_log)
    key = wheel.parent.name
    info = {"state": "built", "repo": repo, "commit": commit, "switches": switch_env(disable), "cache_key": key}
    build_json = wheel.parent / "build.json"
    if build_json.is_file():
        info["build_seconds"] = fsio.read_json(build_json).get("seconds")
    return wheel, cached, info


def _uris(path: str | os.PathLike) -> set[str]:
    """A path's file:// URLs as pip may record them (pip writes the absolute path without resolving links)."""
    return {Path(os.path.abspath(path)).as_uri(), Path(path).resolve().as_uri()}


def _provide(cfg: dict, env: dict, cache_dir: Path, build_log: Path, jobs: int | None) -> dict:
    origin = installed_from()
    ours = bool(origin) and any(origin.startswith(uri + "/") for uri in _uris(cache_dir))
    if fa3_importable() and not ours:
        status = {"state": "preinstalled", "installed_from": origin, "image_fa3_source": env.get("image_fa3_source")}
        if not env["cuda_available"]:
            raise Unavailable("flash_attn_interface is installed but there is no CUDA device")
    else:
        if not env["cuda_available"]:
            raise Unavailable("no CUDA device")
        wheel, cached, status = make_wheel(cfg, env, cache_dir, build_log, jobs)
        status.update(wheel=str(wheel), cached=cached)
        with cache_lock(cache_dir, "install"):
            if fa3_importable() and origin in _uris(wheel):
                status["installed"] = "already"
            else:
                install_wheel(wheel)
                status["installed"] = "now"
    status["verify"] = verify_fa3()
    if not status["verify"]["ok"]:
        if status.get("installed") == "now":
            uninstall_wheel()  # a wheel that does not work here must not make training pick it
        raise Unavailable(f"flash_attn_interface fails or does not match PyTorch SDPA: {status['verify']}")
    return status


def provide_fa3(cfg: dict, env: dict, cache_dir: Path, build_log: Path, jobs: int | None = None) -> dict:
    """Make FA3 importable if it can run here. The status says how (state, cached) or why not (reason) and, then,
    what training falls back to; with fa3.required a reason is an error instead."""
    enabled, required = bool(cfg.get("enabled")), bool(cfg.get("required"))
    status: dict = {"enabled": enabled, "required": required, "source": None, "available": False, "fallback": None}
    try:
        if not enabled:
            raise Unavailable("disabled in the config (fa3.enabled: false)")
        status["source"] = source_of(cfg)
        status.update(_provide(cfg, env, cache_dir, build_log, jobs))
        status["available"] = True
    except Unavailable as e:
        if required and enabled:
            raise RuntimeError(f"fa3: FlashAttention 3 is required (config fa3.required: true) but: {e}") from None
        status.update(state="unavailable", reason=str(e), fallback=fallback_backend())
    return status


def summary(status: dict | None) -> str:
    """One line for logs: how FA3 was provided, or why not and the fallback."""
    if not status:
        return "fa3: no status"
    if status.get("available"):
        cached = " (cache hit)" if status.get("cached") else ""
        diff = (status.get("verify") or {}).get("max_abs_diff")
        check = f", matches SDPA within {diff:.4f}" if isinstance(diff, float) else ""
        return f"fa3: available, {status.get('state')}{cached}{check}"
    return f"fa3: not available ({status.get('reason')}); training falls back to {status.get('fallback') or 'sdpa'}"


def load_status(path: str | os.PathLike | None) -> dict | None:
    return fsio.read_json(path) if path else None


def require_for_script(script: str | os.PathLike, status_path: str | os.PathLike | None) -> None:
    """Stop before training when an upstream record's script (or a .py beside it) imports flash_attn_interface at
    module level (not inside a try block or a function: those may have a fallback) and it is not importable here."""
    folder = Path(script).resolve().parent
    files = [Path(script).resolve(), *sorted(p for p in folder.glob("*.py") if p.resolve() != Path(script).resolve())]
    pattern = re.compile(r"^(?:from|import)\s+flash_attn_interface\b", re.MULTILINE)
    users = [p for p in files if p.is_file() and pattern.search(p.read_text(errors="replace"))]
    if users and fa3_importable():
        _require_features(users, load_status(status_path), status_path)
    if not users or fa3_importable():
        return
    status = load_status(status_path)
    why = f"; the fa3 step says: {summary(status)} ({status_path})" if status else ""
    raise RuntimeError(
        f"{users[0]} imports flash_attn_interface (FlashAttention 3), which is not importable here{why}. Upstream-mode "
        "runs need FA3: enable it (config fa3.enabled: true; fa3.required: true makes the fa3 step fail instead)"
    )


# Features an FA3 build can leave out (fa3.disable) that a script's call names: (switch, pattern in the script)
FEATURE_CALLS = (("VARLEN", re.compile(r"\bflash_attn_varlen_func\b")),)


def _require_features(users: list[Path], status: dict | None, status_path) -> None:
    """Stop before training when the FA3 the fa3 step built leaves out a feature the script calls (e.g. the frontier
    records call flash_attn_varlen_func, which a build with fa3.disable: [VARLEN] imports but cannot run)."""
    switches = (status or {}).get("switches") or {}
    for feature, pattern in FEATURE_CALLS:
        if str(switches.get(f"FLASH_ATTENTION_DISABLE_{feature}", "")).upper() != "TRUE":
            continue
        callers = [p for p in users if pattern.search(p.read_text(errors="replace"))]
        if callers:
            raise RuntimeError(
                f"{callers[0]} calls {pattern.pattern.strip(chr(92) + 'b')}, but the FA3 the fa3 step built"
                f" ({status_path}) leaves it out (FLASH_ATTENTION_DISABLE_{feature}): remove {feature} from config"
                " fa3.disable"
            )


def load_fa3_config(args: argparse.Namespace) -> dict:
    if args.fa3_json:
        cfg = json.loads(args.fa3_json)
    else:
        import yaml

        with open(args.config) as f:
            full = yaml.safe_load(f) or {}
        if not isinstance(full.get("fa3"), dict):
            raise ValueError(f"{args.config}: no fa3 section")
        cfg = full["fa3"]
    for key in ("source", "repo", "commit"):
        if getattr(args, key, None):
            cfg[key] = getattr(args, key)
    if getattr(args, "required", None) is not None:
        cfg["required"] = args.required
    return cfg


def _pyvenv_cfg(prefix: str | os.PathLike) -> dict[str, str]:
    path = Path(prefix) / "pyvenv.cfg"
    if not path.is_file():
        return {}
    pairs = (line.split("=", 1) for line in path.read_text(errors="replace").splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, v in pairs}


def torch_problem(python: str | os.PathLike | None = None) -> str | None:
    """Why ``python`` (default: this interpreter) cannot import torch, which building and checking FA3 need, or None.
    The hole of issue 27: ``python3 -m venv --system-site-packages`` run with a python that itself lives in a venv
    (the GPU machine's /opt/torch/.venv) makes a venv of the BASE interpreter, which does not see that venv's torch;
    the message names the venv's base and the command that made it (pyvenv.cfg) and the fix."""
    python = str(python or sys.executable)
    probe = "import sys, json; print(json.dumps([sys.prefix, sys.base_prefix]))"
    proc = subprocess.run([python, "-c", f"{probe}\nimport torch"], capture_output=True, text=True)
    if proc.returncode == 0:
        return None
    try:
        prefix, base = json.loads(proc.stdout.strip().splitlines()[0])
    except (IndexError, json.JSONDecodeError):
        return f"{python} cannot run: {proc.stderr.strip()[-300:]}"
    why = f"{python} cannot import torch ({(proc.stderr.strip().splitlines() or ['?'])[-1]})"
    if prefix == base:
        return why + "; install torch, or run the pipeline with the Python that has it"
    cfg = _pyvenv_cfg(prefix)
    made = f", made by `{cfg['command']}`" if cfg.get("command") else ""
    return (
        f"{why}: it is a venv ({prefix}) of the base interpreter {cfg.get('executable') or base}{made}. A venv made"
        " from a python that itself lives in a venv gets the BASE interpreter's site-packages, not that venv's,"
        " even with --system-site-packages, so that venv's torch is not seen here. Run the pipeline with the python"
        " that has torch itself, or layer the new venv over it: bash benchmarks/layered_venv.sh PYTHON DEST"
    )


def cmd_fa3(args: argparse.Namespace) -> int:
    from pgolf.env import probe_environment

    problem = torch_problem()  # before anything else: the probe, the build and the check all import torch
    if problem:
        raise RuntimeError(f"fa3: {problem}")
    cfg = load_fa3_config(args)
    env = probe_environment(args.repo_dir)
    cache_dir = Path(args.cache_dir)
    # the build's whole output: --build-log, else fa3.build.log beside --status (or in the cache for --wheel-only)
    if args.build_log:
        build_log = Path(args.build_log)
    else:
        build_log = Path(args.status).with_name("fa3.build.log") if args.status else cache_dir / "fa3.build.log"
    if args.wheel_only:  # the image's FA3 stage: the wheel into the cache and a folder, no GPU (nvcc for a build)
        if not env["nvcc"] and source_of(cfg) == "build":
            raise RuntimeError("fa3 --wheel-only: no CUDA compiler (nvcc) on PATH to build FA3 (config fa3.source)")
        try:
            wheel, _, _ = make_wheel(cfg, env, cache_dir, build_log, args.max_jobs)
        except Unavailable as e:
            raise RuntimeError(f"fa3: {e}") from None
        Path(args.wheel_only).mkdir(parents=True, exist_ok=True)
        shutil.copy2(wheel, Path(args.wheel_only) / wheel.name)
        print(Path(args.wheel_only) / wheel.name)
        return 0
    for name in ("status", "environment"):
        if not getattr(args, name):
            raise ValueError(f"pgolf fa3: --{name} is required (unless --wheel-only)")
    build_log.parent.mkdir(parents=True, exist_ok=True)
    build_log.write_text("")  # this run's build output only (empty when nothing was built)
    status = provide_fa3(cfg, env, cache_dir, build_log, args.max_jobs)
    status["build_log"] = str(build_log)
    print(summary(status), flush=True)
    env = probe_environment(args.repo_dir)  # again: the FA3 version may have changed
    env["fa3"] = env["packages"].get(DIST) if status["available"] else None
    env["fa3_status"] = status
    fsio.write_json(args.status, status)
    fsio.write_json(args.environment, env)
    print(json.dumps(status, indent=2, sort_keys=True))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fa3", help="provide FlashAttention 3 (or record why not and the fallback); probe the machine")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--fa3-json", help="the config's fa3 section as JSON")
    src.add_argument("--config", help="a config YAML file whose fa3 section to use")
    p.add_argument("--source", choices=SOURCES, help="override fa3.source")
    p.add_argument("--repo", help="override fa3.repo (a URL, a local clone or a git bundle)")
    p.add_argument("--commit", help="override fa3.commit")
    p.add_argument("--required", action=argparse.BooleanOptionalAction, default=None, help="override fa3.required")
    p.add_argument("--cache-dir", default=".cache/fa3")
    p.add_argument("--repo-dir", default=".")
    p.add_argument("--wheel-only", metavar="DIR", help="only fetch or build the wheel (no GPU) and copy it to DIR")
    p.add_argument("--max-jobs", type=int, default=None, help="parallel compile jobs (default: fa3.max_jobs or CPUs)")
    p.add_argument("--status", help="where to write the FA3 status JSON")
    p.add_argument("--environment", help="where to write the environment JSON")
    p.add_argument("--build-log", help="the build's whole output (default: fa3.build.log beside --status)")
    p.set_defaults(func=cmd_fa3)


def main(argv: list[str] | None = None) -> int:
    """``python -m pgolf.fa3 ...``: the fa3 subcommand alone (it imports no other step's module)."""
    parser = argparse.ArgumentParser(prog="pgolf")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["fa3", *(argv if argv is not None else sys.argv[1:])])
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"pgolf fa3: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
