"""Faults a user on a rented pod hits, injected for real into the tiny `.test` pipeline: settings that must take
effect, files swapped or edited behind the pipeline's back, killed jobs, a full disk, bad configs. Each test fails on
the pipeline as it was before these checks existed (the issue "Nothing silent, nothing lost" lists the findings).

The pipeline runs once, in a copy of the repository's workflow files in a temporary folder (so that the copy can be
moved, edited and broken); each test that changes something works on a copy of that folder."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO, env_with_venv, job_counts

pytestmark = pytest.mark.slow

RUN = "results/test"
RECORD = "records/track_non_record_16mb/2026-01-01_pgolf_test"
TREE = ("Snakefile", "workflow", "config", "profiles", ".test", "demo", "environment.yml", "src/pgolf/train_gpt.py")


def snake(repo: Path, *args: str, configs=(), check: bool = True, cwd: Path | None = None, timeout: float = 900):
    """Snakemake on the repository copy ``repo`` (its own Snakefile, run in it, as a user does)."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile"), "-d", str(repo), "--cores", "2"]
    cmd += (
        ["--configfile", str(repo / ".test" / "config.yaml"), *map(str, configs), *args] if configs is not None else []
    )
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env_with_venv(), cwd=cwd or repo, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def overlay(folder: Path, name: str, obj: dict) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(obj))
    return path


def pgolf(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pgolf.cli", *args], capture_output=True, text=True, cwd=cwd, env=env or env_with_venv()
    )


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """The repository's workflow files copied into a folder, and the tiny pipeline run there once."""
    repo = tmp_path_factory.mktemp("faults") / "repo"
    for name in TREE:
        src, dst = REPO / name, repo / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst)
    snake(repo)
    return repo


@pytest.fixture
def repo(base, tmp_path) -> Path:
    """A copy of the finished pipeline folder (products and Snakemake's metadata), for a test to change."""
    dst = tmp_path / "repo"
    shutil.copytree(base, dst, symlinks=True)
    return dst


def record(repo: Path, hparams: dict, out: Path) -> subprocess.CompletedProcess:
    """`pgolf record` of the run's two seeds into ``out`` (a non-record: two seeds are enough)."""
    settings = {"track": "track_non_record_16mb", "name": "x", "min_seeds": 2, "author": "t", "github_id": "t"}
    args = [
        "record",
        "--run-dir",
        str(repo / RUN),
        "--seeds",
        "1",
        "2",
        "--script",
        str(repo / RECORD / "train_gpt.py"),
    ]
    args += ["--environment", str(repo / RUN / "env/environment.json"), "--settings-json", json.dumps(settings)]
    args += ["--hparams-json", json.dumps(hparams), "--nproc", "2", "--out", str(out)]
    return pgolf(*args, cwd=repo)


def sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# Settings that must take effect


def quantize(repo: Path, seed: int, section: dict, out: Path, code_file: Path | None = None, threads: int = 1):
    seed_dir = repo / RUN / f"seed_{seed}"
    train = json.loads((seed_dir / "train.json").read_text())["config"]["train"]["section"]
    args = [
        "quantize",
        "--script",
        str(repo / "src/pgolf/train_gpt.py"),
        "--checkpoint",
        str(seed_dir / "checkpoint.pt"),
    ]
    args += ["--seed", str(seed), "--train-summary", str(seed_dir / "train.json"), "--train-json", json.dumps(train)]
    args += ["--quantize-json", json.dumps(section), "--artifact", str(out / "a.ptz")]
    args += ["--summary", str(out / "q.json"), "--logfile", str(out / "q.log")]
    if code_file:
        args += ["--code-file", str(code_file)]
    env = {**env_with_venv(), "OMP_NUM_THREADS": str(threads)}
    proc = pgolf(*args, cwd=repo, env=env)
    return proc, (json.loads((out / "q.json").read_text()) if proc.returncode == 0 else None)


# every key of the quantize section: (settings for both runs, the change); level acts on zstd only, gptq_block (the
# lazy-batch width of GPTQ, the same rounding in exact arithmetic) only on speed, so its effect is the summary's record
QUANTIZE_CHANGES = {
    "quant_bits_matrix": ({}, 5),
    "quant_bits_mlp": ({}, 4),
    "quant_bits_embed": ({}, 7),
    "quant_keep_float_numel": ({}, 4096),
    "quant_clip_search": ({}, False),
    "gptq": ({}, False),
    "gptq_damp": ({}, 0.5),
    "compressor": ({}, "xz"),
    "quant_layout": ({}, "packed"),
    "compress_level": ({"compressor": "zstd"}, 3),
    "compress_chunk": ({}, 4096),
}
SETTINGS_ONLY = {"gptq_block": 16, "encode_sample_chunks": 0}  # encode_sample_chunks: the tiny payload is one chunk
OVER_CAP = ("quant_fit_mlp_bits", "prune_max_frac", "enforce_cap")  # act only over the cap: below


def test_every_quantize_key_changes_the_artifact(base, tmp_path):
    from pgolf.stages import QUANTIZE_ENV

    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["quantize"]
    cfg.update(yaml.safe_load((REPO / ".test" / "config.yaml").read_text()).get("quantize") or {})
    assert {*QUANTIZE_CHANGES, *SETTINGS_ONLY, *OVER_CAP} == set(QUANTIZE_ENV), "a quantize key without a test"

    def run(name: str, section: dict, code_file: Path | None = None):
        out = tmp_path / name
        out.mkdir()
        proc, summary = quantize(base, 1, section, out, code_file=code_file)
        return proc, summary, (sha(out / "a.ptz") if summary else None)

    for key, (context, value) in QUANTIZE_CHANGES.items():
        proc, ref, ref_sha = run(f"{key}_ref", {**cfg, **context})
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr
        proc, got, got_sha = run(key, {**cfg, **context, key: value})
        assert proc.returncode == 0, (key, proc.stdout[-2000:] + proc.stderr)
        assert got_sha != ref_sha, f"quantize.{key}={value!r} did not change the artifact"
        if key == "quant_bits_matrix":
            assert ref["quant_tag"].startswith("int6_") and got["quant_tag"].startswith("int5_")
    for key, value in SETTINGS_ONLY.items():
        proc, got, _ = run(key, {**cfg, key: value})
        assert proc.returncode == 0 and got["knobs"][key] == value

    # over the cap (a code file that leaves the model 3 kB too few): the MLP first drops to fit_mlp_bits, then pruning
    over = {**cfg, "compressor": "xz", "quant_layout": "plain", "enforce_cap": True, "prune_max_frac": 0.5}
    proc, plain, _ = run("plain", over)
    code = tmp_path / "code.py"
    code.write_bytes(b"#" * (16_000_000 - plain["artifact_bytes"] + 3_000))
    proc, fit, _ = run("fit", over, code)
    assert proc.returncode == 0 and fit["groups"]["mlp"]["bits"] == 5 and fit["prune_frac"] == 0.0
    proc, pruned, _ = run("quant_fit_mlp_bits", {**over, "quant_fit_mlp_bits": 0}, code)  # no int5 fit: pruning instead
    assert proc.returncode == 0 and pruned["groups"]["mlp"]["bits"] == 6 and pruned["prune_frac"] > 0
    proc, _, _ = run("prune_max_frac", {**over, "quant_fit_mlp_bits": 0, "prune_max_frac": 0.0001}, code)
    assert proc.returncode != 0 and "PRUNE_MAX_FRAC=0.0001" in proc.stdout + proc.stderr  # too little allowed
    proc, _, _ = run("enforced", {**over, "quant_fit_mlp_bits": 0, "prune_max_frac": 0.0}, code)
    assert proc.returncode != 0 and "artifact over the cap" in proc.stdout + proc.stderr
    proc, unenforced, _ = run(
        "enforce_cap", {**over, "quant_fit_mlp_bits": 0, "prune_max_frac": 0.0, "enforce_cap": False}, code
    )
    assert proc.returncode == 0 and unenforced["bytes_total"] > 16_000_000  # written, and flagged in the log
    assert "WARNING: artifact over the cap" in (tmp_path / "enforce_cap" / "q.log").read_text()


def evaluate(repo: Path, seed: int, section: dict, out: Path) -> tuple[subprocess.CompletedProcess, dict | None]:
    seed_dir = repo / RUN / f"seed_{seed}"
    q = json.loads((seed_dir / "quantize.json").read_text())["config"]["quantize"]
    args = ["evaluate", "--script", str(repo / "src/pgolf/train_gpt.py")]
    args += ["--data-manifest", str(repo / "data/test_wiki_sp1024/manifest.json")]
    args += ["--artifact", str(seed_dir / "final_model.ptz"), "--seed", str(seed), "--run", "test", "--nproc", "0"]
    args += ["--eval-json", json.dumps(section), "--quantize-json", json.dumps(q)]
    args += ["--train-summary", str(seed_dir / "train.json"), "--quantize-summary", str(seed_dir / "quantize.json")]
    args += ["--summary", str(out / "e.json"), "--logfile", str(out / "e.log"), "--metrics", str(out / "m.json")]
    proc = pgolf(*args, cwd=repo)
    return proc, (json.loads((out / "m.json").read_text()) if proc.returncode == 0 else None)


def test_every_eval_key_changes_what_evaluate_produces(base, tmp_path):
    from pgolf.stages import EVAL_ENV

    section = yaml.safe_load((REPO / ".test" / "config.yaml").read_text())["eval"]
    changes = {"eval_stride": 32, "eval_seq_len": 64, "eval_batch_seqs": 3, "val_tokens_limit": 4000}
    # score-first TTT: on (a chunk of 512 targets, so that several chunks train), then each setting against that
    ttt_on = {"ttt_epochs": 1, "ttt_chunk_tokens": 512}
    ttt_changes = {
        "ttt_epochs": 2,
        "ttt_lr": 0.02,
        "ttt_chunk_tokens": 256,
        "ttt_params": "blocks.0.",
        "ttt_reset_chunks": 2,
    }
    assert set(changes) | set(ttt_changes) == set(EVAL_ENV)
    (tmp_path / "ref").mkdir()
    proc, ref = evaluate(base, 1, section, tmp_path / "ref")
    assert proc.returncode == 0, proc.stderr
    for key, value in changes.items():
        (tmp_path / key).mkdir()
        proc, got = evaluate(base, 1, {**section, key: value}, tmp_path / key)
        assert proc.returncode == 0, (key, proc.stderr[-2000:])
        if key == "eval_batch_seqs":  # how many windows go through the model at once: the score stays, the summary says
            assert got["eval_batch_seqs"] == 3 and abs(got["val_bpb"] - ref["val_bpb"]) < 1e-6
        else:
            assert got["val_bpb"] != ref["val_bpb"], f"eval.{key}={value!r} did not change the score"
    (tmp_path / "ttt").mkdir()
    proc, ttt = evaluate(base, 1, {**section, **ttt_on}, tmp_path / "ttt")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert ttt["ttt"] == {**ttt_on, "ttt_lr": 0.002, "ttt_params": "", "ttt_reset_chunks": 0}
    assert ttt["sliding_val_bpb"] == ref["sliding_val_bpb"] and ttt["val_bpb"] == ttt["ttt_val_bpb"] != ref["val_bpb"]
    for key, value in ttt_changes.items():
        (tmp_path / f"ttt_{key}").mkdir()
        proc, got = evaluate(base, 1, {**section, **ttt_on, key: value}, tmp_path / f"ttt_{key}")
        assert proc.returncode == 0, (key, proc.stderr[-2000:])
        assert got["val_bpb"] != ttt["val_bpb"], f"eval.{key}={value!r} did not change the TTT score"
    # time_budget_s: a budget the scoring cannot meet fails the step and writes no metrics
    (tmp_path / "budget").mkdir()
    proc, got = evaluate(base, 1, {**section, "time_budget_s": 1e-6}, tmp_path / "budget")
    assert proc.returncode != 0 and "over the" in proc.stderr and got is None
    # a window longer than the validation split: refused, naming the key
    (tmp_path / "long").mkdir()
    proc, _ = evaluate(base, 1, {**section, "eval_seq_len": 4096, "val_tokens_limit": 1000}, tmp_path / "long")
    assert proc.returncode != 0 and "EVAL_SEQ_LEN=4096 is longer than the validation split" in proc.stdout


def test_bits_matrix_changes_the_staged_pipeline_s_record(repo, tmp_path):
    before = json.loads((repo / RECORD / "submission.json").read_text())
    assert before["quant_tag"].startswith("int6_")
    q = overlay(tmp_path, "q", {"quantize": {"quant_bits_matrix": 4}})
    proc = snake(repo, configs=[q])
    assert job_counts(proc) == {"quantize": 2, "evaluate": 2, "record": 1, "all": 1}
    after = json.loads((repo / RECORD / "submission.json").read_text())
    assert after["quant_tag"].startswith("int4_")
    for seed in ("1", "2"):
        assert after["seed_results"][seed]["artifact_sha256"] != before["seed_results"][seed]["artifact_sha256"]
        assert after["seed_results"][seed]["val_bpb"] != before["seed_results"][seed]["val_bpb"]


def test_quantize_log_names_its_seed_and_only_what_it_read(base):
    for seed in (1, 2):
        log = (base / RUN / f"seed_{seed}" / "quantize.log").read_text()
        assert f"stage:quantize seed:{seed}" in log
        assert "  quant_bits_matrix: 6" in log and "  matrix_lr:" not in log and "  eval_stride:" not in log


# ---------------------------------------------------------------------------------------------------------------
# Inputs and claims checked against the files


def test_a_typo_in_an_input_path_is_refused_even_when_products_exist(repo, tmp_path):
    bad = overlay(tmp_path, "bad", {"data": {"documents": {"path": "demo/wiki_vital_en.jsonl.xzz"}}})
    proc = snake(repo, "-n", configs=[bad], check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Nothing to be done" not in out
    assert "data.documents.path: demo/wiki_vital_en.jsonl.xzz not found" in out
    bad = overlay(tmp_path, "extra", {"record": {"extra_files": ["no/such/helper.py"]}})
    proc = snake(repo, "-n", configs=[bad], check=False)
    assert proc.returncode != 0 and "record.extra_files[0]: no/such/helper.py not found" in proc.stdout + proc.stderr


def test_demo_profile_with_a_configfile_keeps_the_demo(tmp_path):
    mine = overlay(tmp_path, "mine", {"seeds": [7]})
    cmd = [sys.executable, "-m", "snakemake", "-n", "--profile", "profiles/demo", "--configfile", str(mine)]
    cmd += ["-d", str(tmp_path / "wd")]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env_with_venv())
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "results/demo/seed_7/checkpoint.pt" in out  # the demo's run, with the overlay's seed
    assert "pgolf data --data-json" in out or "data/demo_wiki_sp1024/manifest.json" in out
    assert "results/demo/seed_1337" not in out and "sp1024_11L" not in out and "--nproc 8" not in out


def test_a_swapped_artifact_is_never_scored(repo):
    one, two = repo / RUN / "seed_1" / "final_model.ptz", repo / RUN / "seed_2" / "final_model.ptz"
    readme = (repo / RECORD / "README.md").read_bytes()
    shutil.copyfile(two, one)  # another seed's artifact (or another architecture's, or a 35 MB file)
    proc = snake(repo, check=False)
    assert proc.returncode != 0
    log = (repo / "logs/test/seed_1/evaluate.log").read_text()
    assert "final_model.ptz: not the artifact that quantize.json describes" in log
    assert (repo / RECORD / "README.md").read_bytes() == readme  # the record stays as it was
    big = repo / RUN / "seed_2" / "final_model.ptz"
    big.write_bytes(os.urandom(1 << 20))
    proc = record(repo, {}, repo / "records" / "x")
    assert proc.returncode != 0 and "final_model.ptz" in proc.stderr and "replaced after it was scored" in proc.stderr


def test_an_edited_checkpoint_is_refused_and_the_last_good_products_stay(repo):
    ckpt = repo / RUN / "seed_1" / "checkpoint.pt"
    artifact = repo / RUN / "seed_1" / "final_model.ptz"
    old = {
        p: p.read_bytes() for p in (artifact, artifact.with_name("quantize.json"), repo / RECORD / "submission.json")
    }
    with open(ckpt, "ab") as f:
        f.write(b"\0")
    proc = snake(repo, "--forcerun", "quantize", check=False)
    assert proc.returncode != 0
    assert (
        "checkpoint.pt: not the checkpoint that train.json describes"
        in (repo / "logs/test/seed_1/quantize.log").read_text()
    )
    for path, data in old.items():  # a failed forced re-run keeps the last good products
        assert path.read_bytes() == data, path


def test_a_failed_record_keeps_the_previous_record(repo, tmp_path):
    record = repo / RECORD
    old = {name: (record / name).read_bytes() for name in ("README.md", "submission.json")}
    strict = overlay(tmp_path, "strict", {"record": {"min_seeds": 3}})  # two seeds: the record fails its checks
    proc = snake(repo, configs=[strict], check=False)
    assert proc.returncode != 0
    for name, data in old.items():
        assert (record / name).read_bytes() == data, name
    assert job_counts(snake(repo, "-n", configs=[strict])) == {"record": 1, "all": 1}  # the plan shows what is missing


def test_a_checkpoint_of_an_earlier_config_is_never_quantized(repo, tmp_path):
    t = overlay(tmp_path, "t", {"train": {"iterations": 13}})
    # with the mtime trigger alone, Snakemake does not see the changed section: the step itself must
    proc = snake(repo, "--rerun-triggers", "mtime", "--forcerun", "quantize", configs=[t], check=False)
    assert proc.returncode != 0
    log = (repo / "logs/test/seed_1/quantize.log").read_text()
    assert "made with another train configuration" in log and "iterations: 12 -> 13" in log
    # the failed quantize shows again in the plan (with what follows it): let it finish under the config it had
    assert job_counts(snake(repo, "--rerun-triggers", "mtime")).get("quantize", 0) >= 1
    e = overlay(tmp_path, "e", {"eval": {"eval_stride": 32}})
    proc = snake(repo, "--rerun-triggers", "mtime", "--forcerun", "record", configs=[e], check=False)
    assert proc.returncode != 0
    assert "ran under another eval configuration" in (repo / "logs/test/record.log").read_text()


def test_a_moved_repository_re_runs_nothing_and_logs_name_no_absolute_path(repo, tmp_path):
    moved = tmp_path / "elsewhere" / "pgolf"
    moved.parent.mkdir()
    shutil.move(repo, moved)
    pod = yaml.safe_load((REPO / "profiles" / "pod" / "config.yaml").read_text())
    assert job_counts(snake(moved, "-n", "--rerun-triggers", *pod["rerun-triggers"])) == {}
    for log in (moved / RECORD).glob("train_seed*.log"):
        text = log.read_text()
        assert "/pytest-" not in text and "/home/" not in text and "/root/" not in text, log


def test_secrets_in_train_env_are_never_published(base, tmp_path):
    out = tmp_path / "rec"
    hparams = {"NUM_LAYERS": "2", "HF_TOKEN": "hf_s3cr3t", "WANDB_API_KEY": "k3y"}
    proc = record(base, hparams, out)
    assert proc.returncode == 0, proc.stderr
    text = "".join(p.read_text(errors="replace") for p in out.iterdir() if p.suffix in (".md", ".json", ".log"))
    assert "NUM_LAYERS" in text and "hf_s3cr3t" not in text and "k3y" not in text
    from pgolf.stages import is_secret

    assert [n for n in ("TOKENIZER_PATH", "VAL_TOKENS_LIMIT", "HF_TOKEN", "AWS_SECRET_ACCESS_KEY") if is_secret(n)] == [
        "HF_TOKEN",
        "AWS_SECRET_ACCESS_KEY",
    ]


# ---------------------------------------------------------------------------------------------------------------
# Bad configs refused before any job


def test_a_yaml_syntax_error_names_the_file_and_the_line(repo):
    cfg = repo / "config" / "config.yaml"
    cfg.write_text(cfg.read_text().replace("  iterations: 9000\n", "  iterations: [9000\n", 1))
    proc = snake(repo, "-n", check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert f"{cfg}:" in out and "YAML syntax error" in out


def test_a_model_shape_that_cannot_work_is_refused_before_any_job(repo, tmp_path):
    bad = overlay(tmp_path, "bad", {"train": {"num_heads": 3}})
    proc = snake(repo, "-n", configs=[bad], check=False)
    assert (
        proc.returncode != 0
        and "train.model_dim=64 is not a multiple of train.num_heads=3" in proc.stdout + proc.stderr
    )
    bad = overlay(tmp_path, "bad2", {"train": {"train_batch_tokens": 2000}})
    proc = snake(repo, "-n", configs=[bad], check=False)
    assert proc.returncode != 0 and "train.train_batch_tokens=2000 does not split" in proc.stdout + proc.stderr


# ---------------------------------------------------------------------------------------------------------------
# Killed jobs, concurrent runs, a full disk


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit() and int(p.name) != os.getpid():
            try:
                if text in (p / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(p.name))
            except OSError:
                continue
    return pids


def _wait_for(cond, timeout: float) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return True
        time.sleep(0.25)
    return cond()


def test_killing_snakemake_kills_its_training_and_a_seed_never_trains_twice(repo, tmp_path):
    long = overlay(tmp_path, "long", {"train": {"iterations": 100000, "train_log_every": 1}})
    cmd = [sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile"), "-d", str(repo), "--cores", "2"]
    cmd += ["--configfile", str(repo / ".test" / "config.yaml"), str(long), "--forcerun", f"{RUN}/seed_1/checkpoint.pt"]
    cmd += ["--", f"{RUN}/seed_1/checkpoint.pt"]
    snakemake = subprocess.Popen(
        cmd, cwd=repo, env=env_with_venv(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    step_log = repo / "logs/test/seed_1/train.log"
    try:
        assert _wait_for(lambda: step_log.exists() and "step:3/100000" in step_log.read_text(), 120), "no training"
        job = f"{RUN}/seed_1/checkpoint.pt"  # in the command lines of the shell, pgolf, torchrun and its ranks
        assert len(_processes_mentioning(job)) >= 4
        os.kill(snakemake.pid, signal.SIGKILL)
        snakemake.wait()
        assert _wait_for(lambda: not _processes_mentioning(job), 30), f"orphans live: {_processes_mentioning(job)}"
    finally:
        for pid in _processes_mentioning(f"{RUN}/seed_1/checkpoint.pt"):
            os.kill(pid, signal.SIGKILL)
    assert not (repo / RUN / "seed_1" / "checkpoint.pt.partial").exists()
    # a second run of the same seed's training while one holds the seed's lock is refused, naming the holder
    lock = repo / RUN / "seed_1" / ".train.json.lock"
    with open(lock, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.truncate(0)
        f.write("pid 4242, started earlier")
        f.flush()
        snake(repo, "--unlock", check=False)
        proc = snake(repo, "--rerun-incomplete", "--forcerun", f"{RUN}/seed_1/checkpoint.pt", check=False)
        assert proc.returncode != 0
        assert "is already running (pid 4242" in (repo / "logs/test/seed_1/train.log").read_text()
    snake(
        repo, "--rerun-incomplete"
    )  # the lock released, the pipeline finishes; the published log starts with the header
    published = (repo / RECORD / "train_seed1.log").read_text()
    assert published.startswith("Running Python") or published.startswith("=" * 20), published[:200]


def test_killing_the_data_step_leaves_no_encoder_workers(tmp_path):
    from pgolf.data import train_tokenizer

    model = train_tokenizer(REPO / "demo" / "wiki_vital_en.jsonl.xz", tmp_path / "tok", vocab_size=512, max_docs=200)
    big = tmp_path / "docs.jsonl"
    line = json.dumps({"text": "The quick brown fox jumps over the lazy dog. " * 20})
    big.write_text((line + "\n") * 20000)
    call = f"d({str(big)!r}, {str(model)!r}, {str(tmp_path / 'out')!r}, 'x', 10, threads=2, chunk_docs=10)"
    cmd = [sys.executable, "-c", f"from pgolf.data import docs_to_shards as d; {call}"]
    proc = subprocess.Popen(cmd, env=env_with_venv())

    def descendants() -> list[int]:
        kids, frontier = [], [proc.pid]
        while frontier:
            parent = frontier.pop()
            for p in Path("/proc").iterdir():
                if p.name.isdigit():
                    try:
                        stat = (p / "stat").read_text()
                    except OSError:
                        continue
                    if int(stat[stat.rindex(")") + 2 :].split()[1]) == parent:
                        kids.append(int(p.name))
                        frontier.append(int(p.name))
        return kids

    assert _wait_for(lambda: len(descendants()) >= 2, 60), "no workers started"  # 2 encoders (+ resource tracker)
    time.sleep(3)  # every worker started
    workers = descendants()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    def alive() -> list[int]:
        out = []
        for pid in workers:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state != "Z":
                out.append(pid)
        return out

    assert _wait_for(lambda: not alive(), 20), f"workers left: {alive()}"


@pytest.fixture
def tiny_disk(tmp_path):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)]).returncode:
        pytest.skip("mounting a small tmpfs needs root (the disk-full test fills a 64 kB file system)")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)])


def test_a_full_disk_names_the_file_and_leaves_no_temporary(base, tiny_disk, tmp_path):
    seed_dir = base / RUN / "seed_1"
    ckpt = torch.load(seed_dir / "checkpoint.pt", weights_only=True)
    code = f"""
import sys, torch, importlib.util
spec = importlib.util.spec_from_file_location("s", {str(base / "src/pgolf/train_gpt.py")!r})
mod = importlib.util.module_from_spec(spec); sys.modules["s"] = mod; spec.loader.exec_module(mod)
obj = torch.load({str(seed_dir / "checkpoint.pt")!r}, weights_only=True)
mod.write_atomic({str(tiny_disk / "checkpoint.pt")!r}, lambda f: torch.save(obj, f), "checkpoint")
"""
    assert len(ckpt["state_dict"]) > 0
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env_with_venv())
    assert proc.returncode != 0
    assert f"{tiny_disk / 'checkpoint.pt'}: could not write the checkpoint: no space left on device" in proc.stderr
    assert list(tiny_disk.iterdir()) == []  # no temporary file left behind


# ---------------------------------------------------------------------------------------------------------------
# Trust, round two (issue 29): a record claims nothing its files do not prove; a failed step costs no good product


def _plan(repo: Path, *args: str, configs=()) -> dict:
    return job_counts(snake(repo, "-n", *args, configs=configs))


def test_a_partial_validation_score_is_never_a_record(repo, tmp_path):
    readme = (repo / RECORD / "README.md").read_bytes()
    for seed in (1, 2):  # the script states what it scored: here the whole split
        log = (repo / RUN / f"seed_{seed}" / "eval.log").read_text()
        scope = re.search(
            r"val_scope: scored_tokens:(\d+) scored_bytes:(\d+) split_tokens:(\d+) split_bytes:(\d+)", log
        )
        assert scope and scope[1] == scope[3] and scope[2] == scope[4], log[-2000:]
    limited = overlay(tmp_path, "limited", {"eval": {"val_tokens_limit": 2048}})
    proc = snake(repo, configs=[limited], check=False)
    assert proc.returncode != 0
    log = (repo / "logs/test/record.log").read_text()
    assert "a partial validation score: 2,048 of the split's 8,590 tokens" in log, log[-3000:]
    assert "val_scope: scored_tokens:2048 " in (repo / RUN / "seed_1" / "eval.log").read_text()
    assert (repo / RECORD / "README.md").read_bytes() == readme  # the previous record stays


def test_a_linked_data_folder_publishes_the_repository_s_own_paths(repo, tmp_path):
    volume = tmp_path / "vol"
    volume.mkdir()
    shutil.move(repo / "data", volume / "x")
    (repo / "data").symlink_to(volume / "x")
    snake(repo, "--forcerun", "evaluate")
    for name in ("train_seed1.log", "train_seed2.log", "README.md"):
        text = (repo / RECORD / name).read_text()
        assert str(volume) not in text and "/x/" not in text, name
    readme = (repo / RECORD / "README.md").read_text()
    # the reproducing command names upstream's data layout, relative to the record folder in an upstream clone
    assert "TOKENIZER_PATH=../../../data/tokenizers/tokenizer_sp1024.model" in readme


def test_text_fields_are_escaped_and_an_impossible_date_is_refused(base, tmp_path):
    settings = {"author": "<script>alert(1)</script>", "blurb": "# Big\n- [click](javascript:x) **now** | a"}
    proc = record_with(base, tmp_path / "rec", settings)
    assert proc.returncode == 0, proc.stderr
    readme = (tmp_path / "rec" / "README.md").read_text()
    assert "<script>" not in readme and "&lt;script&gt;alert(1)&lt;/script&gt;" in readme
    assert "\\# Big - \\[click\\](javascript:x) \\*\\*now\\*\\* \\| a" in readme
    proc = record_with(base, tmp_path / "bad", {"date": "2026-13-45"})
    assert proc.returncode != 0 and "record.date: '2026-13-45' is not a date" in proc.stderr
    bad = overlay(tmp_path, "date", {"record": {"date": "2026-13-45"}})
    proc = snake(base, "-n", configs=[bad], check=False)
    assert proc.returncode != 0 and "record.date: '2026-13-45' is not a date" in proc.stdout + proc.stderr


def record_with(repo: Path, out: Path, extra: dict) -> subprocess.CompletedProcess:
    """`pgolf record` of the run's seeds into ``out`` with ``extra`` record settings (the staged mode's options)."""
    settings = {"track": "track_non_record_16mb", "name": "x", "min_seeds": 2, "date": "2026-01-01", "github_id": "t"}
    settings.update(extra)
    seeds = [repo / RUN / f"seed_{s}" for s in (1, 2)]
    args = ["record", "--metrics", *[str(s / "metrics.json") for s in seeds]]
    args += ["--logs", *[str(s / f"{part}.log") for s in seeds for part in ("train", "quantize", "eval")]]
    args += ["--artifacts", *[str(s / "final_model.ptz") for s in seeds]]
    args += ["--script", str(repo / RUN / "ship/train_gpt.py"), "--human-script", str(repo / "src/pgolf/train_gpt.py")]
    args += ["--environment", str(repo / RUN / "env/environment.json"), "--settings-json", json.dumps(settings)]
    args += ["--hparams-json", json.dumps({"NUM_LAYERS": "2"}), "--nproc", "2", "--out", str(out)]
    args += ["--data-manifest", str(repo / "data/test_wiki_sp1024/manifest.json")]
    return pgolf(*args, cwd=repo)


def test_the_blurb_describes_the_run_s_own_settings(base):
    sub = json.loads((base / RECORD / "submission.json").read_text())
    assert sub["blurb"].startswith("2 layers, width 64, 2 heads / 1 KV heads"), sub["blurb"]
    assert "11 layers" not in sub["blurb"] and "XSA on the last 1" in sub["blurb"]
    assert sub["blurb"] in (base / RECORD / "README.md").read_text()


def test_a_failed_data_or_fa3_step_keeps_its_products_and_shows_again(repo, tmp_path):
    manifest = repo / "data/test_wiki_sp1024/manifest.json"
    kept = {p: p.read_bytes() for p in (manifest, repo / RUN / "env/fa3.json", repo / RUN / "env/environment.json")}
    (repo / "empty.jsonl").write_text("")
    empty = overlay(tmp_path, "empty", {"data": {"documents": {"path": "empty.jsonl"}}})
    proc = snake(repo, configs=[empty], check=False)
    assert proc.returncode != 0 and "empty.jsonl" in (repo / "logs/data/test_wiki_sp1024.log").read_text()
    assert manifest.read_bytes() == kept[manifest]  # the last good manifest stays
    assert _plan(repo, configs=[empty]).get("data") == 1  # and the plan shows the step that failed
    assert _plan(repo).get("data") == 1  # reverted: the data step (and what follows it) shows too
    required = overlay(tmp_path, "required", {"fa3": {"enabled": True, "required": True}})  # no CUDA here
    proc = snake(repo, "--forcerun", "fa3", "--until", "fa3", configs=[required], check=False)
    assert proc.returncode != 0 and "required" in (repo / "logs/test/fa3.log").read_text()
    for path, data in kept.items():
        assert path.read_bytes() == data, path
    assert _plan(repo, configs=[required]).get("fa3") == 1


def test_a_record_rebuild_keeps_what_a_user_added(repo):
    folder = repo / RECORD
    (folder / "NOTES.md").write_text("my notes\n")
    (folder / "figures").mkdir()
    (folder / "figures" / "ablation.png").write_bytes(b"\x89PNG fake")
    (folder / "train_seed9.log").write_text("an old seed's log: the record's own kind of file, replaced\n")
    snake(repo, "--forcerun", "record")
    assert (folder / "NOTES.md").read_text() == "my notes\n"
    assert (folder / "figures" / "ablation.png").read_bytes() == b"\x89PNG fake"
    assert not (folder / "train_seed9.log").exists()
    assert "kept what was added to the record folder: NOTES.md, figures" in (repo / "logs/test/record.log").read_text()


def test_two_runs_with_one_record_name_are_refused(repo, tmp_path):
    other = overlay(tmp_path, "other", {"run": "sweep_b"})
    proc = snake(repo, "-n", configs=[other], check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "is the record of run 'test', not of this run 'sweep_b'" in out
    # pgolf record itself refuses it too (a folder written by hand or by another pipeline)
    sub = repo / RECORD / "submission.json"
    sub.write_text(sub.read_text().replace('"run": "test"', '"run": "sweep_a"'))
    proc = record_with(repo, repo / RECORD, {"name": "pgolf_test"})
    assert proc.returncode != 0 and "is the record of run 'sweep_a', not of this run 'test'" in proc.stderr


def test_nothing_left_to_prune_names_the_cap_the_bytes_and_the_setting(base, tmp_path):
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["quantize"]
    section = {**cfg, "quant_keep_float_numel": 10**9, "quant_fit_mlp_bits": 0, "compressor": "xz"}
    section.update(quant_layout="plain", encode_sample_chunks=0)
    code = tmp_path / "code.py"
    code.write_bytes(b"#" * 15_990_000)  # the all-float model no longer fits beside it
    (tmp_path / "q").mkdir()
    proc, _ = quantize(base, 1, section, tmp_path / "q", code_file=code)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "torch.cat" not in out, out[-3000:]
    assert "> 16000000 bytes; none to prune: lower QUANT_KEEP_FLOAT_NUMEL" in out and "code 15990000 + model" in out


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mnt)]).returncode:
        pytest.skip("mounting a small tmpfs needs root (the test fills a 600 kB file system)")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)])


def test_a_full_disk_in_the_data_step_names_the_file_and_the_free_space(small_disk):
    section = {"source": "documents", "name": "t", "documents": {"path": "demo/wiki_vital_en.jsonl.xz"}}
    section["documents"].update(vocab_size=1024, val_docs=40, shard_tokens=50000, max_docs=2000)
    args = ["data", "--data-json", json.dumps(section), "--root", str(REPO), "--out", str(small_disk / "t")]
    proc = pgolf(*args, "--threads", "1", cwd=REPO)  # the shards outgrow the disk
    assert proc.returncode != 0
    assert re.search(
        rf"{small_disk}/t/t_train_\d+\.bin: could not write the file: no space left on device \([\d,]+ bytes free",
        proc.stderr,
    ), proc.stderr
    assert not [p for p in (small_disk / "t").iterdir() if p.name.endswith(".tmp")]
    shutil.rmtree(small_disk / "t")
    (small_disk / "fill").write_bytes(b"\0" * 400_000)  # the tokenizer does not fit: not the documents' fault
    proc = pgolf(*args, "--threads", "1", cwd=REPO)
    assert proc.returncode != 0 and "SentencePiece training failed" not in proc.stderr
    assert f"{small_disk}/t/tokenizer_sp1024.model: could not write the tokenizer: no space left" in proc.stderr


def test_a_seed_beyond_numpy_s_range_is_refused_by_the_schema(base, tmp_path):
    big = overlay(tmp_path, "big", {"seeds": [4294967296]})
    proc = snake(base, "-n", configs=[big], check=False)
    assert proc.returncode != 0 and "4294967296 is greater than the maximum of 4294967295" in proc.stdout + proc.stderr
    assert _plan(base, configs=[overlay(tmp_path, "max", {"seeds": [4294967295]})]).get("train") == 1


def test_a_window_longer_than_the_split_is_refused_before_any_job(base, tmp_path):
    long = overlay(tmp_path, "long", {"eval": {"eval_seq_len": 100000}})
    proc = snake(base, "-n", configs=[long], check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "eval.eval_seq_len=100000 is longer than the validation split: 8,589" in out
    short = overlay(tmp_path, "short", {"eval": {"val_tokens_limit": 100}})  # the window outgrows the limit
    proc = snake(base, "-n", configs=[short], check=False)
    assert proc.returncode != 0 and "eval.eval_seq_len=128 is longer than the validation split (its first" in (
        proc.stdout + proc.stderr
    )


def test_a_yaml_error_in_an_overlay_is_named_with_its_line_and_column(tmp_path):
    """Snakemake 9 reads --configfile files itself, before the Snakefile (ConfigSettings.__post_init__), and says only
    "not valid JSON or YAML": no workflow code runs first. `pgolf config` names the file, line and column."""
    bad = tmp_path / "sweep.yaml"
    bad.write_text("run: sweep\nseeds: [1, 2\ntrain: {iterations: 5}\n")
    proc = pgolf("config", str(bad), cwd=REPO)
    assert proc.returncode == 1 and f"{bad}:3:6: YAML syntax error" in proc.stdout, proc.stdout + proc.stderr
    big = overlay(tmp_path, "big", {"seeds": [4294967296], "record": {"date": 5}})
    proc = pgolf("config", str(REPO / ".test/config.yaml"), str(big), cwd=REPO)
    assert proc.returncode == 1 and "config seeds.0: 4294967296 is greater than the maximum" in proc.stdout
    assert "config record.date: 5 is not of type" in proc.stdout
    proc = pgolf("config", str(REPO / ".test/config.yaml"), cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _steps_in(repo: Path, text: str) -> list[int]:
    """The processes of ``repo`` (their working folder) whose command line holds ``text``."""
    out = []
    for pid in _processes_mentioning(text):
        try:
            if Path(f"/proc/{pid}/cwd").resolve() == repo.resolve():
                out.append(pid)
        except OSError:
            continue
    return out


def test_a_killed_forced_quantize_shows_again_in_the_next_plan(repo):
    cmd = [sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile"), "-d", str(repo), "--cores", "2"]
    cmd += ["--configfile", str(repo / ".test" / "config.yaml"), "--forcerun", "quantize"]
    snakemake = subprocess.Popen(
        cmd, cwd=repo, env=env_with_venv(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        assert _wait_for(lambda: _steps_in(repo, "quantize --script"), 120), "quantize never started"
        for pid in _steps_in(repo, "quantize --script"):  # the job dies (an OOM kill, a preempted node)
            os.kill(pid, signal.SIGKILL)
        snakemake.wait(timeout=120)
    finally:
        if snakemake.poll() is None:
            snakemake.kill()
            snakemake.wait()
    assert snakemake.returncode != 0
    plan = _plan(repo)  # no config change: the forced job that failed is planned again, with what follows it
    assert plan.get("quantize", 0) >= 1 and plan.get("evaluate", 0) >= 1 and plan.get("record") == 1, plan


# Faults of our own, found by trying as a user on a rented pod or a cluster would


def test_a_linked_folder_whose_volume_is_gone_is_refused_before_any_job(repo, tmp_path):
    volume = tmp_path / "vol"
    volume.mkdir()
    shutil.move(repo / "results", volume / "results")
    (repo / "results").symlink_to(volume / "results")
    assert _plan(repo) == {}
    shutil.rmtree(volume)  # a new pod: the network volume not mounted (yet)
    proc = snake(repo, "-n", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and f"results/ is a link to {volume / 'results'}, which does not exist" in out


def test_a_folder_given_for_a_file_is_refused_naming_the_key(base, tmp_path):
    script = overlay(tmp_path, "script", {"train": {"script": "src/pgolf"}})
    proc = snake(base, "-n", configs=[script], check=False)
    assert proc.returncode != 0 and "config train.script: src/pgolf is a folder" in proc.stdout + proc.stderr
    docs = overlay(tmp_path, "docs", {"data": {"documents": {"path": "demo"}}})
    proc = snake(base, "-n", configs=[docs], check=False)
    assert proc.returncode != 0 and "config data.documents.path: demo is a folder" in proc.stdout + proc.stderr


def test_a_run_re_invoked_after_midnight_keeps_its_record_folder(repo, tmp_path):
    today = overlay(tmp_path, "today", {"record": {"date": None}})  # date null: today, unless the run has a folder
    assert _plan(repo, configs=[today]) == {}
    assert sorted(p.name for p in (repo / RECORD).parent.iterdir()) == ["2026-01-01_pgolf_test"]
