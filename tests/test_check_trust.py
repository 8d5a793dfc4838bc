"""pgolf check as the maintainers' tool (issue 30) and the check side of issue 29: a score on part of the validation
split, forged but consistent logs, figures on every verdict, seeds matched by content, the shipped code against the
logged code, the counted code size, the hardware, severity first, compare's margin test; the parsed record object.
Synthetic folders (``test_check_corpus.make_folder``) run without ../shared; the frontier record is read from it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from conftest import SHARED
from test_check_corpus import RECORD, SCORES, make_folder, upstream_log

from pgolf import check, compare
from pgolf.check import inspect_record
from pgolf.compare import compare_records
from pgolf.recordfolder import code_recipe, counted_code_size, embedded_code, parse_record
from pgolf.rules import RULES

FRONTIER = SHARED / "fixtures" / "frontier" / "2026-05-01_SP8192_PR2130Base_Calib32"


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="pgolf")
    sub = parser.add_subparsers(dest="command", required=True)
    check.register(sub)
    compare.register(sub)
    args = parser.parse_args(argv)
    return args.func(args)


def texts(report, severity="violation"):
    return [f.text for f in report.findings if f.severity == severity]


def add_line(log: Path, line: str, before: str = "final_sliding_window_exact") -> None:
    lines = log.read_text().splitlines(keepends=True)
    i = next(i for i, x in enumerate(lines) if x.startswith(before))
    log.write_text("".join(lines[:i] + [line + "\n"] + lines[i:]))


def set_sub(d: Path, **kw) -> None:
    sub = json.loads((d / "submission.json").read_text())
    sub.update(kw)
    (d / "submission.json").write_text(json.dumps(sub))


# ----------------------------------------------------------------------------------------------------------------
# issue 29 (a): a score on part of the validation split


SCOPE = "val_scope: scored_tokens:{} scored_bytes:{} split_tokens:8590 split_bytes:20981"


def test_a_score_on_the_whole_split_passes(tmp_path):
    d = make_folder(tmp_path)
    for seed in SCORES:
        add_line(d / f"train_seed{seed}.log", SCOPE.format(8590, 20981))
    assert inspect_record(d).violations == []


def test_a_score_on_part_of_the_split_is_a_violation(tmp_path):
    """The .test config with eval.val_tokens_limit: 2048 scored 2,048 of 8,590 tokens."""
    d = make_folder(tmp_path)
    for seed in SCORES:
        add_line(d / f"train_seed{seed}.log", SCOPE.format(8590 if seed != 314 else 2048, 20981))
    report = inspect_record(d)
    assert texts(report) == [
        "train_seed314.log: scored 2048 of the validation split's 8590 tokens (20981 of 20981 bytes): a score on "
        "part of the validation split"
    ]
    assert "val_scope: scored_tokens:2048" in report.violations[0].evidence


def test_the_split_must_be_the_one_submission_json_names(tmp_path):
    d = make_folder(tmp_path)
    for seed in SCORES:
        add_line(d / f"train_seed{seed}.log", SCOPE.format(8590, 20981))
    set_sub(d, data={"name": "fineweb10B_sp1024", "val_tokens": 62021846, "val_bytes": 20981})
    v = texts(inspect_record(d))
    assert len(v) == 3
    assert (
        v[0]
        == "train_seed42.log: the validation split has 8590 tokens but submission.json data.val_tokens says 62021846"
    )


def test_upstream_val_tokens_fewer_than_another_seed_is_a_warning(tmp_path):
    d = make_folder(tmp_path)
    for seed in SCORES:
        add_line(d / f"train_seed{seed}.log", f"val_tokens: {47851520 if seed != 999 else 40000000}", "step:1/")
    w = texts(inspect_record(d), "warning")
    assert any(t.startswith("train_seed999.log: val_tokens 40000000, fewer than another backing log") for t in w)


# ----------------------------------------------------------------------------------------------------------------
# issue 29 (b): forged but consistent logs


def test_a_forged_score_line_breaks_the_loss_per_bpb_constant(tmp_path):
    """Seed 42's val_bpb edited in its log and in submission.json together (val_loss left): a violation."""
    d = make_folder(tmp_path)
    log = d / "train_seed42.log"
    log.write_text(log.read_text().replace("val_bpb:1.08100000", "val_bpb:1.07000000"))
    set_sub(d, val_bpb=round((1.0700 + SCORES[314][0] + SCORES[999][0]) / 3, 8))
    report = inspect_record(d)
    assert len(report.violations) == 1
    assert report.violations[0].text.startswith(
        "train_seed42.log: val_loss/val_bpb = 2.606523 on this score line, but 2.580000 on 2 of the 2"
    )
    assert report.violations[0].evidence.endswith("val_loss:2.78898000 val_bpb:1.07000000")


def test_honest_logs_keep_the_constant(tmp_path):
    assert not any("val_loss/val_bpb" in t for t in texts(inspect_record(make_folder(tmp_path))))


# ----------------------------------------------------------------------------------------------------------------
# issue 30: submission.json


@pytest.mark.parametrize("value", ["1.0810", None])
def test_a_quoted_or_null_score_is_a_violation(tmp_path, value):
    d = make_folder(tmp_path)
    set_sub(d, val_bpb=value)
    assert f"submission.json: val_bpb is not a number ({value!r})" in texts(inspect_record(d))


def test_empty_author_or_github_id_and_an_empty_script(tmp_path):
    d = make_folder(tmp_path, script="")
    set_sub(d, author=" ", github_id="")
    v = texts(inspect_record(d))
    assert "submission.json: author is empty" in v and "submission.json: github_id is empty" in v
    assert "train_gpt.py is empty (0 bytes): no training script" in v


# ----------------------------------------------------------------------------------------------------------------
# figures on every verdict, --json, severity first


def test_a_pass_gives_its_figures(tmp_path, capsys):
    d = make_folder(tmp_path, calib="GPTQ:collected 67 Hessians in 5.5s")
    report = inspect_record(d)
    assert report.violations == []
    f = report.figures[42]
    assert f["bytes_counted"] == 15_800_000 + len("print(1)\n")
    assert f["bytes_margin"] == 16_000_000 - f["bytes_counted"]
    assert (f["train_loop_s"], f["calibration_s"], f["train_s"]) == (590.0, 5.5, 595.5)
    assert f["train_margin_s"] == pytest.approx(4.5)
    assert (f["eval_s"], f["eval_margin_s"]) == (380.0, 220.0)
    assert f["score_line"].startswith("line ") and "final_sliding_window_exact" in f["score_line"]
    assert cli(["check", str(d)]) == 0
    out = capsys.readouterr().out
    assert "train: 590.0 s loop + 5.5 s calibration on training data = 595.5 s vs 600 s: margin +4.5 s left" in out
    assert "eval: 380.0 s vs 600 s: margin +220.0 s left" in out
    assert cli(["check", str(d), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["verdict"] == "PASS" and data["seeds"]["42"]["train_s"] == 595.5


def test_all_shows_the_most_severe_violation(tmp_path, capsys):
    d = make_folder(tmp_path, train_ms=620_000)
    set_sub(d, github_id=None)
    (d / "submission.json").write_text((d / "submission.json").read_text().replace('"github_id": null, ', ""))
    report = inspect_record(d)
    assert report.violations[0].text.startswith("submission.json: missing key 'github_id'")
    assert report.worst.text.startswith("train_seed42.log: train time 620000 ms")
    assert cli(["check", "--all", str(tmp_path)]) == 1
    line = capsys.readouterr().out.splitlines()[1]
    assert "train_seed42.log: train time 620000 ms" in line
    assert cli(["check", "--all", str(tmp_path), "--markdown"]) == 1
    assert capsys.readouterr().out.startswith("| folder | verdict |")


# ----------------------------------------------------------------------------------------------------------------
# seeds matched by content


def test_a_mislabelled_seed_is_found_by_its_score(tmp_path):
    """submission.json says seed 7 for the run its log (of another name) says is seed 999."""
    d = make_folder(tmp_path)
    (d / "train_seed999.log").rename(d / "run_b.log")
    set_sub(
        d,
        seeds=[42, 314, 7],
        seed_results={"42": {"val_bpb": SCORES[42][0]}, "314": {"val_bpb": SCORES[314][0]}, "7": {"val_bpb": 1.0809}},
    )
    report = inspect_record(d)
    assert report.violations == []
    assert (
        "seed 7 is claimed but no log states it; run_b.log shows its submitted val_bpb 1.0809 and says seed 999: a "
        "mislabelled seed (read as seed 999)"
    ) in texts(report, "warning")


# ----------------------------------------------------------------------------------------------------------------
# the machine, the code


def test_hardware_other_than_8xh100_is_a_warning(tmp_path):
    d = make_folder(tmp_path)
    row = "|   {}  NVIDIA A100-SXM4-80GB          On  |   00000000:18:00.0 Off |                    0 |"
    for i in range(4):
        add_line(d / "train_seed42.log", row.format(i), "step:1/")
    w = texts(inspect_record(d), "warning")
    assert "train_seed42.log: the log's GPU table shows 4 GPU(s) (NVIDIA A100-SXM4-80GB), not 8×H100" in w


SCRIPT = '"""doc"""\nimport os\n\nx = 1\ny = 2\n'


def test_logged_source_against_the_shipped_script(tmp_path):
    d = make_folder(tmp_path, script=SCRIPT.replace("y = 2", "y = 3\nz = 4"))
    for seed in SCORES:
        log = d / f"train_seed{seed}.log"
        log.write_text(SCRIPT + "\n" + "=" * 100 + "\n" + log.read_text())
    assert embedded_code((d / "train_seed42.log").read_text()) == SCRIPT
    w = texts(inspect_record(d), "warning")
    assert (
        "train_seed42.log: the log begins with the source of the script that made it, which is not the shipped "
        "train_gpt.py: +6 bytes, 2 line(s) changed (shipped file's lines 5-6)"
    ) in w


def test_logged_code_size_against_the_shipped_script(tmp_path):
    d = make_folder(tmp_path)
    for seed in SCORES:
        log = d / f"train_seed{seed}.log"
        log.write_text(log.read_text().replace("Code size: 9 bytes", "Code size (uncompressed): 157868 bytes"))
    w = texts(inspect_record(d), "warning")
    assert any(
        t.startswith("train_seed42.log: logs a code size of 157868 bytes but train_gpt.py is 9 bytes (-157859 bytes)")
        for t in w
    )


RECIPE = """
def _compressed_code_size(code):
    code_raw = code.encode("utf-8")
    minified = subprocess.run(
        ["pyminify", "--no-rename-locals", "--no-hoist-literals", "--remove-literal-statements", "-"],
        input=code_raw, capture_output=True, check=True,
    ).stdout
    compressed = lzma.compress(minified)
    encoded = base64.b85encode(compressed)
    wrapper = b'import lzma as L,base64 as B\\nexec(L.decompress(B.b85decode("' + encoded + b'")))\\n'
    return len(code_raw), len(wrapper)
"""


def test_counted_code_size_against_the_log(tmp_path):
    script = "import lzma, base64, subprocess\n" + RECIPE + "\nprint(1)\n" * 50
    counted = counted_code_size(script, code_recipe(script))
    assert code_recipe(script)["compressor"] == "lzma" and 200 < counted < 1000
    d = make_folder(tmp_path, script=script)
    for seed in SCORES:
        log = d / f"train_seed{seed}.log"
        log.write_text(
            log.read_text().replace(
                f"Code size: {len(script)} bytes",
                f"Code size (uncompressed): {len(script)} bytes\nCode size (compressed): {counted} bytes",
            )
        )
    assert not any("counted (compressed)" in t for t in texts(inspect_record(d), "warning"))
    for seed in SCORES:
        log = d / f"train_seed{seed}.log"
        log.write_text(log.read_text().replace(f"(compressed): {counted} bytes", "(compressed): 100 bytes"))
    report = inspect_record(d)
    assert any(
        t.startswith("train_seed42.log: logs a counted (compressed) code size of 100 bytes")
        for t in texts(report, "warning")
    )
    assert report.figures[42]["code_counted_shipped_script"] == counted


def test_the_frontier_script_counts_as_its_log_says():
    """#2135's train_seed42.log: ``Code size (compressed): 37155 bytes`` (python-minifier 3.2.0, lzma, base85)."""
    if not FRONTIER.is_dir():
        pytest.skip(f"the frontier record is not at {FRONTIER} (it lives in the shared folder)")
    text = (FRONTIER / "train_gpt.py").read_text(encoding="utf-8")
    assert counted_code_size(text) == 37155


def test_the_frontier_verdict():
    """#2135 (1.05651): every seed's loop ends under 600 s, then 6.9 s of GPTQ Hessians on training data."""
    if not FRONTIER.is_dir():
        pytest.skip(f"the frontier record is not at {FRONTIER} (it lives in the shared folder)")
    report = inspect_record(FRONTIER)
    assert report.score_kind == "quantized_ttt_phased" and sorted(report.figures) == [0, 42, 314]
    assert [f.text.split(":")[0] for f in report.violations] == [
        "train_seed0.log",
        "train_seed42.log",
        "train_seed314.log",
    ]
    assert "606572 ms = 599672 ms of training + 6900 ms of calibration" in report.violations[1].text
    assert all(0 < f["bytes_margin"] < 30_000 for f in report.figures.values())


def test_check_never_runs_the_folder_s_code(tmp_path):
    """A train_gpt.py (and a helper it imports) that would write a file when imported or run leaves no file."""
    marker = tmp_path / "ran.txt"
    payload = f"open({str(marker)!r}, 'w').write('ran')\n"
    d = make_folder(tmp_path, script="import helper_kernels\n" + payload)
    (d / "helper_kernels.py").write_text(payload)
    inspect_record(d)
    compare_records(d, d)
    assert cli(["check", str(d), "--json"]) == 0
    assert not marker.exists()


# ----------------------------------------------------------------------------------------------------------------
# compare, the parsed record


def test_compare_margin_strict_and_best_of(tmp_path, capsys):
    a = make_folder(tmp_path / "a")
    b = make_folder(tmp_path / "b")
    for seed, (sw, ttt) in SCORES.items():
        (b / f"train_seed{seed}.log").write_text(upstream_log(seed, sw + 0.01, ttt + 0.01))
    set_sub(b, val_bpb=round(sum(sw + 0.01 for sw, _ in SCORES.values()) / 3, 8))
    set_sub(a, blurb="best 3 of 5 seeds")
    res = compare_records(a, b)
    assert res["clears_readme_rule"] is True and res["p_value_margin"] < res["p_value"] + 1
    assert 0 < res["p_value_margin"] < 0.01 and res["margin_bpb"] == pytest.approx(0.005 / 2.58)
    assert any("best 3 of 5 seeds" in w for w in res["warnings"])
    assert cli(["compare", "--strict", str(a), str(b)]) == 0
    assert cli(["compare", "--strict", str(b), str(a)]) == 1
    assert "--strict: A does not clear the README's rule" in capsys.readouterr().out


def test_one_parsed_record_for_every_rule(tmp_path):
    folder = parse_record(make_folder(tmp_path))
    assert sorted(folder.logs) == [f"train_seed{s}.log" for s in sorted(SCORES, key=str)]
    assert folder.track == RECORD and folder.claimed == list(SCORES)
    assert inspect_record(folder).violations == []
    for r in RULES:
        assert r.cites and r.check.__doc__, r.name


# ----------------------------------------------------------------------------------------------------------------
# the GitHub Action's script, on a stand-in upstream repository


def git(repo: Path, *args: str) -> str:
    import subprocess

    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    import os

    proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, env={**os.environ, **env})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_the_action_checks_the_folder_a_pull_request_adds(tmp_path):
    from pgolf.prcheck import added_record_folders, main

    repo = tmp_path / "parameter-golf"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    old = make_folder(repo / "records" / "old")  # records/old/track_10min_16mb/...: already merged, not re-checked
    (repo / "README.md").write_text("# parameter-golf\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "base")
    base = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-qb", "pr")
    d = make_folder(tmp_path / "stage", train_ms=620_000)  # over the training budget
    marker = tmp_path / "ran.txt"
    (d / "train_gpt.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    target = repo / "records" / RECORD / d.name
    target.parent.mkdir(parents=True)
    d.rename(target)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "add a record")
    head = git(repo, "rev-parse", "HEAD")
    assert added_record_folders(repo, base, head) == [target]
    assert old.is_dir()
    summary = tmp_path / "summary.md"
    assert main(["--repo", str(repo), "--base", base, "--head", head, "--summary", str(summary)]) == 1
    text = summary.read_text()
    assert text.startswith("## pgolf check: the record folders this pull request adds")
    assert f"| `records/{RECORD}/{d.name}` | **FAIL** |" in text and "train time 620000 ms" in text
    assert not marker.exists()  # the PR's script was read, never run
    assert main(["--repo", str(repo), "--base", base, "--head", base, "--summary", str(summary)]) == 0
    assert summary.read_text().endswith("adds no record folder under records/track_*/\n")
