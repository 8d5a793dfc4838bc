"""The fa3 step without a GPU: a local git repository (and a git bundle of it) stands in for Dao-AILab/flash-attention
(its hopper/setup.py builds a wheel of a tiny flash_attn_interface that records the build switches it saw, or fails
like a compiler would); a local file stands in for the prebuilt wheel; a closed port stands in for no network."""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from pgolf import fa3, readme, record, stages, upstream

REPO_ROOT = Path(__file__).resolve().parents[1]
SRC = REPO_ROOT / "src"

FAKE_SETUP = """
import json, os, sys, time
from setuptools import setup
if "bdist_wheel" in sys.argv:  # pip also runs this file to read the metadata
    with open(os.environ["FAKE_FA3_BUILD_LOG"], "a") as f:
        f.write(f"start {time.time()}\\n")
    time.sleep(float(os.environ.get("FAKE_FA3_SLEEP", "0")))
    print("compiling hopper/flash_fwd_hdim64_bf16_sm90.cu (noise before the error)")
    if os.path.exists("BROKEN"):
        print("In file included from hopper/flash_api_stable.cpp:12:")
        print("hopper/flash_api_stable.cpp:751:23: error: template argument 1 is invalid", file=sys.stderr)
        print("hopper/flash_api_stable.cpp:802:5: error: 'sinks_' was not declared in this scope", file=sys.stderr)
        print("ninja: build stopped: subcommand failed.")
        print("RuntimeError: Error compiling objects for extension")
        sys.exit(1)
    with open(os.environ["FAKE_FA3_BUILD_LOG"], "a") as f:
        f.write(f"built {time.time()}\\n")
seen = {k: v for k, v in sorted(os.environ.items()) if k.startswith(("FLASH_ATTENTION_", "TORCH_CUDA_ARCH_LIST"))}
with open("flash_attn_interface.py", "w") as f:
    f.write("BUILD_ENV = " + repr(json.dumps(seen)) + "\\nVERSION = " + repr(open("VERSION").read().strip()) + "\\n")
setup(name="flash_attn_3", version="3.0.0b1", py_modules=["flash_attn_interface"])
"""
SWITCHES = ["SM80", "FP8", "HDIM256"]
TORCH, CUDA = "2.9.1+cu128", "12.8"
FAKE_GPU = {"cuda_available": True, "nvcc": "Cuda compilation tools, release 12.8", "torch": TORCH, "cuda": CUDA}


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def fake_repo(tmp_path, monkeypatch) -> dict:
    """A git repository with hopper/setup.py in three commits: VERSION "one", "two", then a broken build (head)."""
    repo = tmp_path / "flash-attention"
    (repo / "hopper").mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "t@example.com")
    git(repo, "config", "user.name", "t")
    (repo / "hopper" / "setup.py").write_text(FAKE_SETUP)
    commits = []
    for version in ("one", "two", "broken"):
        (repo / "hopper" / "VERSION").write_text(version)
        if version == "broken":
            (repo / "hopper" / "BROKEN").write_text("")
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", version)
        commits.append(git(repo, "rev-parse", "HEAD"))
    log = tmp_path / "builds.log"
    monkeypatch.setenv("FAKE_FA3_BUILD_LOG", str(log))
    return {
        "repo": str(repo),
        "first": commits[0],
        "second": commits[1],
        "broken": commits[2],
        "log": log,
        "cache": tmp_path / "cache",
        "build_log": tmp_path / "logs" / "fa3.build.log",
    }


def builds(fake: dict) -> int:
    return fake["log"].read_text().count("built") if fake["log"].exists() else 0


def built_module(wheel: Path) -> str:
    with zipfile.ZipFile(wheel) as z:
        return z.read("flash_attn_interface.py").decode()


def build(fake: dict, commit: str, switches=SWITCHES, repo: str | None = None):
    return fa3.build_fa3_wheel(
        repo or fake["repo"], commit, switches, "9.0a", fake["cache"], 2, TORCH, CUDA, fake["build_log"]
    )


def test_builds_the_pinned_commit_with_the_switches_and_reuses_the_cache(fake_repo, capsys):
    wheel, cached = build(fake_repo, fake_repo["first"])
    assert not cached and wheel.name.startswith("flash_attn_3-3.0.0b1")
    module = built_module(wheel)
    assert "VERSION = 'one'" in module  # the pinned commit, not the branch head
    seen = json.loads(module.split("BUILD_ENV = ", 1)[1].splitlines()[0].strip("'"))
    assert seen["FLASH_ATTENTION_DISABLE_SM80"] == seen["FLASH_ATTENTION_DISABLE_FP8"] == "TRUE"
    assert seen["FLASH_ATTENTION_DISABLE_HDIM256"] == "TRUE" and seen["TORCH_CUDA_ARCH_LIST"] == "9.0a"
    assert "FLASH_ATTENTION_DISABLE_HDIM64" not in seen
    key = fa3.cache_key(fake_repo["first"], TORCH, CUDA, SWITCHES, "9.0a")
    assert wheel.parent == fake_repo["cache"] / key
    meta = json.loads((wheel.parent / "build.json").read_text())
    assert meta["commit"] == fake_repo["first"] and meta["seconds"] >= 0
    # the build's whole output (pip -v passes the setup script's own lines through) is in the log, and in the cache
    assert "(noise before the error)" in fake_repo["build_log"].read_text()
    assert "(noise before the error)" in (wheel.parent / "build.log").read_text()
    assert builds(fake_repo) == 1

    again, cached = build(fake_repo, fake_repo["first"], list(reversed(SWITCHES)))  # same switches, other order
    assert cached and again == wheel and builds(fake_repo) == 1  # the builder did not run again
    assert f"fa3: cache hit: {wheel}" in capsys.readouterr().out


def test_cache_key_covers_commit_torch_cuda_switches_and_arch(fake_repo):
    base = fa3.cache_key("a" * 40, TORCH, CUDA, SWITCHES, "9.0a")
    assert base == fa3.cache_key("a" * 40, TORCH, CUDA, ["hdim256", "SM80", "FP8"], "9.0a")
    others = [
        fa3.cache_key("b" * 40, TORCH, CUDA, SWITCHES, "9.0a"),
        fa3.cache_key("a" * 40, "2.11.0+cu130", CUDA, SWITCHES, "9.0a"),
        fa3.cache_key("a" * 40, TORCH, "13.0", SWITCHES, "9.0a"),
        fa3.cache_key("a" * 40, TORCH, CUDA, SWITCHES[:2], "9.0a"),
        fa3.cache_key("a" * 40, TORCH, CUDA, SWITCHES, "8.0"),
    ]
    assert base not in others and len(set(others)) == len(others)
    _, cached = build(fake_repo, fake_repo["second"])
    assert not cached
    _, cached = build(fake_repo, fake_repo["second"], SWITCHES[:2])  # other switches: another build
    assert not cached and builds(fake_repo) == 2


def test_a_missing_commit_or_source_is_a_clear_config_error(fake_repo, tmp_path):
    missing = "0123456789abcdef0123456789abcdef01234567"
    with pytest.raises(RuntimeError, match=f"commit {missing} not found in .*flash-attention.*config fa3.commit"):
        build(fake_repo, missing)
    with pytest.raises(ValueError, match="not a 40-hex commit"):
        build(fake_repo, "v2.8.3")
    with pytest.raises(ValueError, match=r"no-such-dir does not exist \(config fa3.repo"):
        build(fake_repo, fake_repo["first"], repo=str(tmp_path / "no-such-dir"))
    assert builds(fake_repo) == 0 and not list(fake_repo["cache"].glob("*/*.whl"))


def test_a_git_bundle_builds_offline(fake_repo, tmp_path):
    """A bundle (as ../shared/fa3 holds) is a source: the GPU machine, without network, builds from it."""
    bundle = tmp_path / "fa.bundle"
    git(Path(fake_repo["repo"]), "bundle", "create", str(bundle), "--all")
    wheel, cached = build(fake_repo, fake_repo["second"], repo=str(bundle))
    assert not cached and "VERSION = 'two'" in built_module(wheel)


def test_a_compiler_error_is_quoted_and_the_whole_output_kept(fake_repo):
    with pytest.raises(fa3.Unavailable) as err:
        build(fake_repo, fake_repo["broken"])
    msg = str(err.value)
    assert f"@{fake_repo['broken']} hopper/ failed (pip wheel exit 1)" in msg
    # the first compiler error lines, not pip's summary and not the later generic lines
    assert "hopper/flash_api_stable.cpp:751:23: error: template argument 1 is invalid" in msg
    assert "'sinks_' was not declared" in msg and "RuntimeError" not in msg and "ninja" not in msg
    assert f"the whole build output is in {fake_repo['build_log']}" in msg
    text = fake_repo["build_log"].read_text()
    for line in ("(noise before the error)", "error: template argument 1", "RuntimeError: Error compiling", "[exit 1"):
        assert line in text, line
    assert not list(fake_repo["cache"].glob("*/*.whl")) and not list(fake_repo["cache"].glob(".*-*"))


REAL_COMPILER_SETUP = """
from setuptools import Extension, setup
setup(name="flash_attn_3", version="3.0.0b1", ext_modules=[Extension("fa3_fake_C", ["flash_api_stable.c"])])
"""


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler on this machine")
def test_a_real_compiler_error_is_quoted(tmp_path):
    """The same with a real compiler behind pip (setuptools build_ext, cc): pip -v passes its diagnostics through,
    and the quote is the compiler's own first error line."""
    repo = tmp_path / "src"
    (repo / "hopper").mkdir(parents=True)
    (repo / "hopper" / "setup.py").write_text(REAL_COMPILER_SETUP)
    (repo / "hopper" / "flash_api_stable.c").write_text(
        "int ok(void) { return 0; }\nint broken(void) { return sinks_; }\n"
    )
    git(repo, "init", "-q", "-b", "main")
    git(repo, "-c", "user.email=t@example.com", "-c", "user.name=t", "add", "-A")
    git(repo, "-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-q", "-m", "broken")
    commit = git(repo, "rev-parse", "HEAD")
    log = tmp_path / "fa3.build.log"
    with pytest.raises(fa3.Unavailable) as err:
        fa3.build_fa3_wheel(str(repo), commit, [], "9.0a", tmp_path / "cache", 1, TORCH, CUDA, log)
    quoted = str(err.value).split("first error lines:\n", 1)[1].splitlines()[0].strip()
    assert re.search(r"flash_api_stable\.c:2:\d+: error: .sinks_. undeclared", quoted), str(err.value)
    assert quoted in log.read_text() and f"the whole build output is in {log}" in str(err.value)


def test_first_errors_prefers_compiler_lines_and_falls_back_to_other_errors():
    lines = [
        "x",
        "error: subprocess-exited-with-error",
        "a.cu(12): error: identifier x is undefined",
        "b.h:3:1: fatal error: c.h",
    ]
    assert fa3.first_errors(lines) == ["a.cu(12): error: identifier x is undefined", "b.h:3:1: fatal error: c.h"]
    assert fa3.first_errors(["ok", "ModuleNotFoundError: No module named 'torch'", "ok"]) == [
        "ModuleNotFoundError: No module named 'torch'"
    ]
    assert fa3.first_errors(["all fine", "done"]) == []


CONCURRENT = """
import sys
from pathlib import Path
from pgolf import fa3
wheel, cached = fa3.build_fa3_wheel(sys.argv[1], sys.argv[2], ["SM80"], "9.0a", Path(sys.argv[3]), 1,
                                    "2.9.1+cu128", "12.8", Path(sys.argv[4]))
print("RESULT", wheel, cached)
"""


def test_two_concurrent_runs_build_once_and_share_the_wheel(fake_repo, tmp_path, monkeypatch):
    """Two processes on one cache: the lock makes the second wait for the first's build, then take it as a hit."""
    monkeypatch.setenv("FAKE_FA3_SLEEP", "2")
    monkeypatch.setenv("PYTHONPATH", str(SRC))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CONCURRENT, fake_repo["repo"], fake_repo["first"], str(fake_repo["cache"])]
            + [str(tmp_path / f"build{i}.log")],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    results = [re.search(r"RESULT (\S+) (True|False)", out).groups() for out in outs]
    assert results[0][0] == results[1][0]  # one wheel
    assert sorted(r[1] for r in results) == ["False", "True"]  # one built it, the other found it
    assert builds(fake_repo) == 1 and fake_repo["log"].read_text().count("start") == 1
    assert any("waiting for" in out and "another run holds it" in out for out in outs), outs


def test_the_lock_excludes_a_second_process(tmp_path):
    """cache_lock itself: while one process holds an entry's lock, another blocks until it is released."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pgolf import fa3\nwith fa3.cache_lock(sys.argv[1], 'k'):\n"
         "    print('held', flush=True); time.sleep(2)\nprint('released', time.time(), flush=True)", str(tmp_path)],
        stdout=subprocess.PIPE, text=True, env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "held"
    waiter = subprocess.run(
        [sys.executable, "-c", "import sys, time; from pgolf import fa3\nwith fa3.cache_lock(sys.argv[1], 'k'):\n"
         "    print('GOT', time.time())", str(tmp_path)],
        capture_output=True, text=True, env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}, timeout=60,
    )  # fmt: skip
    released = float(holder.stdout.read().split()[-1])
    holder.wait(timeout=30)
    got = float(re.search(r"^GOT (\S+)", waiter.stdout, re.M).group(1))
    assert "waiting for" in waiter.stdout and got >= released - 0.05


# --- the prebuilt wheel --------------------------------------------------------------------------------------------


@pytest.fixture
def local_wheel(fake_repo) -> dict:
    """A real wheel file (built from the fake repository) standing in for the pinned prebuilt one."""
    wheel, _ = build(fake_repo, fake_repo["first"])
    return {"url": wheel.as_uri(), "path": wheel, "sha256": hashlib.sha256(wheel.read_bytes()).hexdigest()}


def test_the_prebuilt_wheel_is_fetched_once_checked_and_cached(local_wheel, tmp_path):
    cache = tmp_path / "wcache"
    got, cached = fa3.fetch_fa3_wheel(local_wheel["url"], local_wheel["sha256"], cache)
    assert not cached and got == cache / "prebuilt" / local_wheel["sha256"] / local_wheel["path"].name
    again, cached = fa3.fetch_fa3_wheel(str(local_wheel["path"]), local_wheel["sha256"], cache)  # a plain path too
    assert cached and again == got
    with pytest.raises(RuntimeError, match=r"has sha256 [0-9a-f]{64}, not the pinned 0+ \(config fa3.wheel.sha256\)"):
        fa3.fetch_fa3_wheel(local_wheel["url"], "0" * 64, tmp_path / "other")


REAL_INSTALL = """
import json, sys
from pathlib import Path
from pgolf import fa3
wheel = Path(sys.argv[1])
out = {"before": fa3.fa3_importable()}
fa3.install_wheel(wheel)
out.update(after=fa3.fa3_importable(), ours=fa3.installed_from() in fa3._uris(wheel), prefix=sys.prefix)
fa3.uninstall_wheel()
out["removed"] = not fa3.fa3_importable() and fa3.installed_from() is None
print(json.dumps(out))
"""


def test_a_real_install_records_the_wheel_it_came_from(local_wheel, tmp_path):
    """pip for real, in a throw-away venv: the install makes flash_attn_interface importable, direct_url.json names
    the cached wheel (what tells a cache hit from an FA3 installed elsewhere), and the uninstall removes it."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)], check=True)
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    proc = subprocess.run(
        [str(venv / "bin" / "python"), "-c", REAL_INSTALL, str(local_wheel["path"])], capture_output=True, text=True,
        env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {"before": False, "after": True, "ours": True, "prefix": str(venv), "removed": True}


def test_no_network_for_the_wheel_says_where_to_put_it(tmp_path):
    url = "http://127.0.0.1:9/whl/cu128/flash_attn_3-3.0.0-cp39-abi3-manylinux_2_28_x86_64.whl"  # port 9: closed
    with pytest.raises(fa3.Unavailable, match="no network: cannot download http://127.0.0.1:9/") as err:
        fa3.fetch_fa3_wheel(url, "a" * 64, tmp_path)
    dest = tmp_path / "prebuilt" / ("a" * 64) / "flash_attn_3-3.0.0-cp39-abi3-manylinux_2_28_x86_64.whl"
    assert f"copy the wheel to {dest}" in str(err.value) and not dest.exists()


def test_no_network_for_the_source_is_unavailable_not_a_config_error(fake_repo):
    with pytest.raises(fa3.Unavailable, match="no network: cannot fetch http://127.0.0.1:9/flash-attention.git"):
        build(fake_repo, fake_repo["first"], repo="http://127.0.0.1:9/flash-attention.git")


# --- the step ------------------------------------------------------------------------------------------------------


def run_fa3(cfg: dict, tmp_path: Path, capsys) -> tuple[dict, dict, str]:
    args = argparse.Namespace(
        fa3_json=json.dumps(cfg),
        config=None,
        source=None,
        repo=None,
        commit=None,
        required=None,
        cache_dir=str(tmp_path / "cache"),
        repo_dir=str(REPO_ROOT),
        wheel_only=None,
        max_jobs=None,
        status=str(tmp_path / "fa3.json"),
        environment=str(tmp_path / "environment.json"),
        build_log=str(tmp_path / "logs" / "fa3.build.log"),
    )
    assert fa3.cmd_fa3(args) == 0
    out = capsys.readouterr().out
    return json.loads(Path(args.status).read_text()), json.loads(Path(args.environment).read_text()), out


@pytest.fixture
def fake_gpu(monkeypatch):
    """The GPU parts replaced: a CUDA machine with nvcc; installing records the wheel (and makes flash_attn_interface
    'importable', from that wheel); the check against SDPA passes unless told otherwise."""
    from pgolf import env as envmod

    state = {"installed": [], "uninstalled": 0, "verify": {"ok": True, "max_abs_diff": 0.0039}, "origin": None}
    probe = envmod.probe_environment
    monkeypatch.setattr(envmod, "probe_environment", lambda repo_dir: {**probe(repo_dir), **FAKE_GPU})

    def install(wheel):
        state["installed"].append(Path(wheel))
        state["origin"] = Path(wheel).resolve().as_uri()

    def uninstall():
        state["uninstalled"] += 1
        state["origin"] = None

    monkeypatch.setattr(fa3, "install_wheel", install)
    monkeypatch.setattr(fa3, "uninstall_wheel", uninstall)
    monkeypatch.setattr(fa3, "installed_from", lambda: state["origin"])
    monkeypatch.setattr(fa3, "fa3_importable", lambda: state["origin"] is not None)
    monkeypatch.setattr(fa3, "verify_fa3", lambda: dict(state["verify"]))
    monkeypatch.setattr(fa3, "fallback_backend", lambda: "sdpa")
    return state


def build_cfg(fake: dict, commit: str, **extra) -> dict:
    return {"enabled": True, "source": "build", "repo": fake["repo"], "commit": commit, "disable": SWITCHES} | extra


def test_the_step_builds_installs_verifies_then_a_second_run_is_a_cache_hit(fake_repo, fake_gpu, tmp_path, capsys):
    cfg = build_cfg(fake_repo, fake_repo["first"])
    status, env, out = run_fa3(cfg, tmp_path, capsys)
    assert status["state"] == "built" and status["available"] and not status["cached"] and status["verify"]["ok"]
    assert status["installed"] == "now" and [str(w) for w in fake_gpu["installed"]] == [status["wheel"]]
    assert status["switches"] == {f"FLASH_ATTENTION_DISABLE_{s}": "TRUE" for s in sorted(SWITCHES)}
    assert env["fa3_status"] == status and "fa3: available, built, matches SDPA within 0.0039" in out
    assert "(noise before the error)" in Path(status["build_log"]).read_text()

    status2, _, out2 = run_fa3(cfg, tmp_path, capsys)  # the wheel is installed from the cache: nothing to do
    assert status2["state"] == "built" and status2["cached"] and status2["installed"] == "already"
    assert status2["wheel"] == status["wheel"] and builds(fake_repo) == 1 and len(fake_gpu["installed"]) == 1
    assert "fa3: available, built (cache hit)" in out2

    fake_gpu["origin"] = None  # another environment, same cache: a hit, installed again
    status3, _, _ = run_fa3(cfg, tmp_path, capsys)
    assert status3["cached"] and status3["installed"] == "now" and builds(fake_repo) == 1


def test_the_step_fetches_the_pinned_wheel_by_default(local_wheel, fake_gpu, tmp_path, capsys):
    cfg = {"enabled": True, "wheel": {"url": local_wheel["url"], "sha256": local_wheel["sha256"]}}
    status, _, _ = run_fa3(cfg, tmp_path, capsys)
    assert status["source"] == "wheel" and status["state"] == "prebuilt" and status["available"]
    assert status["sha256"] == local_wheel["sha256"] and not status["cached"]
    status2, _, _ = run_fa3(cfg, tmp_path, capsys)
    assert status2["cached"] and status2["installed"] == "already"


def test_an_fa3_installed_elsewhere_is_preinstalled(fake_gpu, tmp_path, capsys):
    fake_gpu["origin"] = "file:///opt/fa3-wheels/flash_attn_3-3.0.0-cp39-abi3-linux_x86_64.whl"  # the image's
    status, _, _ = run_fa3(
        {"enabled": True, "wheel": {"url": "http://127.0.0.1:9/x.whl", "sha256": "a" * 64}}, tmp_path, capsys
    )
    assert status["state"] == "preinstalled" and status["available"] and not fake_gpu["installed"]


def test_a_failed_build_with_required_false_records_the_reason_and_the_fallback(fake_repo, fake_gpu, tmp_path, capsys):
    status, env, out = run_fa3(build_cfg(fake_repo, fake_repo["broken"]), tmp_path, capsys)
    assert status["state"] == "unavailable" and not status["available"] and status["fallback"] == "sdpa"
    assert "error: template argument 1 is invalid" in status["reason"] and status["build_log"] in status["reason"]
    assert "training falls back to sdpa" in out and env["fa3"] is None and env["fa3_status"] == status
    assert "[exit 1" in Path(status["build_log"]).read_text()


def test_a_failed_build_with_required_true_fails_the_step_quoting_the_error(fake_repo, fake_gpu, tmp_path):
    cfg = build_cfg(fake_repo, fake_repo["broken"], required=True)
    cmd = [sys.executable, "-m", "pgolf.fa3", "--fa3-json", json.dumps(cfg), "--cache-dir", str(tmp_path / "c")]
    cmd += ["--status", str(tmp_path / "s.json"), "--environment", str(tmp_path / "e.json")]
    cmd += ["--build-log", str(tmp_path / "fa3.build.log")]
    # in-process, with the GPU faked: the build runs and fails
    with pytest.raises(RuntimeError) as err:
        fa3.provide_fa3(cfg, {**FAKE_GPU, "image_fa3_source": None}, tmp_path / "c", tmp_path / "fa3.build.log")
    msg = str(err.value)
    assert msg.startswith("fa3: FlashAttention 3 is required (config fa3.required: true) but: building ")
    assert "flash_api_stable.cpp:751:23: error: template argument 1 is invalid" in msg
    assert f"the whole build output is in {tmp_path / 'fa3.build.log'}" in msg
    # and on this CPU machine the same config fails the command line (no CUDA device), exit 2, naming the key
    proc = subprocess.run(cmd, capture_output=True, text=True, env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2 and "fa3.required: true) but: no CUDA device" in proc.stderr
    assert not (tmp_path / "s.json").exists()


def test_no_network_records_the_fallback_or_fails_when_required(fake_gpu, tmp_path, capsys):
    cfg = {"enabled": True, "wheel": {"url": "http://127.0.0.1:9/flash_attn_3-3.0.0.whl", "sha256": "b" * 64}}
    status, _, out = run_fa3(cfg, tmp_path, capsys)
    assert status["state"] == "unavailable" and status["reason"].startswith("no network: cannot download")
    assert status["fallback"] == "sdpa" and "training falls back to sdpa" in out
    with pytest.raises(RuntimeError, match=r"required \(config fa3.required: true\) but: no network"):
        run_fa3(cfg | {"required": True}, tmp_path, capsys)


def test_a_wheel_that_fails_the_check_is_removed_again(local_wheel, fake_gpu, tmp_path, capsys):
    fake_gpu["verify"] = {"ok": False, "error": "undefined symbol: _ZN3c10..."}
    cfg = {"enabled": True, "wheel": {"url": local_wheel["url"], "sha256": local_wheel["sha256"]}}
    status, _, _ = run_fa3(cfg, tmp_path, capsys)
    assert status["state"] == "unavailable" and "undefined symbol" in status["reason"]
    assert fake_gpu["uninstalled"] == 1 and fake_gpu["origin"] is None


def test_the_step_runs_from_the_command_line_on_a_cpu_machine(tmp_path):
    """`python -m pgolf.fa3` with only src/ on PYTHONPATH, with the production fa3 section, on this GPU-less machine;
    it imports none of snakemake, jsonschema, zstandard, brotli (missing on the GPU machine)."""
    import yaml

    cfg = yaml.safe_load((REPO_ROOT / "config" / "config.yaml").read_text())["fa3"]
    code = textwrap.dedent("""
        import sys
        from pgolf import fa3
        rc = fa3.main(sys.argv[1:])
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("snakemake", "jsonschema", "zstandard", "brotli"))
        print("HEAVY", heavy)
        sys.exit(rc)
    """)
    cmd = [sys.executable, "-c", code, "--fa3-json", json.dumps(cfg), "--cache-dir", str(tmp_path)]
    cmd += ["--status", str(tmp_path / "s.json"), "--environment", str(tmp_path / "e.json")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout
    status = json.loads((tmp_path / "s.json").read_text())
    import torch

    if not torch.cuda.is_available():
        assert status["state"] == "unavailable" and status["reason"] == "no CUDA device"
        assert status["fallback"] == "sdpa" and status["source"] == "wheel" and not status["required"]
        assert "fa3: not available (no CUDA device); training falls back to sdpa" in proc.stdout
    assert (tmp_path / "fa3.build.log").exists()


# --- where the status goes -----------------------------------------------------------------------------------------

UNAVAILABLE = {"state": "unavailable", "reason": "no network: cannot download x", "fallback": "fa4", "available": False}


def test_the_status_opens_every_seed_train_log_and_reaches_the_record(tmp_path, monkeypatch, capsys):
    status_path = tmp_path / "fa3.json"
    status_path.write_text(json.dumps(UNAVAILABLE))
    monkeypatch.setattr(stages, "run_stage", lambda *a, **k: None)
    monkeypatch.setattr(stages, "data_env", lambda path: {})
    script = tmp_path / "t.py"
    script.write_text("# a training script\n")
    args = argparse.Namespace(
        fa3_status=str(status_path), train_json="{}", data_manifest="m.json", seed=1, run_id="r", env_json=None,
        checkpoint="c", summary="s", logfile="l", script=str(script), nproc=1,
    )  # fmt: skip
    assert stages.cmd_train(args) == 0
    assert "fa3: not available (no network: cannot download x); training falls back to fa4" in capsys.readouterr().out
    parsed = stages_parser().parse_args(["train", "--script", "t", "--data-manifest", "m", "--seed", "1"] + [
        "--train-json", "{}", "--checkpoint", "c", "--summary", "s", "--logfile", "l", "--fa3-status", "f.json"
    ])  # fmt: skip
    assert parsed.fa3_status == "f.json"
    env = {"fa3_status": UNAVAILABLE}
    assert record.provenance(env)["fa3_fallback"] == "fa4"
    assert readme._fa3_step(UNAVAILABLE) == "unavailable (no network: cannot download x; fallback fa4)"


def stages_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    stages.register(p.add_subparsers(dest="command"))
    return p


def test_an_upstream_script_that_needs_fa3_stops_before_training(tmp_path, monkeypatch):
    monkeypatch.setattr(fa3, "fa3_importable", lambda: False)
    folder = tmp_path / "record"
    folder.mkdir()
    script = folder / "train_gpt.py"
    script.write_text("import torch\nfrom flash_attn_interface import flash_attn_func as fa\n")
    status_path = tmp_path / "fa3.json"
    status_path.write_text(json.dumps(UNAVAILABLE))
    workdir = tmp_path / "work"
    with pytest.raises(RuntimeError) as err:
        upstream.run_upstream(
            script, tmp_path / "no-manifest.json", 1, "r", "r_seed1", 1, {}, workdir, tmp_path / "log", tmp_path / "m",
            fa3_status=status_path,
        )  # fmt: skip
    msg = str(err.value)
    assert f"{script} imports flash_attn_interface (FlashAttention 3), which is not importable here" in msg
    assert "no network: cannot download x" in msg and str(status_path) in msg and "Upstream-mode runs need FA3" in msg
    assert not workdir.exists()  # nothing started
    # a helper beside the script counts too; a script without FA3 passes
    script.write_text("import helper\n")
    (folder / "helper.py").write_text("import flash_attn_interface\n")
    with pytest.raises(RuntimeError, match="helper.py imports flash_attn_interface"):
        fa3.require_for_script(script, None)
    (folder / "helper.py").write_text("import torch  # flash_attn_interface only in a comment\n")
    assert fa3.require_for_script(script, status_path) is None
    script.write_text("try:\n    from flash_attn_interface import flash_attn_func\nexcept ImportError:\n    pass\n")
    assert fa3.require_for_script(script, status_path) is None  # it has its own fallback
    monkeypatch.setattr(fa3, "fa3_importable", lambda: True)
    (folder / "helper.py").write_text("import flash_attn_interface\n")
    assert fa3.require_for_script(script, status_path) is None


# --- the image -----------------------------------------------------------------------------------------------------


def test_the_image_builds_fa3_before_the_project_and_with_a_cache_mount():
    """docker/Dockerfile: the FA3 stages start from the stage that holds only the locked dependencies and copy only
    what pgolf.fa3 needs (not src/, the README or pyproject), so a change there does not recompile FA3; the config
    (any key) re-runs the step, whose cache mount (keyed like .cache/fa3) makes it a cache hit."""
    text = (REPO_ROOT / "docker" / "Dockerfile").read_text()
    stages_ = {}
    for block in re.split(r"^FROM ", text, flags=re.M)[1:]:
        head = block.splitlines()[0].split()
        name = head[2] if len(head) >= 3 and head[1].upper() == "AS" else "final"
        stages_[name] = (head[0], block)
    for name in ("fa3-wheel", "fa3-build"):
        parent, block = stages_[name]
        assert parent == "deps", name
        copies = re.findall(r"^COPY (?!--from)(.+)$", block, flags=re.M)
        sources = [src for line in copies for src in line.split()[:-1]]
        allowed = {f"src/pgolf/{m}.py" for m in ("__init__", "fsio", "env", "fa3")} | {"config/config.yaml"}
        assert sources and set(sources) <= allowed, sources
        assert "--mount=type=cache" in block and "python -m pgolf.fa3" in block and "--wheel-only" in block
    parent, block = stages_["project"]
    assert parent == "deps" and "COPY src ./src" in block and stages_["final"][0] == "project"
    assert "COPY --from=fa3 /wheels" in stages_["final"][1]
    assert re.search(r"^ARG FA3_SOURCE=wheel$", text, flags=re.M)  # the default is the pinned prebuilt wheel
