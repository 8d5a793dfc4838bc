"""The Snakemake DAG end to end on tiny data (.test/config.yaml), and what each kind of change costs to re-run."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO, env_with_venv, job_counts, snakemake

from pgolf.logs import parse_log
from pgolf.pack import ship

TEST_CONFIG = REPO / ".test" / "config.yaml"
FULL_CHAIN = {"train": 2, "quantize": 2, "evaluate": 2, "record": 1, "all": 1}
SCRIPT_CHAIN = {"ship_script": 1, **FULL_CHAIN}  # a script edit also re-packs the shipped script

pytestmark = pytest.mark.slow  # the pipeline end to end (minutes)


def overlay(tmp: Path, name: str, obj: dict) -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(obj))
    return path


def test_production_config_dry_run_lists_the_submission(tmp_path):
    proc = snakemake(tmp_path, "-n")
    assert job_counts(proc) == {
        "data": 1,
        "fa3": 1,
        "ship_script": 1,
        "train": 3,
        "quantize": 3,
        "evaluate": 3,
        "record": 1,
        "all": 1,
    }
    out = proc.stdout + proc.stderr
    assert "pgolf data --data-json" in out or "rule data" in out
    for seed in (42, 1337, 2025):
        assert f"results/sp1024_11L_xsa4_ema/seed_{seed}/checkpoint.pt" in out


def test_packed_script_ships_and_is_what_quantize_counts(tmp_path):
    proc = snakemake(tmp_path, "-n", "-p")  # the production config: packing is the default
    counts = job_counts(proc)
    assert counts["ship_script"] == 1 and counts["quantize"] == 3
    out = proc.stdout + proc.stderr
    shipped = "results/sp1024_11L_xsa4_ema/ship/train_gpt.py"
    script = os.path.relpath(REPO / "src" / "pgolf" / "train_gpt.py", tmp_path)  # relative to the working folder
    assert f"pgolf pack --script {script} --out {shipped}" in out
    assert out.count(f"--code-file {shipped}") == 3  # every seed's cap check counts the packed bytes
    assert f"--script {shipped}" in out  # and the record ships it, with the readable source beside it
    assert f"--human-script {script}" in out
    unpacked = overlay(tmp_path, "unpacked", {"record": {"pack_script": False}})
    out = snakemake(tmp_path, "-n", "-p", configs=[REPO / "config" / "config.yaml", unpacked]).stdout
    assert "pgolf pack" not in out and "--human-script" not in out
    assert out.count(f"--code-file {script}") == 3


def test_pod_profile_dry_run(tmp_path):
    proc = snakemake(tmp_path, "-n", "--profile", str(REPO / "profiles" / "pod"))
    assert job_counts(proc)["train"] == 3


def test_bad_config_is_rejected_with_the_key(tmp_path):
    bad = overlay(tmp_path, "bad", {"eval": {"eval_stride": "sixty-four"}})
    proc = snakemake(tmp_path, "-n", configs=[bad], check=False)
    assert proc.returncode != 0
    assert "stride" in proc.stdout + proc.stderr and "sixty-four" in proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """The whole test pipeline, run once; the training script is a copy that tests may edit (and restore)."""
    wd = tmp_path_factory.mktemp("pipeline")
    script = wd / "train_gpt.py"
    shutil.copy2(REPO / "src" / "pgolf" / "train_gpt.py", script)
    base = [TEST_CONFIG, overlay(wd, "script", {"train": {"script": str(script)}})]
    t0 = time.perf_counter()
    proc = snakemake(wd, configs=base)
    first_run_s = time.perf_counter() - t0
    assert job_counts(proc) == {"data": 1, "fa3": 1, **SCRIPT_CHAIN}
    return {"wd": wd, "base": base, "script": script, "first_run_s": first_run_s, "terminal": proc.stdout + proc.stderr}


def test_pipeline_products(pipeline):
    wd = pipeline["wd"]
    for seed in (1, 2):
        m = json.loads((wd / f"results/test/seed_{seed}/metrics.json").read_text())
        for key in ("val_bpb", "val_loss", "eval_time_s", "artifact_bytes", "code_bytes", "train_time_s", "steps"):
            assert m[key] is not None, key
        assert m["steps"] == 12 and m["seed"] == seed and 0 < m["val_bpb"] < 10
        assert m["bytes_total"] == m["artifact_bytes"] + m["code_bytes"]
        assert m["artifact_bytes"] == (wd / f"results/test/seed_{seed}/final_model.ptz").stat().st_size
    record = wd / "records/track_non_record_16mb/2026-01-01_pgolf_test"
    names = {p.name for p in record.iterdir()}
    assert {"README.md", "submission.json", "train_gpt.py", "train_gpt_human.py", "requirements.txt"} <= names
    assert {"train_seed1.log", "train_seed2.log"} <= names
    assert not any(n.startswith(".") for n in names), names  # nothing but the record's own files
    # the packed script ships, its bytes counted everywhere; the readable source beside it
    shipped = (record / "train_gpt.py").read_bytes()
    assert shipped == ship(pipeline["script"].read_bytes())[0] and len(shipped) <= 30_000
    assert (record / "train_gpt_human.py").read_bytes() == pipeline["script"].read_bytes()
    sub = json.loads((record / "submission.json").read_text())
    assert sorted(int(s) for s in sub["seeds"]) == [1, 2]
    assert sub["bytes_code"] == len(shipped)
    for seed in (1, 2):
        assert f"Code size: {len(shipped)} bytes" in (record / f"train_seed{seed}.log").read_text()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    # no options: the seed rule comes from the record's track (one seed for a non-record; this record has two)
    check = subprocess.run(["pgolf", "check", str(record)], capture_output=True, text=True, env=env)
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_terminal_shows_each_job_and_the_end(pipeline):
    """Not only the step logs: Snakemake's terminal shows each train/quantize/evaluate job (its status through
    --console-fd), then the score, the record's path and the next commands (pgolf.console)."""
    out = pipeline["terminal"]
    for seed in (1, 2):
        for step in ("train", "quantize", "evaluate"):
            assert f"[seed {seed} {step}] " in out and re.search(rf"\[seed {seed} {step}\] \S+: finished", out), step
    assert re.search(r"\[seed 1 train\] \S+: progress: step \d+/12, loss [\d.]+", out)
    record = "records/track_non_record_16mb/2026-01-01_pgolf_test"
    metrics = json.loads((pipeline["wd"] / record / "submission.json").read_text())
    assert f"val_bpb {metrics['val_bpb']} (mean of 2 seeds" in out
    assert f"pgolf check {record}" in out and f"pgolf compare {record}" in out and "pull request" in out


def test_same_command_again_does_nothing(pipeline):
    assert job_counts(snakemake(pipeline["wd"], "-n", configs=pipeline["base"])) == {}


def test_quantization_change_never_retrains(pipeline, tmp_path):
    q = overlay(tmp_path, "q", {"quantize": {"quant_bits_matrix": 5}})
    counts = job_counts(snakemake(pipeline["wd"], "-n", configs=[*pipeline["base"], q]))
    assert counts == {"quantize": 2, "evaluate": 2, "record": 1, "all": 1}


def test_one_seed_rerun(pipeline):
    target = "results/test/seed_2/checkpoint.pt"
    counts = job_counts(snakemake(pipeline["wd"], "-n", "--forcerun", target, configs=pipeline["base"]))
    assert counts == {"train": 1, "quantize": 1, "evaluate": 1, "record": 1, "all": 1}


def test_training_hyperparameter_change_retrains(pipeline, tmp_path):
    t = overlay(tmp_path, "t", {"train": {"matrix_lr": 0.03}})
    assert job_counts(snakemake(pipeline["wd"], "-n", configs=[*pipeline["base"], t])) == FULL_CHAIN


def test_script_edit_retrains_but_a_checkout_touch_does_not_on_the_pod(pipeline):
    script, wd, base = pipeline["script"], pipeline["wd"], pipeline["base"]
    original, st = script.read_bytes(), script.stat()
    pod = yaml.safe_load((REPO / "profiles" / "pod" / "config.yaml").read_text())
    triggers = pod["rerun-triggers"]
    assert "mtime" not in triggers
    try:
        # a git checkout rewrites the file with the same bytes and a new mtime
        os.utime(script, (st.st_atime + 3600, st.st_mtime + 3600))
        assert job_counts(snakemake(wd, "-n", "--rerun-triggers", *triggers, configs=base)) == {}
        # (Snakemake's default mtime trigger also compares the checksums it stored for small inputs)
        assert job_counts(snakemake(wd, "-n", configs=base)) == {}
        # an edit re-trains, with the pod's triggers and the default ones
        script.write_bytes(original + b"\n# an edit\n")
        assert job_counts(snakemake(wd, "-n", "--rerun-triggers", *triggers, configs=base)) == SCRIPT_CHAIN
        assert job_counts(snakemake(wd, "-n", configs=base)) == SCRIPT_CHAIN
    finally:
        script.write_bytes(original)
        os.utime(script, (st.st_atime, st.st_mtime))
    assert job_counts(snakemake(wd, "-n", configs=base)) == {}


def test_readme_command_reproduces_the_record(pipeline, tmp_path):
    """The README's reproducing command, run as a maintainer runs it: the record folder placed in a stand-in clone of
    openai/parameter-golf (records/<track>/<folder>/) whose data is in upstream's layout (data/datasets/<name>/,
    data/tokenizers/<file>, as data/cached_challenge_fineweb.py writes it), the command run as written from the folder
    with the requirements installed by plain pip: the challenge's single run of the packed train_gpt.py writes the
    pipeline's artifact, byte for byte, and gets its score."""
    wd = pipeline["wd"]
    record = wd / "records/track_non_record_16mb/2026-01-01_pgolf_test"
    clone = tmp_path / "parameter-golf"
    folder = clone / "records/track_non_record_16mb" / record.name
    shutil.copytree(record, folder)
    manifest = json.loads((wd / "data/test_wiki_sp1024/manifest.json").read_text())
    datasets = clone / "data/datasets/test_wiki_sp1024"
    datasets.mkdir(parents=True)
    for entry in manifest["train"]["files"] + manifest["val"]["files"]:
        shutil.copy2(wd / "data/test_wiki_sp1024" / entry["path"], datasets / entry["path"])
    tokenizer = (wd / "data/test_wiki_sp1024" / manifest["tokenizer"]["path"]).resolve()
    (clone / "data/tokenizers").mkdir(parents=True)
    shutil.copy2(tokenizer, clone / "data/tokenizers" / tokenizer.name)
    shutil.rmtree(wd / "data/test_wiki_sp1024.moved", ignore_errors=True)
    (wd / "data/test_wiki_sp1024").rename(wd / "data/test_wiki_sp1024.moved")  # no path may lead back to it
    try:
        readme = (folder / "README.md").read_text()
        assert "records/<track>/` of a clone of openai/parameter-golf" in readme
        assert f"`data/datasets/test_wiki_sp1024/` (shards) and `data/tokenizers/{tokenizer.name}`" in readme
        block = readme.split("## Reproducing", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
        assert block.startswith("pip install -r requirements.txt\n")
        command = block.replace("pip install -r requirements.txt\n", "")
        assert "TRAIN_FILES='../../../data/datasets/test_wiki_sp1024/test_wiki_sp1024_train_*.bin' \\" in command
        assert f"TOKENIZER_PATH=../../../data/tokenizers/{tokenizer.name}" in command
        assert "QUANT_KEEP_FLOAT_NUMEL=1024" in command and "EVAL_STRIDE=64" in command and "SEED=1 \\" in command
        # plain pip resolves requirements.txt: no local version label (+cpu here)
        reqs = [line.split(" #")[0].strip() for line in (folder / "requirements.txt").read_text().splitlines()]
        assert all("+" not in r for r in reqs if r and not r.startswith("#")), reqs
        env = {**env_with_venv(), "OMP_NUM_THREADS": "1"}
        proc = subprocess.run(["bash", "-c", command], cwd=folder, capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        seed = wd / "results/test/seed_1"
        assert (folder / "final_model.ptz").read_bytes() == (seed / "final_model.ptz").read_bytes()
        metrics = json.loads((seed / "metrics.json").read_text())
        score = parse_log(proc.stdout)["score"]
        assert score["val_bpb"] == pytest.approx(metrics["val_bpb"], abs=1e-8), (score, metrics["val_bpb"])
    finally:
        (wd / "data/test_wiki_sp1024.moved").rename(wd / "data/test_wiki_sp1024")


def test_stride_change_reruns_only_evaluation(pipeline, tmp_path):
    """Runs for real (last in this module: it changes the results)."""
    s = overlay(tmp_path, "s", {"eval": {"eval_stride": 32}})
    configs = [*pipeline["base"], s]
    assert job_counts(snakemake(pipeline["wd"], "-n", configs=configs)) == {"evaluate": 2, "record": 1, "all": 1}
    proc = snakemake(pipeline["wd"], configs=configs)
    assert job_counts(proc) == {"evaluate": 2, "record": 1, "all": 1}
    m = json.loads((pipeline["wd"] / "results/test/seed_1/metrics.json").read_text())
    assert m["eval_stride"] == 32
    assert job_counts(snakemake(pipeline["wd"], "-n", configs=configs)) == {}
