"""The pod's preflight and GPU count (issue 26): the machine against the config before any download or job, each
refusal naming the key or the fact and what to do; nproc_per_node auto and the gpus resource from the machine's GPUs
(a fake nvidia-smi on PATH); the terminal's job status and the run's closing summary; the bare-pod install's extras."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from conftest import REPO, SHARED, job_counts, snakemake

from pgolf import preflight
from pgolf.console import Console, closing_summary

FRONTIER = SHARED / "fixtures" / "frontier" / "2026-05-01_SP8192_PR2130Base_Calib32"
GIB = 1024**3


def listing(n: int):
    def runner(cmd, **kwargs):
        out = "".join(f"GPU {i}: NVIDIA H100 80GB HBM3 (UUID: GPU-{i})\n" for i in range(n))
        return subprocess.CompletedProcess(cmd, 0, stdout=out, stderr="")

    return runner


def no_nvidia_smi(cmd, **kwargs):
    raise FileNotFoundError("nvidia-smi")


# --- the GPU count and nproc_per_node -------------------------------------------------------------------------------


def test_gpu_count_is_nvidia_smi_narrowed_by_cuda_visible_devices():
    assert preflight.gpu_count({}, listing(8)) == 8
    assert preflight.gpu_count({}, no_nvidia_smi) == 0
    assert preflight.gpu_count({"CUDA_VISIBLE_DEVICES": ""}, listing(8)) == 0
    assert preflight.gpu_count({"CUDA_VISIBLE_DEVICES": "0,1"}, listing(8)) == 2
    assert preflight.gpu_count({"CUDA_VISIBLE_DEVICES": "-1"}, listing(8)) == 0
    assert preflight.gpu_count({"CUDA_VISIBLE_DEVICES": "0,-1,2"}, listing(8)) == 1
    assert preflight.gpu_count({"CUDA_VISIBLE_DEVICES": "0,1,2,3"}, listing(2)) == 2


def test_nproc_auto_is_the_machines_gpus_8_on_a_cluster_1_on_cpu():
    assert preflight.resolve_nproc("auto", "cuda", 4) == 4
    assert preflight.resolve_nproc("auto", "cuda", 1) == 1
    assert preflight.resolve_nproc("auto", "cuda", 16) == 8
    assert preflight.resolve_nproc("auto", "cuda", None) == 8
    assert preflight.resolve_nproc("auto", "cpu", None) == 1
    assert preflight.resolve_nproc(2, "cuda", 8) == 2


def test_gpu_refusals_name_the_fact_and_the_fix():
    (none,) = preflight.gpu_problems(1, 0)
    assert "no CUDA GPU" in none and "profiles/demo" in none
    (few,) = preflight.gpu_problems(8, 4)
    assert "nproc_per_node: 8" in few and "4 CUDA GPU" in few and "nproc_per_node=4" in few
    assert preflight.gpu_problems(4, 4) == [] and preflight.gpu_problems(1, 8) == []


def test_executor_comes_from_the_command_line_or_the_profile():
    bases = [str(REPO)]
    assert preflight.executor_of(["snakemake", "--profile", "profiles/slurm"], {}, bases) == "slurm"
    assert preflight.executor_of(["snakemake", "--profile", "profiles/pod"], {}, bases) == "local"
    assert preflight.executor_of(["snakemake", "-e", "slurm", "-n"], {}, bases) == "slurm"
    assert preflight.executor_of(["snakemake"], {"SNAKEMAKE_PROFILE": "profiles/slurm"}, bases) == "slurm"


# --- disk -----------------------------------------------------------------------------------------------------------


def hub_config(shards=80):
    return {
        "data": {
            "source": "hub",
            "name": "fineweb10B_sp1024",
            "hub": {"variant": "sp1024", "train_shards": None, "repos": {"sp1024": {"train_shards": shards}}},
        }
    }


def test_disk_refusal_counts_the_shards_still_to_fetch(tmp_path):
    need, how = preflight.hub_fetch_bytes(hub_config()["data"], tmp_path / "data" / "fineweb10B_sp1024")
    assert need == 81 * preflight.SHARD_BYTES and "80 train shards" in how
    (problem,) = preflight.disk_problems(hub_config(), tmp_path, free_bytes=10 * GIB)
    assert "free disk: 10.0 GiB" in problem and "15.1 GiB" in problem and "data.hub.train_shards" in problem
    assert preflight.disk_problems(hub_config(), tmp_path, free_bytes=30 * GIB) == []
    # shards already there are not fetched again
    out = tmp_path / "data" / "fineweb10B_sp1024"
    out.mkdir(parents=True)
    for i in range(3):
        with open(out / f"fineweb_train_{i:06d}.bin", "wb") as f:
            f.truncate(preflight.SHARD_BYTES)
    need, _ = preflight.hub_fetch_bytes(hub_config(3)["data"], out)
    assert need == preflight.SHARD_BYTES  # the val shard only
    documents = {"data": {"source": "documents", "name": "x"}}
    (small,) = preflight.disk_problems(documents, tmp_path, free_bytes=GIB)
    assert "FA3 build" in small and "will fetch" not in small


# --- FA3 and system tools of an upstream script -----------------------------------------------------------------------


def upstream_config(script, **fa3):
    return {"train": {"mode": "upstream", "script": str(script), "env": {}}, "fa3": {"enabled": True, **fa3}}


def test_fa3_refused_when_an_upstream_script_imports_it_and_the_step_will_not_provide_it(tmp_path):
    script = tmp_path / "train_gpt.py"
    script.write_text("import os\nfrom flash_attn_interface import flash_attn_func\n")
    (off,) = preflight.fa3_problems(upstream_config(script, enabled=False), script, importable=False, nvcc=True)
    assert "flash_attn_interface" in off and "fa3.enabled: true" in off
    (nonvcc,) = preflight.fa3_problems(upstream_config(script, source="build"), script, importable=False, nvcc=False)
    assert "nvcc" in nonvcc and "fa3.source: wheel" in nonvcc
    assert preflight.fa3_problems(upstream_config(script, enabled=False), script, importable=True, nvcc=True) == []
    assert preflight.fa3_problems(upstream_config(script), script, importable=False, nvcc=True) == []
    staged = {"train": {"script": str(script)}, "fa3": {"enabled": False}}
    assert preflight.fa3_problems(staged, script, importable=False, nvcc=False) == []
    # a required build without a compiler, whatever the script
    required = {"train": {}, "fa3": {"enabled": True, "required": True, "source": "build"}}
    (build,) = preflight.fa3_problems(required, script, importable=False, nvcc=False)
    assert "fa3.required" in build and "PATH" in build


def test_tools_refused_when_the_script_runs_them_under_the_configs_env(tmp_path):
    script = tmp_path / "train_gpt.py"
    script.write_text(
        'import os, subprocess\ncompressor = os.environ.get("COMPRESSOR", "brotli")\n'
        'def pack(p):\n    subprocess.run(["lrzip", "-z", p])\n'
    )
    config = upstream_config(script)
    assert preflight.tool_problems(config, script, which=lambda t: None) == []  # brotli: no lrzip
    config["train"]["env"] = {"COMPRESSOR": "pergroup"}
    (lrzip,) = preflight.tool_problems(config, script, which=lambda t: None)
    assert "lrzip" in lrzip and "COMPRESSOR=pergroup" in lrzip and "apt-get install -y lrzip" in lrzip
    assert preflight.tool_problems(config, script, which=lambda t: f"/usr/bin/{t}") == []
    # a script that calls a tool and reads no variable that gates it
    script.write_text('import subprocess\nsubprocess.run(["gcc", "-O3", "x.c"])\n')
    (gcc,) = preflight.tool_problems(upstream_config(script), script, which=lambda t: None)
    assert "gcc" in gcc and "apt-get install -y gcc" in gcc


def test_tools_of_the_frontier_record_follow_its_readme_variables():
    if not FRONTIER.is_dir():
        pytest.skip(f"the frontier record fixture is not at {FRONTIER} (it lives in the shared folder)")
    script = FRONTIER / "train_gpt.py"
    config = upstream_config(script)
    assert preflight.tool_problems(config, script, which=lambda t: None) == []  # its defaults: brotli, no n-gram tilt
    config["train"]["env"] = {"COMPRESSOR": "pergroup", "NGRAM_TILT_ENABLED": 1}
    problems = preflight.tool_problems(config, script, which=lambda t: None)
    assert [p.split("`")[1] for p in problems] == ["lrzip", "gcc"], problems
    (fa3,) = preflight.fa3_problems(upstream_config(script, enabled=False), script, importable=False, nvcc=True)
    assert "train_gpt.py imports flash_attn_interface" in fa3


# --- the record's identity ------------------------------------------------------------------------------------------


def test_a_record_attempt_needs_author_github_id_and_a_consistent_track():
    attempt = {"track": "track_10min_16mb", "non_record": False, "author": "", "github_id": " "}
    problems = preflight.record_problems(attempt)
    assert len(problems) == 2 and "record.author" in problems[0] and "record.github_id" in problems[1]
    assert preflight.record_problems({**attempt, "author": "A", "github_id": "a"}) == []
    (mixed,) = preflight.record_problems({"track": "track_10min_16mb", "non_record": True})
    assert "record.non_record is true" in mixed
    (mixed,) = preflight.record_problems({"track": "track_non_record_16mb", "non_record": False})
    assert "record.non_record is false" in mixed
    assert preflight.record_problems({"track": "track_non_record_16mb", "non_record": True}) == []


# --- the pod profile on this machine --------------------------------------------------------------------------------


def fake_gpus(tmp_path, n: int):
    """A PATH folder whose nvidia-smi lists ``n`` GPUs."""
    shim = tmp_path / "bin"
    shim.mkdir(exist_ok=True)
    lines = "".join(f'echo "GPU {i}: NVIDIA H100 80GB HBM3 (UUID: GPU-{i})"\n' for i in range(n))
    (shim / "nvidia-smi").write_text(f"#!/bin/sh\n{lines}")
    (shim / "nvidia-smi").chmod(0o755)
    return shim


def pod_overlay(tmp_path, **extra) -> str:
    """The production config with the demo corpus as data (so that a job that started by mistake is quick and local)
    and a record attempt's identity."""
    overlay = {
        "data": {
            "source": "documents",
            "name": "pod_test_sp1024",
            "documents": {"path": str(REPO / "demo" / "wiki_vital_en.jsonl.xz"), "vocab_size": 1024, "val_docs": 20},
        },
        "record": {"author": "Pod Test", "github_id": "pod-test"},
        **extra,
    }
    path = tmp_path / "overlay.yaml"
    path.write_text(json.dumps(overlay))
    return str(path)


def pod(tmp_path, monkeypatch, *args, gpus: int | None = None, visible: str | None = None, **overlay):
    if gpus is not None:
        monkeypatch.setenv("PATH", f"{fake_gpus(tmp_path, gpus)}{os.pathsep}{os.environ['PATH']}")
    if visible is not None:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    wd = tmp_path / "wd"
    wd.mkdir(exist_ok=True)
    proc = snakemake(
        wd,
        "--profile",
        str(REPO / "profiles" / "pod"),
        *args,
        configs=[REPO / "config" / "config.yaml", pod_overlay(tmp_path, **overlay)],
        check=False,
    )
    return proc, wd, proc.stdout + proc.stderr


@pytest.mark.parametrize("machine", ["this machine", "8 GPUs, none visible"])
def test_bar_the_pod_profile_without_gpus_is_refused_before_any_data_job(tmp_path, monkeypatch, machine):
    if machine == "this machine":
        if shutil.which("nvidia-smi"):
            pytest.skip("this machine has nvidia-smi: the other case hides its GPUs")
        proc, wd, out = pod(tmp_path, monkeypatch)
    else:
        proc, wd, out = pod(tmp_path, monkeypatch, gpus=8, visible="")
    assert proc.returncode != 0, out[-3000:]
    assert "preflight" in out and "no CUDA GPU here" in out, out[-3000:]
    assert not (wd / "data").exists() and not (wd / "logs").exists(), "a job ran before the refusal"
    assert "Finished jobid" not in out


def test_fewer_gpus_than_nproc_per_node_is_refused(tmp_path, monkeypatch):
    proc, wd, out = pod(tmp_path, monkeypatch, gpus=4, nproc_per_node=8)
    assert proc.returncode != 0
    assert "config nproc_per_node: 8 but this machine has 4 CUDA GPU(s)" in out, out[-3000:]
    assert not (wd / "data").exists()


def test_a_dry_run_lists_what_the_preflight_would_refuse(tmp_path, monkeypatch):
    proc, wd, out = pod(tmp_path, monkeypatch, "-n", gpus=4, nproc_per_node=8, record={"author": ""})
    assert proc.returncode == 0, out[-3000:]
    assert "pgolf preflight (a run would stop here): config nproc_per_node: 8 but this machine has 4" in out
    assert "pgolf preflight (a run would stop here): config record.author is empty" in out
    assert preflight.dry_run_requested(["snakemake", "-np"]) and preflight.dry_run_requested(["x", "--dry-run"])
    assert not preflight.dry_run_requested(["snakemake", "--profile", "profiles/pod", "-c", "4"])


def train_resources(out: str) -> list[tuple[str, str]]:
    blocks = re.split(r"\n(?=\[[^\]]+\]\nrule )", out)
    found = []
    for block in blocks:
        if "\nrule train:" in block or "\nrule evaluate:" in block:
            found.append((re.search(r"resources: (.*)", block).group(1), re.search(r"--nproc (\d+)", block).group(1)))
    return found


@pytest.mark.parametrize("gpus", [1, 4])
def test_the_gpu_count_is_the_machines(tmp_path, monkeypatch, gpus):
    """nproc_per_node: auto (the production default) is the machine's count, every GPU job asks for that many and the
    gpus resource is that count (the pod profile's old gpus=8 let two 1-GPU jobs share one GPU)."""
    proc, _, out = pod(tmp_path, monkeypatch, "-n", gpus=gpus)
    assert proc.returncode == 0, out[-3000:]
    assert f"pgolf: {gpus} CUDA GPU(s) here; nproc_per_node {gpus} (auto); gpus resource {gpus}" in out
    found = train_resources(out)
    assert len(found) == 6 and job_counts(proc)["train"] == 3
    for resources, nproc in found:
        assert re.search(rf"(^|, )gpus={gpus}(,|$)", resources) and nproc == str(gpus), (resources, nproc)


def test_a_given_gpu_count_is_kept(tmp_path, monkeypatch):
    proc, _, out = pod(tmp_path, monkeypatch, "-n", "--resources", "gpus=2", gpus=4, nproc_per_node=2)
    assert proc.returncode == 0, out[-3000:]
    assert "nproc_per_node 2; gpus resource 2" in out
    assert all(nproc == "2" for _, nproc in train_resources(out))


def test_the_pod_profile_does_not_fix_the_gpu_count():
    text = (REPO / "profiles" / "pod" / "config.yaml").read_text()
    assert not re.search(r"^\s*-?\s*gpus\s*=", text, re.M), "profiles/pod must not fix gpus (the machine's count)"


# --- the terminal ---------------------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def console_lines(fd_read) -> list[str]:
    return os.read(fd_read, 65536).decode().splitlines()


def test_console_shows_progress_and_a_heartbeat_at_least_every_30_s():
    r, w = os.pipe()
    clock = FakeClock()
    c = Console(w, "seed 42 train", clock=clock)
    c.line("loading data", None)
    clock.t = 24
    c.heartbeat()  # nothing yet
    clock.t = 25
    c.heartbeat()
    (start,) = console_lines(r)
    assert start.startswith("[seed 42 train] 25s: running, no step logged yet") and "loading data" in start
    clock.t = 40
    c.line("step:200/9000 ...", "progress: step 200/9000, loss 3.2, elapsed 17.0s of 600s budget, ETA 583s")
    clock.t = 42  # within the minimum gap: not shown
    c.line("step:220/9000 ...", "progress: step 220/9000, loss 3.1, elapsed 19.0s of 600s budget, ETA 581s")
    assert console_lines(r) == [
        "[seed 42 train] 40s: progress: step 200/9000, loss 3.2, elapsed 17.0s of 600s budget, ETA 583s"
    ]
    clock.t = 64
    c.heartbeat()  # 24 s after the last line shown: nothing yet
    clock.t = 65
    c.heartbeat()  # 25 s: checked every second, so never more than 30 s of silence
    (beat,) = console_lines(r)
    assert beat.startswith("[seed 42 train] 1m05s: progress: step 220/9000") and beat.endswith("(running)")
    os.close(r)
    c.write("the terminal is gone")  # never fails the job
    os.close(w)


def test_a_silent_job_still_reaches_the_terminal(capfd):
    """Through stream() with a real child: the start, a heartbeat while it prints nothing, its step, its end."""
    import sys

    from pgolf.stages import stream

    r, w = os.pipe()
    code = "import time; print('loading', flush=True); time.sleep(1.5); print('step:1/2 train_loss:3 train_time:100ms')"
    console = Console(w, "seed 7 train", interval_s=0.5, min_gap_s=0)
    assert stream([sys.executable, "-c", code], dict(os.environ), budget_s=10, console=console) == 0
    os.close(w)
    text = os.read(r, 65536).decode()
    os.close(r)
    assert text.startswith("[seed 7 train] 0s: started\n"), text
    assert re.search(r"\[seed 7 train\] \d+s: running, no step logged yet .*last line: loading", text), text
    assert "progress: step 1/2, loss 3, elapsed 0.1s of 10s budget, ETA 0s" in text
    assert text.rstrip().endswith("finished")


def test_any_command_shows_its_status_with_the_top_level_option(tmp_path, monkeypatch):
    """`pgolf --console-fd N <command>` (the fa3 rule): the start, the last output line in heartbeats, the end."""
    import sys

    from pgolf import cli

    monkeypatch.setattr(sys, "stdout", sys.stdout)  # the option taps stdout: restored after the test
    r, w = os.pipe()
    script = tmp_path / "s.py"
    script.write_text("x = 1\n" * 50)
    assert cli.main(["--console-fd", str(w), "pack", "--script", str(script), "--out", str(tmp_path / "p.py")]) == 0
    assert cli.main(["--console-fd", str(w), "pack", "--script", str(tmp_path / "none.py"), "--out", "x.py"]) == 2
    os.close(w)
    lines = os.read(r, 65536).decode().splitlines()
    os.close(r)
    assert lines == [
        "[pack] 0s: started",
        "[pack] 0s: finished",
        "[pack] 0s: started",
        "[pack] 0s: failed (exit code 2); the step's log has the whole output",
    ]


def test_console_without_a_descriptor_does_nothing():
    c = Console(None, "x").start()
    c.line("step", "progress: step 1/2")
    c.heartbeat()
    c.stop(0)


def test_closing_summary_names_the_score_the_record_and_the_next_commands(tmp_path):
    record = tmp_path / "records" / "track_10min_16mb" / "2026-12-02_MyRun"
    assert closing_summary(record) is None
    record.mkdir(parents=True)
    sub = {
        "name": "MyRun",
        "val_bpb": 1.1234,
        "val_bpb_std": 0.0005,
        "seeds": [42, 1337, 2025],
        "bytes_total": 15_900_000,
    }
    (record / "submission.json").write_text(json.dumps(sub))
    text = closing_summary(record, "../parameter-golf/records/track_10min_16mb/old")
    assert "val_bpb 1.1234 (mean of 3 seeds, std 0.0005), 15,900,000 bytes" in text
    assert f"record    {record}/" in text
    assert f"pgolf check {record}" in text
    assert f"pgolf compare {record} ../parameter-golf/records/track_10min_16mb/old" in text
    assert "git add records/track_10min_16mb/2026-12-02_MyRun" in text and "pull request" in text


# --- the install ----------------------------------------------------------------------------------------------------


def project():
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def test_the_pod_extra_leaves_the_images_torch_numpy_and_matplotlib_alone():
    """The bare-pod install (`pip install -e '.[pod]'` into the image's Python) must not ask for another torch, numpy
    or matplotlib than the image has: no exact pin of them in the base dependencies or the pod extra."""
    deps = project()["dependencies"] + project()["optional-dependencies"]["pod"]
    for name in ("torch", "numpy", "matplotlib"):
        specs = [d for d in deps if re.match(rf"{name}\b", d)]
        assert all("==" not in s for s in specs), specs
    pod = project()["optional-dependencies"]["pod"]
    assert any(d.startswith("ninja==") for d in pod) and any(d.startswith("wheel==") for d in pod)  # the FA3 build
    # the same versions as the image's (docker/requirements.in)
    image = (REPO / "docker" / "requirements.in").read_text().split()
    assert all(d in image for d in pod), (pod, image)


def test_snakemake_report_needs_nothing_beyond_the_install():
    """`snakemake --report` imports what Snakemake's "reports" extra names (pygments): the project depends on it."""
    from importlib.metadata import requires

    wanted = {re.split(r"[ ;<>=!~\[]", r)[0].lower() for r in requires("snakemake") if 'extra == "reports"' in r}
    have = {re.split(r"[ ;<>=!~\[]", d)[0].lower() for d in project()["dependencies"]}
    assert wanted and wanted <= have, wanted - have


def test_the_slurm_executor_plugin_is_an_extra_and_in_test():
    extras = project()["optional-dependencies"]
    (plugin,) = [d for d in extras["slurm"] if d.startswith("snakemake-executor-plugin-slurm")]
    assert "==" in plugin and plugin in extras["test"]


def test_the_rehearsal_runs_the_readmes_own_commands():
    """benchmarks/pod_run.sh is the README's bare-pod route: its install and run commands are the README's (the
    rehearsal adds only --no-index --find-links for a machine without network, and its overlay)."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("### The bare pod, step by step", 1)[1].split("\n## ", 1)[0]
    script = (REPO / "benchmarks" / "pod_run.sh").read_text()
    install = "python3 -m pip install -e '.[pod]'"
    assert install in section
    assert "python3 -m pip install --no-index --find-links .gpu/wheels -e '.[pod]'" in script
    assert "snakemake --profile profiles/pod --configfile me.yaml" in section
    assert "snakemake --profile profiles/pod --configfile .gpu/rehearsal.yaml" in script
    assert "CUDA_VISIBLE_DEVICES= " in script and 'pgolf check "$record"' in script
    assert "<!-- pod-figures" in section and "measured" in section and "projected" in section


def test_on_a_cluster_auto_is_8_and_the_submit_host_gpus_are_not_counted(tmp_path, monkeypatch):
    """profiles/slurm: the jobs run on the cluster's nodes, so the submit host's GPUs (none here, or a fake 1) decide
    nothing: nproc_per_node auto is 8, and no gpus resource is set here."""
    shim = fake_gpus(tmp_path, 1)
    (shim / "apptainer").write_text('#!/bin/sh\necho "apptainer version 1.4.5"\n')
    (shim / "apptainer").chmod(0o755)
    monkeypatch.setenv("PATH", f"{shim}{os.pathsep}{os.environ['PATH']}")
    image = {"container": "docker://registry.example.org/pgolf@sha256:" + "0123456789abcdef" * 4}
    path = tmp_path / "cluster.yaml"
    path.write_text(json.dumps({**json.loads(Path(pod_overlay(tmp_path)).read_text()), **image}))
    wd = tmp_path / "wd"
    wd.mkdir()
    proc = snakemake(wd, "-n", "--profile", str(REPO / "profiles" / "slurm"), configs=[path], check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "CUDA GPU(s) here" not in out
    found = train_resources(out)
    assert found and all(nproc == "8" for _, nproc in found), found


def test_the_readmes_own_details_file_is_a_valid_overlay(tmp_path):
    """The bare pod's step 2 (me.yaml) as the README writes it: valid YAML that the schema accepts on top of
    config/config.yaml, setting the record's details and FA3 as required (a record attempt never trains on SDPA)."""
    from pgolf.configcheck import config_problems

    readme = (REPO / "README.md").read_text()
    section = readme.split("### The bare pod, step by step", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    me = tmp_path / "me.yaml"
    me.write_text(block)
    schema = REPO / "workflow" / "schemas" / "config.schema.yaml"
    assert config_problems([me], REPO / "config" / "config.yaml", schema) == []
    import yaml

    details = yaml.safe_load(block)
    assert details["record"]["author"] and details["record"]["github_id"] and details["fa3"]["required"] is True
    broken = tmp_path / "broken.yaml"
    broken.write_text(block.replace("fa3: {required: true}", "fa3: {required: true"))
    (problem,) = config_problems([broken], REPO / "config" / "config.yaml", schema)
    assert "broken.yaml:" in problem
