"""pgolf check / compare on the corpus of real record folders (../shared, read at run time) and on synthetic folders
that reproduce each class of format or rule the corpus shows (they run without ../shared)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from conftest import SHARED

from pgolf import check
from pgolf.check import check_record, inspect_record
from pgolf.compare import compare_records
from pgolf.rules import severity_rank

CORPUS = SHARED / "fixtures" / "upstream-corpus"
TABLE = Path(__file__).parent / "data" / "corpus_verdicts.json"
RECORD, NON_RECORD = "track_10min_16mb", "track_non_record_16mb"


def corpus() -> Path:
    if not (CORPUS / RECORD).is_dir():
        pytest.skip(f"the upstream record corpus is not at {CORPUS} (it lives in the shared folder)")
    return CORPUS


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="pgolf")
    check.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


# ----------------------------------------------------------------------------------------------------------------
# the corpus, against the committed table of verdicts


def test_the_table_covers_the_corpus():
    root = corpus()
    folders = sorted(p.relative_to(root).as_posix() for p in root.glob("track_*/*") if p.is_dir())
    assert folders == sorted(json.loads(TABLE.read_text()))


@pytest.mark.parametrize("folder", sorted(json.loads(TABLE.read_text())))
def test_corpus_folder_verdict(folder):
    """Each folder's verdict and every violation are the table's; each failure has its reason written down."""
    expected = json.loads(TABLE.read_text())[folder]
    report = inspect_record(corpus() / folder)
    assert report.verdict == expected["verdict"]
    assert [f.text for f in report.violations] == expected["violations"]
    assert next((f.evidence for f in report.violations if f.evidence), None) == expected.get("first_evidence")
    assert bool(expected["why"]) == (expected["verdict"] == "FAIL")


def test_corpus_violations_about_a_log_quote_the_line():
    root = corpus()
    for folder in json.loads(TABLE.read_text()):
        for f in inspect_record(root / folder).violations:
            if ("train time" in f.text or "code + model" in f.text) and ".log" in f.text + ".txt":
                assert f.evidence and f.evidence.startswith("line "), (folder, f.text)


def test_check_all_prints_one_table(capsys):
    root = corpus()
    assert cli(["check", "--all", str(root)]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    table = json.loads(TABLE.read_text())
    assert lines[0].split()[:2] == ["folder", "verdict"]
    assert len(lines) == len(table) + 2
    passed = sum(1 for e in table.values() if e["verdict"] == "PASS")
    assert lines[-1] == f"{passed} of {len(table)} folder(s) pass"
    for line, (folder, entry) in zip(lines[1:-1], table.items(), strict=True):
        assert line.startswith(folder) and f" {entry['verdict']} " in line
        if entry["violations"]:  # the most severe: time or bytes, then seeds and scores, the log, a missing key
            worst = min(entry["violations"], key=severity_rank)
            assert worst[:100] in line


def test_calibration_puts_the_best_record_over_the_train_budget():
    """The issue's false pass: the 1.0611 record's seed-42 loop ends at 599,592 ms, then 4.7 s of GPTQ Hessians."""
    report = inspect_record(corpus() / RECORD / "2026-04-27_SP8192_LQER_SparseGate_BOSSmearFix_9HpStack_1.0611")
    seed42 = next(f for f in report.violations if f.text.startswith("train_seed42.log"))
    assert "604292 ms = 599592 ms of training + 4700 ms of calibration" in seed42.text
    assert "GPTQ:collected 67 Hessians in 4.7s" in seed42.evidence


def test_the_record_score_is_the_submitted_one():
    """The SP4096 record submitted its sliding score; its seed-42 log also has a (worse) TTT line."""
    report = inspect_record(corpus() / RECORD / "2026-04-04_SP4096_DepthRecurrence_ParallelResid_MuonEqR")
    assert report.score_kind.startswith("final_int6_sliding_window")
    assert report.seeds[42]["score"]["val_bpb"] == pytest.approx(1.08938974, abs=1e-8)


# ----------------------------------------------------------------------------------------------------------------
# compare along the README's leaderboard chain


def test_compare_reproduces_the_stated_p_value():
    """README: "SP8192 + Muon 0.97 + Legal Score-First TTT ... 3-seed sweep beats #1493 (p=0.020)"."""
    root = corpus() / RECORD
    res = compare_records(
        root / "2026-04-09_A2_Muon097_3Seed", root / "2026-04-09_SP8192_3LayerRecur_ParResid_QK525_LegalTTT"
    )
    assert round(res["p_value"], 3) == 0.020
    assert res["warnings"] == []


def test_compare_warns_on_other_data_or_tokenizer():
    root = corpus() / RECORD
    res = compare_records(
        root / "2026-04-27_SP8192_LQER_SparseGate_BOSSmearFix_9HpStack_1.0611",
        root / "2026-03-21_11L_XSA4_EMA_PartialRoPE_LateQAT_1.1248",
    )
    assert any("different data or tokenizer" in w for w in res["warnings"])
    assert any("different kinds of score" in w for w in res["warnings"])  # TTT vs sliding, each as submitted


# ----------------------------------------------------------------------------------------------------------------
# synthetic folders: one class of format or rule each (no ../shared needed)


def upstream_log(
    seed: int,
    sliding: float,
    ttt: float,
    *,
    train_ms: int = 590_000,
    calib: str | None = None,
    model: int = 15_800_000,
    code: int = 60_000,
    extra: tuple[str, ...] = (),
) -> str:
    lines = ["Hyperparameters:", f"  seed: {seed}", "  iterations: 20000", *extra]
    lines += [
        f"step:{s}/20000 train_loss:{4 - s / 5000:.4f} train_time:{s * 118}ms step_avg:118.00ms" for s in (1, 500)
    ]
    lines += [f"stopping_early: wallclock_cap train_time:{train_ms}ms step:5000/20000"]
    lines += [calib] if calib else []
    lines += [f"Serialized model int6+brotli: {model} bytes", f"Code size: {code} bytes"]
    lines += [f"Total submission size int6+brotli: {model + code} bytes"]
    lines += [f"final_sliding_window_exact stride:64 val_loss:{sliding * 2.58:.8f} val_bpb:{sliding:.8f}"]
    lines += [f"1776144163.319 legal_ttt_exact val_loss:{ttt * 2.58:.8f} val_bpb:{ttt:.8f} eval_time:300000ms"]
    lines += ["total_eval_time:380.0s"]
    return "\n".join(lines) + "\n"


SCORES = {42: (1.0810, 1.0790), 314: (1.0812, 1.0795), 999: (1.0809, 1.0788)}


def make_folder(
    tmp_path: Path, track: str = RECORD, val_bpb: float | None = None, script: str = "print(1)\n", **log_kw
) -> Path:
    d = tmp_path / track / "2026-04-01_Synthetic"
    d.mkdir(parents=True)
    (d / "README.md").write_text("# synthetic\n")
    (d / "train_gpt.py").write_text(script)
    for seed, (sw, ttt) in SCORES.items():
        (d / f"train_seed{seed}.log").write_text(upstream_log(seed, sw, ttt, code=len(script), **log_kw))
    mean_sliding = sum(sw for sw, _ in SCORES.values()) / 3
    sub = {"name": "synthetic", "github_id": "tester", "author": "T", "date": "2026-04-01", "blurb": "b"}
    sub |= {"val_bpb": round(mean_sliding if val_bpb is None else val_bpb, 8), "seeds": list(SCORES)}
    (d / "submission.json").write_text(json.dumps(sub))
    return d


def test_synthetic_folder_passes(tmp_path):
    report = inspect_record(make_folder(tmp_path))
    assert report.violations == [] and report.score_kind == "final_sliding_window"


def test_score_kind_follows_the_submission(tmp_path):
    """Submitted: the TTT mean. Read: the timestamp-prefixed legal_ttt_exact lines (and not the sliding ones)."""
    ttt_mean = sum(t for _, t in SCORES.values()) / 3
    report = inspect_record(make_folder(tmp_path, val_bpb=ttt_mean))
    assert report.violations == [] and report.score_kind == "legal_ttt"


def test_a_submitted_score_no_log_shows_fails(tmp_path):
    problems = check_record(make_folder(tmp_path, val_bpb=1.0700))
    assert len(problems) == 1 and problems[0].startswith("submission.json: val_bpb 1.07 is shown by no log")


@pytest.mark.parametrize(
    "calib",
    [
        "GPTQ:collected 67 Hessians in 10.5s",
        "gptq:calibrated 66 layers in 10.5s",
        "gptq_hessians: layers:44 time:10.50s",
    ],
)
def test_calibration_on_training_data_counts(tmp_path, calib):
    problems = check_record(make_folder(tmp_path, calib=calib))
    assert len(problems) == 3
    assert problems[0].startswith("train_seed42.log: train time 600500 ms = 590000 ms of training + 10500 ms")
    assert calib in problems[0]


def test_self_generated_calibration_does_not_count(tmp_path):
    extra = ("gptq:generating autoregressive calibration data...",)
    d = make_folder(tmp_path, calib="gptq:collected hessians for 33 layers in 20.0s", extra=extra)
    assert check_record(d) == []


def test_helper_code_the_run_uses_counts_toward_the_cap(tmp_path):
    """A script that loads a helper shipped beside it: the logged total counts the script only."""
    script = "exec(open('helper_kernels.py').read())\n"
    d = make_folder(tmp_path, script=script, model=15_990_000)
    (d / "helper_kernels.py").write_text("x = 1\n" * 3000)
    problems = check_record(d)
    assert len(problems) == 3
    assert "leaves out 18000 bytes of code the run uses (train_gpt.py, helper_kernels.py)" in problems[0]
    (d / "helper_kernels.py").write_text("x = 1\n")  # small enough: within the cap
    assert check_record(d) == []


def test_inconsistencies_are_warnings_not_failures(tmp_path):
    d = make_folder(tmp_path)
    sub = json.loads((d / "submission.json").read_text())
    del sub["blurb"]
    sub["bytes_total"] = 15_800_000  # the model only
    sub["seed_results"] = {"42": {"steps": 5001}}  # a rounded step count
    (d / "submission.json").write_text(json.dumps(sub))
    report = inspect_record(d)
    assert report.violations == []
    texts = [f.text for f in report.warnings]
    assert "submission.json: missing key 'blurb'" in texts
    assert any("bytes_total 15800000 is no seed's logged total (a logged model size" in t for t in texts)
    assert "submission.json: seed_results[42].steps 5001 disagrees with the log (5000)" in texts


def test_logs_in_other_layouts_and_seeds_from_the_log(tmp_path):
    """logs/ subfolder, .txt names with no seed in them, submission_*.json: seeds come from the logs themselves."""
    d = make_folder(tmp_path)
    (d / "logs").mkdir()
    for i, seed in enumerate(SCORES):
        (d / f"train_seed{seed}.log").rename(d / "logs" / f"run{i}.txt")
    (d / "submission.json").rename(d / "submission_synthetic.json")
    report = inspect_record(d)
    assert report.violations == []
    assert {s: v["log"] for s, v in report.seeds.items()} == {
        42: "logs/run0.txt",
        314: "logs/run1.txt",
        999: "logs/run2.txt",
    }
    assert "the submission file is submission_synthetic.json, not submission.json" in [f.text for f in report.warnings]


def test_track_rules_come_from_the_folder(tmp_path):
    d = make_folder(tmp_path, track=NON_RECORD, train_ms=3_600_000)
    for seed in (314, 999):
        (d / f"train_seed{seed}.log").unlink()
    sub = json.loads((d / "submission.json").read_text())
    sub |= {"seeds": [42], "val_bpb": SCORES[42][0]}
    (d / "submission.json").write_text(json.dumps(sub))
    assert check_record(d) == []  # a non-record: one seed, no time limit
    moved = tmp_path / RECORD / "2026-04-02_Moved"
    moved.parent.mkdir()
    d.rename(moved)
    problems = check_record(moved)
    assert any(p.startswith("train_seed42.log: train time 3600000 ms") for p in problems)
    assert "only 1 seed(s) with a score (42); the track_10min_16mb track asks for at least 3" in problems


def test_a_truncated_upstream_log_never_passes(tmp_path):
    """A log that begins at a training step (the tail of a log) is refused, quoting its first line."""
    d = make_folder(tmp_path)
    log = d / "train_seed42.log"
    lines = log.read_text().splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.startswith("step:500/"))
    log.write_text("".join(lines[start:]))
    problems = check_record(d)
    assert len(problems) == 1
    assert problems[0].startswith("train_seed42.log: not a valid log: it begins with training steps")
    assert problems[0].endswith("[line 1: step:500/20000 train_loss:3.9000 train_time:59000ms step_avg:118.00ms]")


def test_a_seed_whose_logs_show_no_size_fails(tmp_path):
    d = make_folder(tmp_path)
    log = d / "train_seed999.log"
    log.write_text("".join(line for line in log.read_text().splitlines(True) if "bytes" not in line))
    assert check_record(d) == [
        "seed 999: no log shows the artifact's size (train_seed999.log has no Serialized model / Total submission "
        "size line): the byte cap cannot be checked"
    ]
