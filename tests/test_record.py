"""check_record on the upstream fixtures (and tampered copies), build_record on synthetic seed results, the CLI."""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import stat
from pathlib import Path

import pytest
from conftest import APRIL, MARCH, NAIVE, fixture

from pgolf import readme, record
from pgolf.check import check_record, close, seed_logs, tolerance
from pgolf.logs import parse_log
from pgolf.record import build_record


def writable_copy(name: str, tmp_path: Path) -> Path:
    """Copy a (read-only) fixture folder into tmp_path and make the copy writable."""
    dst = tmp_path / name
    shutil.copytree(fixture(name), dst)
    for path in [dst, *dst.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)
    return dst


def found(d: Path, **kw) -> list[str]:
    """check_record's violations and warnings (strict), without the quoted log lines."""
    return [re.sub(r" \[line .*\]$", "", p) for p in check_record(d, require_script=False, strict=True, **kw)]


def new_findings(name: str, d: Path, **kw) -> list[str]:
    """What a tampered copy ``d`` of fixture ``name`` adds to the fixture's own findings."""
    base = found(fixture(name), **kw)
    return [p for p in found(d, **kw) if p not in base]


# ----------------------------------------------------------------------------------------------------------------
# check_record on the upstream fixtures


def test_three_seed_fixtures_pass():
    assert check_record(fixture(MARCH), min_seeds=3, require_script=False) == []


def test_april_fixture_is_over_the_train_budget_once_calibration_counts():
    """The 1.0611 record's seed-42 loop ended at 599,592 ms, then read training data for 4.7 s of GPTQ Hessians."""
    problems = check_record(fixture(APRIL), min_seeds=3, require_script=False)
    assert len(problems) == 3 and all("of calibration on training data" in p for p in problems)
    seed42 = next(p for p in problems if p.startswith("train_seed42.log"))
    assert seed42.startswith("train_seed42.log: train time 604292 ms = 599592 ms of training + 4700 ms")
    assert "GPTQ:collected 67 Hessians in 4.7s" in seed42


def test_naive_baseline_passes_with_one_seed():
    assert check_record(fixture(NAIVE), min_seeds=1, require_script=False) == []
    problems = check_record(fixture(NAIVE), min_seeds=3, require_script=False)
    assert problems == ["only 1 seed(s) with a score (1337); the track_10min_16mb track asks for at least 3"]


def test_fixtures_lack_the_script():
    assert "missing train_gpt.py (no training script in the folder)" in check_record(fixture(MARCH), min_seeds=3)


def test_seed_mapping():
    by_seed, logs, _ = seed_logs(fixture(MARCH))
    assert sorted(by_seed) == [42, 1337, 2025] and len(logs) == 4
    assert by_seed[1337][0].name == "train_seed1337.log"
    by_seed, _, _ = seed_logs(fixture(NAIVE))
    assert list(by_seed) == [1337] and by_seed[1337][0].name == "train.log"


def test_tolerance_rule():
    assert tolerance(1.1248) == pytest.approx(1e-4)
    assert tolerance(1.12484502) == pytest.approx(2e-8)
    assert tolerance(1.2243657) == pytest.approx(1e-7)
    assert close(1.0611, 1.06107587) and not close(1.0600, 1.06107587)
    assert close(1.06107587, (1.05989454 + 1.06124613 + 1.06208695) / 3)


def test_tampered_val_bpb_fails(tmp_path):
    d = writable_copy(APRIL, tmp_path)
    sub = json.loads((d / "submission.json").read_text())
    sub["val_bpb"] = 1.0500
    (d / "submission.json").write_text(json.dumps(sub))
    problems = new_findings(APRIL, d)
    assert len(problems) == 1
    assert problems[0].startswith("submission.json: val_bpb 1.05 is shown by no log")


def test_tampered_seed_result_fails(tmp_path):
    d = writable_copy(APRIL, tmp_path)
    sub = json.loads((d / "submission.json").read_text())
    sub["seed_results"]["0"]["val_loss"] = 2.3
    sub["seed_results"]["1234"]["artifact_bytes"] += 1
    (d / "submission.json").write_text(json.dumps(sub))
    problems = new_findings(APRIL, d)
    assert any(p.startswith("submission.json: seed_results[0].val_loss 2.3 disagrees") for p in problems)
    assert any(p.startswith("submission.json: seed_results[1234].artifact_bytes 15907551") for p in problems)


def test_tampered_steps_times_and_std_fail(tmp_path):
    d = writable_copy(APRIL, tmp_path)
    sub = json.loads((d / "submission.json").read_text())
    sub["seed_results"]["42"]["steps"] = 4950
    sub["seed_results"]["0"]["eval_time_s"] = 400.0
    sub["seed_results"]["1234"]["step_avg_ms"] = 99.0  # not checked: the log prints no step_avg
    sub["val_bpb_std"] = 0.0005
    (d / "submission.json").write_text(json.dumps(sub))
    assert new_findings(APRIL, d) == [
        "submission.json: val_bpb_std 0.0005 is neither the sample (0.00110608) nor the population (0.00090311) std "
        "of the logged seeds",
        "submission.json: seed_results[42].steps 4950 disagrees with the log (4945)",
        "submission.json: seed_results[0].eval_time_s 400.0 disagrees with the log (455.1)",
    ]
    d = writable_copy(MARCH, tmp_path / "m")
    sub = json.loads((d / "submission.json").read_text())
    sub["pre_quant_val_bpb"] = 1.1318
    (d / "submission.json").write_text(json.dumps(sub))
    assert new_findings(MARCH, d) == [
        "submission.json: pre_quant_val_bpb 1.1318 matches neither the mean over seeds (1.14190000) nor any seed's "
        "logged value (1.1418, 1.1421, 1.1418)"
    ]


def test_train_time_over_budget_fails(tmp_path):
    d = writable_copy(MARCH, tmp_path)
    with open(d / "train_seed42.log", "a") as f:
        f.write("stopping_early: wallclock_cap train_time:700000ms step:7061/9000\n")
    problems = check_record(d, require_script=False)
    assert len(problems) == 1 and problems[0].startswith("train_seed42.log: train time 700000 ms (allowing 198 ms")
    assert "line 150: stopping_early: wallclock_cap train_time:700000ms step:7061/9000" in problems[0]
    assert check_record(d, require_script=False, enforce_time=False) == []


def test_gptq_hessian_collection_counts_against_the_train_budget(tmp_path):
    d = writable_copy(MARCH, tmp_path)
    assert check_record(d, require_script=False) == []
    loop_ms = parse_log(d / "train_seed42.log")["train_time_ms"]  # the timed loop ended at the cap
    with open(d / "train_seed42.log", "a") as f:  # and then the Hessians were collected from training data
        f.write("gptq_hessians: layers:44 tokens:786432 time:9.50s gptq_reserve_s:10.0\n")
    problems = check_record(d, require_script=False)
    assert len(problems) == 1
    assert problems[0].startswith(
        f"train_seed42.log: train time {loop_ms + 9500:.0f} ms = {loop_ms:.0f} ms of training + 9500 ms of calibration"
    )


def test_eval_time_over_budget_fails(tmp_path):
    d = writable_copy(APRIL, tmp_path)
    with open(d / "train_seed0.log", "a") as f:
        f.write("total_eval_time:612.5s\n")
    assert new_findings(APRIL, d) == [
        "train_seed0.log: eval time 612.5 s exceeds the 600 s budget",
        "submission.json: seed_results[0].eval_time_s 455.1 disagrees with the log (612.5)",
    ]


def test_artifact_over_cap_fails(tmp_path):
    d = writable_copy(MARCH, tmp_path)
    log = d / "train_seed42.log"
    text = log.read_text()
    text = text.replace("Serialized model int6+zstd: 15461049 bytes", "Serialized model int6+zstd: 15932384 bytes")
    text = text.replace(
        "Total submission size int6+zstd: 15528666 bytes", "Total submission size int6+zstd: 16000001 bytes"
    )
    log.write_text(text)
    assert new_findings(MARCH, d) == [
        "train_seed42.log: code + model = 16000001 bytes, over the 16000000-byte cap",
        # the README's reproducibility table still shows the untampered size
        "README.md: seed 42 artifact bytes 15528666 disagrees with the log (15932384 or 16000001)",
    ]


def test_missing_files_seeds_and_big_files(tmp_path):
    d = writable_copy(MARCH, tmp_path)
    (d / "README.md").unlink()
    (d / "train_seed1337.log").unlink()
    with open(d / "blob.bin", "wb") as f:
        f.truncate(50_000_001)
    problems = check_record(d, require_script=False)
    assert "missing README.md" in problems
    assert "only 2 seed(s) with a score (42, 2025); the track_10min_16mb track asks for at least 3" in problems
    assert "blob.bin: 50000001 bytes, over the 50000000-byte file limit" in problems
    for log in d.glob("*.log"):
        log.unlink()
    assert any(p.startswith("no training log") for p in check_record(d, require_script=False, min_seeds=0))


def test_seed_file_name_must_match_log(tmp_path):
    d = writable_copy(MARCH, tmp_path)
    (d / "train_seed42.log").rename(d / "train_seed43.log")
    assert "train_seed43.log: the file name says seed 43 but the log says seed 42 (the log's seed is used)" in found(d)


def test_tampered_readme_fails(tmp_path):
    """The README's headline and per-seed table are held to the logs (the 1.1248 README's reproducibility table)."""
    d = writable_copy(MARCH, tmp_path)
    text = (d / "README.md").read_text()
    for before, after in [
        ("**val_bpb = 1.1248**", "**val_bpb = 1.1200**"),
        ("| 42 | 7,061 | 1.1250 | 15,528,666 |", "| 42 | 7,061 | 1.1150 | 15,528,666 |"),
        ("| 1337 | 7,063 |", "| 1337 | 7,163 |"),
    ]:
        assert before in text
        text = text.replace(before, after)
    (d / "README.md").write_text(text)
    assert check_record(d, require_script=False) == []  # README numbers are inconsistencies: warnings
    assert new_findings(MARCH, d) == [
        "README.md: headline val_bpb 1.1200 matches neither the mean over seeds (1.12503176) nor any seed's logged "
        "value (42: 1.12498291, 1337: 1.12526734, 2025: 1.12484502)",
        "README.md: seed 42 sliding val_bpb 1.1150 disagrees with the log (1.12498291 or 1.125)",
        "README.md: seed 1337 steps 7163 disagrees with the log (7063)",
    ]


def test_tampered_readme_mean_row_fails(tmp_path):
    """The 1.0611 README's table: per-seed pre-quant / post-quant / post-TTT columns and a Mean row."""
    d = writable_copy(APRIL, tmp_path)
    text = (d / "README.md").read_text()
    before = "| 1234 | 4,917 | 122.0   | 1.06597           | 1.07478 "
    assert before in text and "| **Mean** | **4,931** |" in text
    text = text.replace(before, "| 1234 | 4,917 | 122.0   | 1.06597           | 1.07378 ")
    text = text.replace("| **Mean** | **4,931** |", "| **Mean** | **4,941** |")
    (d / "README.md").write_text(text)
    assert new_findings(APRIL, d) == [
        "README.md: seed 1234 roundtrip val_bpb 1.07378 disagrees with the log (1.07477929)",
        "README.md: mean steps 4941 disagrees with the mean of the logged seeds (4931.3333)",
    ]


# ----------------------------------------------------------------------------------------------------------------
# build_record on synthetic seed results

SCRIPT = '"""A stand-in training script."""\nprint("train")\n'
SEEDS = {42: (1.23456789, 2.08765432), 1337: (1.23501234, 2.08839876), 2025: (1.23398765, 2.08667777)}


def make_seed(run_dir: Path, seed: int, bpb: float, loss: float, code_bytes: int, model_bytes: int = 15_400_000):
    """A results/<run>/seed_<N>/ folder as the train/quantize/eval stages write it."""
    d = run_dir / f"seed_{seed}"
    d.mkdir(parents=True)
    steps, step_avg = 7000 + seed % 7, 85.5
    train_ms = round(steps * step_avg)
    rt_bpb, rt_loss = bpb + 0.0234, loss + 0.0395
    pre_bpb, pre_loss = bpb + 0.0170, loss + 0.0287
    total = model_bytes + code_bytes
    train = ["=" * 100, "Running Python 3.12.3", "Hyperparameters:", f"  seed: {seed}", "=" * 100]
    train += [f"seed:{seed}", "warmup_step:1/20"]
    for s in (1, 2, 500, 1000):
        train.append(
            f"step:{s}/9000 train_loss:{3.5 - s / 1000:.4f} train_time:{round(s * step_avg)}ms step_avg:85.50ms"
        )
    train += [
        f"stopping_early: wallclock_cap train_time:{train_ms}ms step:{steps}/9000",
        f"step:{steps}/9000 val_loss:1.9300 val_bpb:1.1430 train_time:{train_ms}ms step_avg:{step_avg:.2f}ms",
        "ema:applying EMA weights",
        f"pre_quant val_loss:{pre_loss:.4f} val_bpb:{pre_bpb:.4f} eval_time:6000ms",
        f"pre_quant_exact val_loss:{pre_loss:.8f} val_bpb:{pre_bpb:.8f}",
        "pgolf_summary "
        + json.dumps({"stage": "train", "seed": seed, "steps": steps, "train_time_s": train_ms / 1000}),
    ]
    quant = [
        f"Serialized model int6_zstd: {model_bytes} bytes (raw payload 105783807 bytes)",
        f"Code size: {code_bytes} bytes",
        f"Total submission size int6_zstd: {total} bytes",
        "pgolf_summary "
        + json.dumps(
            {"stage": "quantize", "artifact_bytes": model_bytes, "code_bytes": code_bytes, "bytes_total": total}
        ),
    ]
    evals = [
        f"final_int6_zstd_roundtrip val_loss:{rt_loss:.4f} val_bpb:{rt_bpb:.4f} eval_time:6100ms",
        f"final_int6_zstd_roundtrip_exact val_loss:{rt_loss:.8f} val_bpb:{rt_bpb:.8f}",
        f"final_int6_zstd_sliding_window val_loss:{loss:.4f} val_bpb:{bpb:.4f} stride:64 eval_time:72600ms",
        f"final_int6_zstd_sliding_window_exact val_loss:{loss:.8f} val_bpb:{bpb:.8f}",
        "total_eval_time:80.1s",
        "pgolf_summary " + json.dumps({"stage": "eval", "eval_time_s": 80.123, "val_bpb": bpb, "val_loss": loss}),
    ]
    (d / "train.log").write_text("\n".join(train) + "\n")
    (d / "quantize.log").write_text("\n".join(quant) + "\n")
    (d / "eval.log").write_text("\n".join(evals) + "\n")
    metrics = {
        "seed": seed,
        "run": run_dir.name,
        "val_bpb": bpb,
        "val_loss": loss,
        "roundtrip_val_bpb": rt_bpb,
        "roundtrip_val_loss": rt_loss,
        "sliding_val_bpb": bpb,
        "sliding_val_loss": loss,
        "eval_stride": 64,
        "pre_quant_val_bpb": pre_bpb,
        "pre_quant_val_loss": pre_loss,
        "eval_time_s": 80.123,
        "train_time_s": train_ms / 1000,
        "steps": steps,
        "step_avg_ms": step_avg,
        "artifact_bytes": model_bytes,
        "code_bytes": code_bytes,
        "bytes_total": total,
        "quant_tag": "int6_zstd",
        "world_size": 8,
        "attention_backend": "fa3",
        "device": "NVIDIA H100 80GB HBM3",
    }
    (d / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return d


ENVIRONMENT = {
    "python": "3.12.3",
    "torch": "2.9.1+cu128",
    "cuda": "12.8",
    "fa3": "3.0.0b1",
    "gpu": "NVIDIA H100 80GB HBM3",
    "gpu_count": 8,
    "driver": "580.126.09",
    "nvidia_smi": "| NVIDIA-SMI 580.126.09 |",
    "git_commit": "4c71fa9",
    "platform": "Linux-6.8-x86_64",
    "image_digest": "pgolf@sha256:" + "ab" * 32,
    "image_base": "nvidia/cuda:12.8.1-devel-ubuntu24.04",
    "fa3_status": {"state": "preinstalled", "available": True},
}
SETTINGS = {
    "track": "track_10min_16mb",
    "name": "11L test stack",
    "author": "Test Author",
    "github_id": "tester",
    "blurb": "A synthetic record for the tests.",
    "date": "2026-05-01",
    "min_seeds": 3,
    "non_record": False,
    "requirements": ["torch==2.9.1", "numpy", "zstandard"],
}
HPARAMS = {"NUM_LAYERS": 11, "EVAL_STRIDE": 64, "EMA_ENABLED": True, "RUN_ID": "my run"}


@pytest.fixture
def run(tmp_path) -> dict:
    script = tmp_path / "train_gpt_src.py"
    script.write_text(SCRIPT)
    run_dir = tmp_path / "results" / "run1"
    dirs = [make_seed(run_dir, s, bpb, loss, len(SCRIPT.encode())) for s, (bpb, loss) in SEEDS.items()]
    return {"script": script, "run_dir": run_dir, "dirs": dirs, "out": tmp_path / "records" / "2026-05-01_Test"}


def test_build_record_writes_a_passing_folder(run):
    sub = build_record(run["out"], run["dirs"], run["script"], ENVIRONMENT, SETTINGS, HPARAMS, 8)
    out = run["out"]
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        ["README.md", "submission.json", "train_gpt.py", "requirements.txt", "loss_curves.png"]
        + [f"train_seed{s}.log" for s in SEEDS]
    )
    assert (out / "train_gpt.py").read_bytes() == run["script"].read_bytes()
    for s, d in zip(SEEDS, run["dirs"], strict=True):
        expected = b"".join((d / n).read_bytes() for n in ("train.log", "quantize.log", "eval.log"))
        assert (out / f"train_seed{s}.log").read_bytes() == expected
    # pinned to the versions that ran (ENVIRONMENT has no package list: the versions installed here)
    from importlib.metadata import version

    expected = f"torch==2.9.1\nnumpy=={version('numpy')}\nzstandard=={version('zstandard')}\n"
    text = (out / "requirements.txt").read_text()
    head = "# Python deps. Install with: pip install -r requirements.txt\n# ran on Python 3.12.3\n"
    assert text.startswith(head + expected)
    # the FA3 the run used (ENVIRONMENT: 3.0.0b1), which plain pip cannot install, as a note
    assert (
        "\n# FlashAttention 3 must be installed separately (not on PyPI) (the run used flash_attn_3 3.0.0b1):" in text
    )
    assert check_record(out, min_seeds=3) == []

    on_disk = json.loads((out / "submission.json").read_text())
    assert on_disk == json.loads(json.dumps(sub))
    bpbs = [v[0] for v in SEEDS.values()]
    assert on_disk["val_bpb"] == round(sum(bpbs) / 3, 8)
    assert on_disk["val_loss"] == round(sum(v[1] for v in SEEDS.values()) / 3, 8)
    totals = [json.loads((d / "metrics.json").read_text())["bytes_total"] for d in run["dirs"]]
    assert on_disk["bytes_total"] == max(totals)
    assert on_disk["bytes_code"] == len(SCRIPT.encode())
    assert on_disk["seeds"] == [42, 1337, 2025]
    assert on_disk["seed_results"]["1337"]["val_bpb"] == 1.23501234
    assert on_disk["seed_results"]["42"]["bytes_total"] == totals[0]
    assert on_disk["hardware"] == "8x NVIDIA H100 80GB HBM3"
    assert on_disk["pytorch_version"] == "2.9.1+cu128" and on_disk["flash_attn_version"] == "3.0.0b1"
    assert on_disk["attention_backend"] == "fa3" and on_disk["non_record"] is False
    assert on_disk["val_bpb_std"] > 0

    readme = (out / "README.md").read_text()
    assert "Not a leaderboard record" not in readme
    assert "torchrun --standalone --nproc_per_node=8 train_gpt.py" in readme
    assert "EMA_ENABLED=1 \\" in readme and "RUN_ID='my run' \\" in readme and "SEED=42 \\" in readme
    assert f"{on_disk['val_bpb']:.8f} ± {on_disk['val_bpb_std']:.8f}" in readme
    assert "| 1337 | 7,000 |" in readme  # steps of seed 1337 (7000 + 1337 % 7)
    assert "580.126.09" in readme
    assert not list(out.parent.glob(".*")), "no temporary folders left behind"


def test_a_ttt_score_is_stated_in_the_readme_and_submission(run):
    """When the evaluation's score-first TTT pass made the score, the record says so, with its settings (issue 28)."""
    ttt = {"ttt_chunk_tokens": 32768, "ttt_epochs": 3, "ttt_lr": 0.002, "ttt_params": "", "ttt_reset_chunks": 0}
    for d in run["dirs"]:
        m = json.loads((d / "metrics.json").read_text())
        (d / "metrics.json").write_text(json.dumps({**m, "ttt": ttt, "ttt_val_bpb": m["val_bpb"]}))
    sub = build_record(run["out"], run["dirs"], run["script"], ENVIRONMENT, SETTINGS, HPARAMS, 8)
    assert sub["ttt"] == ttt
    readme = (run["out"] / "README.md").read_text()
    assert "with legal score-first test-time training (ttt_chunk_tokens=32768, ttt_epochs=3," in readme
    assert check_record(run["out"], min_seeds=3) == []


def test_without_ttt_the_record_names_none(run):
    sub = build_record(run["out"], run["dirs"], run["script"], ENVIRONMENT, SETTINGS, HPARAMS, 8)
    assert sub["ttt"] is None and "test-time training" not in (run["out"] / "README.md").read_text()


def test_non_record_banner_and_one_seed(run):
    settings = dict(SETTINGS, non_record=True, track="track_non_record_16mb", min_seeds=1)
    env = {"python": "3.12.3", "torch": "2.9.1+cpu", "platform": "Linux"}  # keys missing: handled
    sub = build_record(run["out"], run["dirs"][:1], run["script"], env, settings, {}, 1)
    readme = (run["out"] / "README.md").read_text()
    assert "**Not a leaderboard record.**" in readme
    assert "(one seed: no std)" in readme
    assert sub["non_record"] is True and sub["val_bpb_std"] is None and sub["cuda_version"] is None
    assert sub["hardware"] == "8x NVIDIA H100 80GB HBM3"  # from the seed's metrics (device, world_size)
    assert check_record(run["out"], min_seeds=1) == []


def test_check_takes_the_seed_rule_from_the_track(run, capsys):
    """Issue 15: the demo profile's 2-seed non-record passes `pgolf check` with no options (main asked for 3 seeds);
    the same two seeds on the record track do not."""
    settings = dict(SETTINGS, non_record=True, track="track_non_record_16mb", min_seeds=2)
    build_record(run["out"], run["dirs"][:2], run["script"], ENVIRONMENT, settings, {}, 8)
    assert cli(["check", str(run["out"])]) == 0
    assert capsys.readouterr().out.startswith(f"PASS: {run['out']} (track_non_record_16mb; 2 seed(s) scored")
    sub = json.loads((run["out"] / "submission.json").read_text())
    sub.update(track="track_10min_16mb", non_record=False)
    (run["out"] / "submission.json").write_text(json.dumps(sub))
    assert cli(["check", str(run["out"])]) == 1
    out = capsys.readouterr().out
    assert "violation: only 2 seed(s) with a score (42, 1337); the track_10min_16mb track asks for at least 3" in out


def test_a_truncated_seed_log_never_passes(run, capsys):
    """Issue 15: a published log that begins at `step:...` (the orphaned run's tail replaced the log) fails."""
    build_record(run["out"], run["dirs"], run["script"], ENVIRONMENT, SETTINGS, HPARAMS, 8)
    assert cli(["check", str(run["out"])]) == 0
    capsys.readouterr()
    log = run["out"] / "train_seed1337.log"
    lines = log.read_text().splitlines(keepends=True)
    first_step = next(i for i, line in enumerate(lines) if line.startswith("step:"))
    log.write_text("".join(lines[first_step:]))
    assert cli(["check", str(run["out"])]) == 1
    out = capsys.readouterr().out
    assert "violation: train_seed1337.log: not a valid log: its first training step comes before the header" in out
    assert "line 1: step:1/9000 train_loss:3.4990" in out
    # a header alone (Running Python) without the Hyperparameters block is not the header train_gpt.py writes
    log.write_text("Running Python 3.12.3\n" + "".join(lines[first_step:]))
    assert any("train_seed1337.log: not a valid log" in p for p in check_record(run["out"]))


def test_failed_check_keeps_previous_record(run):
    out = run["out"]
    build_record(out, run["dirs"], run["script"], ENVIRONMENT, SETTINGS, HPARAMS, 8)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    metrics_path = run["dirs"][0] / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    metrics["val_bpb"] = 1.1  # disagrees with the seed's log
    metrics_path.write_text(json.dumps(metrics))
    with pytest.raises(ValueError, match="fails its checks") as err:
        build_record(out, run["dirs"], run["script"], ENVIRONMENT, SETTINGS, HPARAMS, 8)
    assert "seed_results[42].val_bpb 1.1 disagrees with the log (1.23456789)" in str(err.value)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not list(out.parent.glob(".*")), "the temporary folder is removed"

    with pytest.raises(ValueError, match="asks for at least 3"):
        build_record(out, run["dirs"][1:], run["script"], ENVIRONMENT, SETTINGS, HPARAMS, 8)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_rebuild_replaces_previous_record(run):
    out = run["out"]
    build_record(out, run["dirs"], run["script"], ENVIRONMENT, SETTINGS, HPARAMS, 8)
    (out / "train_seed999.log").write_text("old")  # a file of the kind the record generates: replaced
    (out / "NOTES.md").write_text("mine")  # what a user added: kept (issue 29)
    build_record(out, run["dirs"], run["script"], ENVIRONMENT, dict(SETTINGS, name="Renamed"), HPARAMS, 8)
    assert not (out / "train_seed999.log").exists() and (out / "NOTES.md").read_text() == "mine"
    assert json.loads((out / "submission.json").read_text())["name"] == "Renamed"
    assert not list(out.parent.glob(".*"))


def test_over_cap_and_wrong_script_are_refused(run, tmp_path):
    big = make_seed(tmp_path / "big", 7, 1.2, 2.0, len(SCRIPT.encode()), model_bytes=16_000_000)
    settings = dict(SETTINGS, min_seeds=1)
    with pytest.raises(ValueError, match="over the 16000000-byte cap"):
        build_record(run["out"], [big], run["script"], ENVIRONMENT, settings, HPARAMS, 8)
    other = tmp_path / "other.py"
    other.write_text(SCRIPT + "# edited after the run\n")
    with pytest.raises(ValueError, match="logs a code size of"):
        build_record(run["out"], run["dirs"], other, ENVIRONMENT, SETTINGS, HPARAMS, 8)
    assert not run["out"].exists()


def test_seed_folder_must_agree_with_metrics(run):
    bad = run["dirs"][0].parent / "seed_99"
    os.rename(run["dirs"][0], bad)
    with pytest.raises(ValueError, match="metrics.json says seed 42 but the folder is seed_99"):
        build_record(run["out"], [bad], run["script"], ENVIRONMENT, SETTINGS, HPARAMS, 8)


def test_reference_comparison_in_record(run, tmp_path):
    ref_dirs = [
        make_seed(tmp_path / "ref", s, bpb + 0.01, loss + 0.017, len(SCRIPT.encode()))
        for s, (bpb, loss) in SEEDS.items()
    ]
    ref = tmp_path / "records" / "ref"
    build_record(ref, ref_dirs, run["script"], ENVIRONMENT, SETTINGS, HPARAMS, 8)
    sub = build_record(
        run["out"], run["dirs"], run["script"], ENVIRONMENT, dict(SETTINGS, reference=str(ref)), HPARAMS, 8
    )
    assert sub["p_value"] is not None and sub["p_value"] < 0.01
    assert sub["comparison"]["improvement_bpb"] == pytest.approx(0.01, abs=1e-8)
    readme = (run["out"] / "README.md").read_text()
    assert "## Comparison" in readme and str(run["out"]) in readme and ".tmp" not in readme
    assert "| 42 | 1.23456789 | 1.24456789 | -0.01000000 |" in readme  # seed by seed against the reference
    # logs of the built record parse to the metrics' scores
    for s, (bpb, _) in SEEDS.items():
        assert parse_log(run["out"] / f"train_seed{s}.log")["score"]["val_bpb"] == bpb


def test_loss_curves_report_files_and_extra_files(run, tmp_path):
    helper = tmp_path / "helper.py"
    helper.write_text("X = 1\n")
    tokenizers = tmp_path / "tokenizers"
    tokenizers.mkdir()
    (tokenizers / "tok.model").write_bytes(b"model")
    report = tmp_path / "report"
    settings = dict(SETTINGS, extra_files=[str(helper), str(tokenizers)])
    build_record(run["out"], run["dirs"], run["script"], ENVIRONMENT, settings, HPARAMS, 8, report_dir=report)
    out = run["out"]
    assert (out / "helper.py").read_text() == "X = 1\n" and (out / "tokenizers" / "tok.model").read_bytes() == b"model"
    png = (out / "loss_curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and (report / "loss_curves.png").read_bytes() == png
    readme = (out / "README.md").read_text()
    assert "![train_loss at every logged step" in readme and "(loss_curves.png)" in readme
    assert "- `helper.py`: a file the script needs" in readme
    html = (report / "seed_results.html").read_text()
    assert "<td>1337</td><td>7,000</td><td>85.50</td>" in html and "<td>1.23501234</td>" in html
    rows = (report / "seed_results.csv").read_text().splitlines()
    assert rows[0].split(",")[:3] == ["seed", "steps", "step_avg_ms"] and rows[2].startswith("1337,7000,85.5,")
    assert check_record(out, min_seeds=3) == []
    # the same logs give the same plot, byte for byte
    build_record(run["out"], run["dirs"], run["script"], ENVIRONMENT, settings, HPARAMS, 8)
    assert (out / "loss_curves.png").read_bytes() == png
    with pytest.raises(ValueError, match="is a name the record generates"):
        clash = tmp_path / "README.md"
        clash.write_text("x")
        build_record(
            run["out"], run["dirs"], run["script"], ENVIRONMENT, dict(SETTINGS, extra_files=[str(clash)]), HPARAMS, 8
        )


# ----------------------------------------------------------------------------------------------------------------
# CLI


def cli(argv: list[str]) -> int:
    from pgolf import check, compare

    parser = argparse.ArgumentParser(prog="pgolf")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (record, check, compare):
        module.register(sub)
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_record_check_compare(run, tmp_path, capsys):
    env_path = tmp_path / "environment.json"
    env_path.write_text(json.dumps(ENVIRONMENT))
    hp_path = tmp_path / "hparams.json"
    hp_path.write_text(json.dumps(HPARAMS))
    argv = ["record", "--run-dir", str(run["run_dir"]), "--seeds", "42", "1337", "2025", "--script", str(run["script"])]
    argv += ["--environment", str(env_path), "--settings-json", json.dumps(SETTINGS), "--hparams-json", str(hp_path)]
    argv += ["--nproc", "8", "--out", str(run["out"])]
    assert cli(argv) == 0
    assert "3 seed(s)" in capsys.readouterr().out

    assert cli(["check", str(run["out"])]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0] == (
        f"PASS: {run['out']} (track_10min_16mb; 3 seed(s) scored, score from final_int6_zstd_sliding_window lines)"
    )
    assert [line.split(":")[0].strip() for line in out[1:] if line.startswith("  seed")] == [
        "seed 42",
        "seed 1337",
        "seed 2025",
    ]  # every verdict gives its figures per seed

    assert cli(["check", str(run["out"]), "--min-seeds", "4"]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"FAIL: {run['out']}")
    assert (
        "  violation: only 3 seed(s) with a score (42, 1337, 2025); the track_10min_16mb track asks for at least 4"
        in out
    )


def test_cli_check_and_compare_on_fixtures(capsys):
    assert cli(["check", str(fixture(NAIVE)), "--min-seeds", "1", "--no-script"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[0] == (
        f"PASS: {fixture(NAIVE)} (track_10min_16mb; 1 seed(s) scored, score from final_int8_zlib_roundtrip lines)"
    )
    assert cli(["check", str(fixture(NAIVE)), "--no-script"]) == 1
    assert cli(["compare", str(fixture(APRIL)), str(fixture(MARCH))]) == 0
    out = capsys.readouterr().out
    assert "Welch t-test (one-sided, A lower)" in out and "README rule (>= 0.005 nats and p < 0.01): yes" in out


def test_record_carries_the_provenance(run):
    """submission.json and the README name what ran: image, commit, versions, GPUs, driver, nvidia-smi, FA3, backend."""
    build_record(run["out"], run["dirs"], run["script"], ENVIRONMENT, SETTINGS, HPARAMS, 8)
    sub = json.loads((run["out"] / "submission.json").read_text())
    prov = sub["provenance"]
    for key in ("image_digest", "image_base", "git_commit", "torch", "cuda", "fa3", "gpu", "gpu_count", "driver"):
        assert prov[key] == ENVIRONMENT[key], key
    assert prov["nvidia_smi"] == ENVIRONMENT["nvidia_smi"] and prov["fa3_state"] == "preinstalled"
    assert sub["attention_backend"] == "fa3"
    assert all(r["attention_backend"] == "fa3" for r in sub["seed_results"].values())
    readme = (run["out"] / "README.md").read_text()
    for text in (ENVIRONMENT["image_digest"], "FA3 step: preinstalled", "Attention backend: fa3", "NVIDIA-SMI 580"):
        assert text in readme, text


# ----------------------------------------------------------------------------------------------------------------
# A packed train_gpt.py with its readable source; the reproducing command


@pytest.fixture
def packed_run(tmp_path) -> dict:
    """Seed results whose logs count the packed form of the repository's training script."""
    from conftest import SCRIPT as SOURCE

    from pgolf.pack import ship

    packed = tmp_path / "ship" / "train_gpt.py"
    packed.parent.mkdir()
    packed.write_bytes(ship(SOURCE.read_bytes())[0])
    run_dir = tmp_path / "results" / "run1"
    dirs = [make_seed(run_dir, s, bpb, loss, packed.stat().st_size) for s, (bpb, loss) in SEEDS.items()]
    return {"script": packed, "source": SOURCE, "dirs": dirs, "out": tmp_path / "records" / "2026-05-01_Test"}


def test_packed_record_ships_the_readable_source_uncounted(packed_run, tmp_path):
    run = packed_run
    sub = build_record(run["out"], run["dirs"], run["script"], ENVIRONMENT, SETTINGS, HPARAMS, 8,
                       human_script=run["source"])  # fmt: skip
    out = run["out"]
    assert (out / "train_gpt.py").read_bytes() == run["script"].read_bytes()
    assert (out / "train_gpt_human.py").read_bytes() == run["source"].read_bytes()
    assert sub["bytes_code"] == run["script"].stat().st_size < 30_000  # the packed bytes, not the readable ones
    assert check_record(out, min_seeds=3) == []
    readme = (out / "README.md").read_text()
    assert f"its {sub['bytes_code']:,} bytes are the code bytes counted" in readme
    assert "`train_gpt_human.py`: its readable source (with docstrings and comments), not counted" in readme

    other = tmp_path / "other.py"  # a readable copy that is not the source of the packed script is refused
    other.write_text(run["source"].read_text() + "\nX = 1\n")
    with pytest.raises(ValueError, match="is not what `pgolf pack` makes of"):
        build_record(tmp_path / "r2", run["dirs"], run["script"], ENVIRONMENT, SETTINGS, HPARAMS, 8,
                     human_script=other)  # fmt: skip
    assert not (tmp_path / "r2").exists()


def test_unpacked_script_gets_no_second_copy(run):
    """A script that ships as it is (packing off, or nothing to gain) is its own readable copy."""
    build_record(run["out"], run["dirs"], run["script"], ENVIRONMENT, SETTINGS, HPARAMS, 8, human_script=run["script"])
    assert not (run["out"] / "train_gpt_human.py").exists()
    assert "exactly as run" in (run["out"] / "README.md").read_text()


def test_reproduce_env_has_every_setting_the_pipeline_gave(tiny_data, tmp_path):
    env = readme.reproduce_env(
        {"NUM_LAYERS": 2, "EMA_ENABLED": True},
        tiny_data["manifest_path"],
        {"quant_bits_matrix": 5, "quant_keep_float_numel": 1024},
        {"eval_stride": 32, "eval_seq_len": 128, "time_budget_s": 600},
    )
    assert env["NUM_LAYERS"] == "2" and env["EMA_ENABLED"] == "1"
    assert env["QUANT_BITS_MATRIX"] == "5" and env["QUANT_KEEP_FLOAT_NUMEL"] == "1024"
    assert env["EVAL_STRIDE"] == "32" and env["EVAL_SEQ_LEN"] == "128" and "time_budget_s" not in str(env)
    assert env["VOCAB_SIZE"] == "1024"
    # upstream's layout, relative to a record folder (records/<track>/<folder>/) of an upstream clone
    name = json.loads(Path(tiny_data["manifest_path"]).read_text())["name"]
    for key, absolute in (("TRAIN_FILES", "train_glob"), ("VAL_FILES", "val_glob")):
        assert env[key] == f"../../../data/datasets/{name}/{Path(tiny_data[absolute]).name}"
    assert env["TOKENIZER_PATH"] == f"../../../data/tokenizers/{Path(tiny_data['tokenizer_path']).name}"
    cmd = readme.reproduce_command(env, 2, 7)
    assert (
        "QUANT_BITS_MATRIX=5 \\" in cmd
        and "SEED=7 \\" in cmd
        and f"TRAIN_FILES={shlex.quote(env['TRAIN_FILES'])} \\" in cmd
    )  # the shell must not expand the glob
    with pytest.raises(ValueError, match="eval sets EVAL_STRIDE=32 but the training settings set EVAL_STRIDE=64"):
        readme.reproduce_env({"EVAL_STRIDE": 64}, None, None, {"eval_stride": 32})


def test_cli_record_with_a_packed_script_and_the_reproducing_settings(packed_run, tiny_data, tmp_path):
    env_path = tmp_path / "environment.json"
    env_path.write_text(json.dumps(ENVIRONMENT))
    run = packed_run
    argv = ["record", "--run-dir", str(run["dirs"][0].parent), "--seeds", "42", "1337", "2025"]
    argv += ["--script", str(run["script"]), "--human-script", str(run["source"]), "--environment", str(env_path)]
    argv += ["--settings-json", json.dumps(SETTINGS), "--hparams-json", json.dumps({"NUM_LAYERS": 11}), "--nproc", "8"]
    argv += ["--data-manifest", tiny_data["manifest_path"], "--quantize-json", json.dumps({"quant_bits_embed": 7})]
    argv += ["--eval-json", json.dumps({"eval_stride": 64, "time_budget_s": 600}), "--out", str(run["out"])]
    assert cli(argv) == 0
    readme = (run["out"] / "README.md").read_text()
    block = readme.split("## Reproducing", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    assert "QUANT_BITS_EMBED=7 \\" in block and "EVAL_STRIDE=64 \\" in block and "NUM_LAYERS=11 \\" in block
    assert "TOKENIZER_PATH=../../../data/tokenizers/" in block and block.rstrip().endswith(
        "torchrun --standalone --nproc_per_node=8 train_gpt.py"
    )
    assert (run["out"] / "train_gpt_human.py").is_file()


def test_the_readme_says_where_upstream_keeps_the_data_and_how_to_fetch_it():
    hparams = {"TOKENIZER_PATH": "../../../data/tokenizers/fineweb_1024_bpe.model"}
    hub = {"source": "hub", "name": "mine", "variant": "sp1024", "repo_id": "willdepueoai/parameter-golf",
           "train_shards": 80, "tokenizer": "fineweb_1024_bpe.model"}  # fmt: skip
    text = " ".join(readme._data_setup(hub, hparams))
    assert "`data/datasets/fineweb10B_sp1024/` (shards) and `data/tokenizers/fineweb_1024_bpe.model`" in text
    assert "`python3 data/cached_challenge_fineweb.py --variant sp1024 --train-shards 80` fetches it" in text
    text = " ".join(readme._data_setup({**hub, "repo_id": "kevclark/parameter-golf", "variant": "sp8192"}, hparams))
    assert "`MATCHED_FINEWEB_REPO_ID=kevclark/parameter-golf python3 data/cached_challenge_fineweb.py" in text
    text = " ".join(readme._data_setup({**hub, "repo_id": "romeerp/parameter-golf-caseops-v1"}, hparams))
    assert "fetches it" not in text and "(from the Hugging Face dataset `romeerp/parameter-golf-caseops-v1`" in text
    docs = {"source": "documents", "name": "wiki", "tokenizer": "wiki.model"}
    assert "`data/datasets/wiki/` (shards) and `data/tokenizers/wiki.model`" in " ".join(
        readme._data_setup(docs, hparams)
    )
    assert readme._data_setup(hub, {}) == []  # an upstream script: its own variables, no data paths of ours
