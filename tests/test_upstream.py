"""Reproducing someone else's record (train.mode: upstream) through Snakemake on CPU, with a stand-in upstream-style
script written here; progress lines; the record's loss curves, README check and `snakemake --report`."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, env_with_venv, job_counts, snakemake

from pgolf.check import check_record
from pgolf.logs import parse_log
from pgolf.upstream import metrics_from_log, stream

pytestmark = pytest.mark.slow  # the pipeline end to end (minutes)

TEST_CONFIG = REPO / ".test" / "config.yaml"

# An upstream-style record script: one process trains, "quantizes" and "evaluates", reading SEED, DATA_PATH (a folder
# of fineweb_{train,val}_*.bin), TOKENIZER_PATH and ITERATIONS as upstream scripts do, and printing upstream log lines
# on rank 0. It imports a helper module from its own folder. Its numbers are a made-up function of the seed.
STAND_IN = """\
import glob
import os
from pathlib import Path

import helper

rank = int(os.environ.get("RANK", "0"))
world = int(os.environ.get("WORLD_SIZE", "1"))
seed = int(os.environ.get("SEED", "1337"))
data = os.environ["DATA_PATH"]
train = sorted(glob.glob(os.path.join(data, "fineweb_train_*.bin")))
val = sorted(glob.glob(os.path.join(data, "fineweb_val_*.bin")))
if not train or not val or not os.path.isfile(os.environ["TOKENIZER_PATH"]):
    raise SystemExit(f"no data in {data}")
iterations = int(os.environ.get("ITERATIONS", "20"))
if rank == 0:
    code = len(Path(__file__).read_bytes())
    print(f"world_size:{world} train_shards:{len(train)} val_shards:{len(val)}")
    print(f"seed:{seed}")
    for step in range(1, iterations + 1):
        print(f"step:{step}/{iterations} train_loss:{helper.loss(seed, step):.4f} train_time:{50 * step}ms "
              "step_avg:50.00ms")
    bpb, loss = helper.score(seed)
    print(f"step:{iterations}/{iterations} val_loss:{loss + 0.05:.4f} val_bpb:{bpb + 0.03:.4f} "
          f"train_time:{50 * iterations}ms step_avg:50.00ms")
    model = 400000 + 1000 * (seed % 5)
    print(f"Serialized model int6+zstd: {model} bytes")
    print(f"Code size: {code} bytes")
    print(f"Total submission size int6+zstd: {model + code} bytes")
    print(f"final_int6_roundtrip val_loss:{loss + 0.02:.4f} val_bpb:{bpb + 0.01:.4f} eval_time:300ms")
    print(f"final_int6_roundtrip_exact val_loss:{loss + 0.02:.8f} val_bpb:{bpb + 0.01:.8f}")
    print(f"final_int6_sliding_window val_loss:{loss:.4f} val_bpb:{bpb:.4f} stride:64 eval_time:700ms")
    print(f"final_int6_sliding_window_exact val_loss:{loss:.8f} val_bpb:{bpb:.8f}")
"""
HELPER = """\
def loss(seed, step):
    return 7.0 - 0.3 * step - 0.01 * (seed % 7)


def score(seed):
    bpb = 1.5 + 0.001 * (seed % 5)
    return bpb, bpb * 1.7
"""


def make_reference(folder: Path, seeds: list[int], iterations: int) -> Path:
    """An upstream-style record folder: the stand-in script, its helper, one log per seed as the script printed it
    (run here on a fake data folder), submission.json with the mean, a README."""
    folder.mkdir(parents=True)
    (folder / "train_gpt.py").write_text(STAND_IN)
    (folder / "helper.py").write_text(HELPER)
    fake = folder.parent / "fake_data"
    fake.mkdir()
    for name in ("fineweb_train_000000.bin", "fineweb_val_000000.bin", "tok.model"):
        (fake / name).write_bytes(b"")
    scores = {}
    for seed in seeds:
        env = {**os.environ, "SEED": str(seed), "DATA_PATH": str(fake), "TOKENIZER_PATH": str(fake / "tok.model")}
        env["ITERATIONS"] = str(iterations)
        out = subprocess.run(
            [sys.executable, "train_gpt.py"], cwd=folder, env=env, capture_output=True, text=True, check=True
        )
        (folder / f"train_seed{seed}.log").write_text(out.stdout)
        scores[seed] = parse_log(out.stdout)
    n = len(seeds)
    sub = {
        "author": "Stand-in",
        "github_id": "standin",
        "name": "Stand-in upstream record",
        "date": "2026-03-30",
        "blurb": "a stand-in for an upstream record",
        "val_bpb": round(sum(i["score"]["val_bpb"] for i in scores.values()) / n, 8),
        "val_loss": round(sum(i["score"]["val_loss"] for i in scores.values()) / n, 8),
        "bytes_total": max(i["bytes_total"] for i in scores.values()),
        "bytes_code": len(STAND_IN.encode()),
        "seeds": seeds,
    }
    (folder / "submission.json").write_text(json.dumps(sub, indent=2))
    (folder / "README.md").write_text(f"# Stand-in\n\n**val_bpb = {sub['val_bpb']:.8f}**\n")
    assert check_record(folder, min_seeds=n, enforce_time=False) == []
    return folder


def overlay(path: Path, obj: dict) -> Path:
    path.write_text(yaml.safe_dump(obj))
    return path


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    """The test pipeline in upstream mode, reproducing the stand-in reference record; then its HTML report."""
    root = tmp_path_factory.mktemp("upstream")
    ref = make_reference(root / "ref" / "2026-03-30_StandIn", [1, 2], iterations=8)
    wd = root / "wd"
    wd.mkdir()
    over = overlay(
        root / "upstream.yaml",
        {
            "run": "upstream_test",
            "train": {"mode": "upstream", "script": str(ref / "train_gpt.py"), "env": {"ITERATIONS": 8}},
            "record": {"name": "standin_repro", "reference": str(ref), "extra_files": [str(ref / "helper.py")]},
        },
    )
    configs = [TEST_CONFIG, over]
    proc = snakemake(wd, configs=configs)
    report = wd / "report.html"
    report_proc = snakemake(wd, "--report", str(report), configs=configs)
    return {"wd": wd, "ref": ref, "configs": configs, "proc": proc, "report": report, "report_proc": report_proc}


def test_upstream_mode_dry_run_on_the_production_config(tmp_path):
    script = tmp_path / "train_gpt.py"
    script.write_text(STAND_IN)
    over = overlay(tmp_path / "o.yaml", {"train": {"mode": "upstream", "script": str(script)}})
    counts = job_counts(snakemake(tmp_path, "-n", configs=[over]))
    assert counts == {"data": 1, "fa3": 1, "train_upstream": 3, "record": 1, "all": 1}


def test_upstream_pipeline_runs_one_rule_per_seed(upstream):
    assert job_counts(upstream["proc"]) == {"data": 1, "fa3": 1, "train_upstream": 2, "record": 1, "all": 1}
    assert job_counts(snakemake(upstream["wd"], "-n", configs=upstream["configs"])) == {}
    seed_dir = upstream["wd"] / "results/upstream_test/seed_1"
    assert not (seed_dir / "checkpoint.pt").exists() and not (seed_dir / "quantize.log").exists()
    links = sorted(p.name for p in (seed_dir / "upstream/pgolf_data").iterdir())
    assert "fineweb_val_000000.bin" in links and "fineweb_train_000000.bin" in links
    m = json.loads((seed_dir / "metrics.json").read_text())
    logged = parse_log(seed_dir / "train.log")
    assert m["mode"] == "upstream" and m["logs"] == ["train.log"] and m["seed"] == 1
    assert m["val_bpb"] == logged["score"]["val_bpb"] == 1.501 and m["sliding_val_bpb"] == 1.501
    assert m["roundtrip_val_bpb"] == 1.511 and m["pre_quant_val_bpb"] == 1.531 and m["eval_stride"] == 64
    assert m["steps"] == 8 and m["train_time_s"] == 0.4 and m["eval_time_s"] == 1.0
    assert m["bytes_total"] == m["artifact_bytes"] + m["code_bytes"] and m["code_bytes"] == len(STAND_IN.encode())
    # progress in the rule's log: step, loss, elapsed vs budget (none: the script got no MAX_WALLCLOCK_SECONDS, 600 s)
    rule_log = (upstream["wd"] / "logs/upstream_test/seed_1/train.log").read_text()
    assert "progress: step 8/8, loss 4.59, elapsed 0.4s of 600s budget, ETA 0s" in rule_log
    assert "torchrun --standalone --nproc_per_node=2 train_gpt.py" in rule_log


def test_upstream_record_reproduces_the_reference(upstream):
    record = upstream["wd"] / "records/track_non_record_16mb/2026-01-01_standin_repro"
    ref = upstream["ref"]
    names = {p.name for p in record.iterdir()} - {".snakemake_timestamp"}  # Snakemake's mark on directory outputs
    assert names == {
        "README.md",
        "submission.json",
        "train_gpt.py",
        "requirements.txt",
        "loss_curves.png",
        "helper.py",
        "train_seed1.log",
        "train_seed2.log",
    }
    assert (record / "train_gpt.py").read_bytes() == (ref / "train_gpt.py").read_bytes()
    assert (record / "helper.py").read_bytes() == (ref / "helper.py").read_bytes()
    assert (record / "loss_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for seed in (1, 2):  # the script's output, byte for byte, is the seed's log
        ours = (record / f"train_seed{seed}.log").read_bytes()
        assert ours == (upstream["wd"] / f"results/upstream_test/seed_{seed}/train.log").read_bytes()
        assert parse_log(ours.decode())["score"] == parse_log(ref / f"train_seed{seed}.log")["score"]
    sub = json.loads((record / "submission.json").read_text())
    assert sub["val_bpb"] == json.loads((ref / "submission.json").read_text())["val_bpb"]
    assert sub["seed_results"]["2"]["val_bpb"] == 1.502 and sub["comparison"]["improvement_bpb"] == 0.0
    readme = (record / "README.md").read_text()
    assert "## Comparison" in readme and "| 1 | 1.50100000 | 1.50100000 | +0.00000000 |" in readme
    assert "ITERATIONS=8 \\" in readme and "NUM_LAYERS" not in readme  # only train.env reaches the script
    proc = subprocess.run(
        ["pgolf", "check", str(record), "--min-seeds", "2"], capture_output=True, text=True, env=env_with_venv()
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    compare = subprocess.run(
        ["pgolf", "compare", str(record), str(ref)], capture_output=True, text=True, env=env_with_venv()
    )
    assert compare.returncode == 0 and "improvement of A over B: +0.000000 bpb" in compare.stdout


def test_tampered_record_readme_fails_the_check(upstream, tmp_path):
    record = upstream["wd"] / "records/track_non_record_16mb/2026-01-01_standin_repro"
    copy = tmp_path / "tampered"
    subprocess.run(["cp", "-r", str(record), str(copy)], check=True)
    readme = (copy / "README.md").read_text()
    assert "| 8 | 50.00 | 0.4 |" in readme
    (copy / "README.md").write_text(readme.replace("| 8 | 50.00 | 0.4 |", "| 9 | 50.00 | 0.4 |", 1))
    assert check_record(copy, min_seeds=2, enforce_time=False) == []  # a README number off: a warning ...
    assert check_record(copy, min_seeds=2, enforce_time=False, strict=True) == [  # ... that fails our own records
        "README.md: seed 1 steps 9 disagrees with the log (8)"
    ]


def test_report_html(upstream):
    report = upstream["report"]
    assert report.is_file() and report.stat().st_size > 10_000
    text = report.read_text(errors="replace")
    assert "loss_curves.png" in text and "seed_results.html" in text and "Parameter Golf run" in text
    table = (upstream["wd"] / "results/upstream_test/report/seed_results.html").read_text()
    assert "<td>1.50100000</td>" in table
    csv_lines = (upstream["wd"] / "results/upstream_test/report/seed_results.csv").read_text().splitlines()
    assert csv_lines[0].startswith("seed,steps,") and len(csv_lines) == 3


def test_metrics_from_log_refuses_incomplete_logs():
    info = parse_log("step:1/2 train_loss:5.0 train_time:10ms\n")
    with pytest.raises(ValueError, match="no final val_bpb line"):
        metrics_from_log(info, 1, "r", 1, "cpu", "train.log")
    info = parse_log("final_int6_roundtrip_exact val_loss:2.0 val_bpb:1.2\n")
    with pytest.raises(ValueError, match="no artifact size logged"):
        metrics_from_log(info, 1, "r", 1, "cpu", "train.log")
    info = parse_log(
        "seed:7\nTotal submission size int6+zstd: 5 bytes\nfinal_int6_roundtrip_exact val_loss:2 val_bpb:1\n"
    )
    with pytest.raises(ValueError, match="logged seed 7; does it read SEED"):
        metrics_from_log(info, 1, "r", 1, "cpu", "train.log")


def test_stream_echoes_output_with_progress(capfd):
    """`stream` (also the hook for the staged train step): output passes through, progress lines are added."""
    code = "print('step:5/10 train_loss:3.5 train_time:1000ms'); print('done'); raise SystemExit(3)"
    sink = io.BytesIO()
    assert stream([sys.executable, "-c", code], dict(os.environ), sink=sink, budget_s=0) == 3
    assert sink.getvalue() == b"step:5/10 train_loss:3.5 train_time:1000ms\ndone\n"
    assert capfd.readouterr().out.splitlines() == [
        "step:5/10 train_loss:3.5 train_time:1000ms",
        "progress: step 5/10, loss 3.5, elapsed 1.0s (no time budget), ETA 1s",
        "done",
    ]
    assert stream([sys.executable, "-c", "print('x')"], dict(os.environ)) == 0
