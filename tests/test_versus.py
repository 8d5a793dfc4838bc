"""benchmarks/versus.py without a GPU (issue 28): staging the data, the schedule both scripts get, the run's
bookkeeping with the scripts' output replaced by a real #315 log and one of our summaries (--dry-run), and the table
of one or more calls. Reads ../shared (the data, the record's log); skips where it is absent."""

from __future__ import annotations

import importlib.util
import json
import lzma

import numpy as np
import pytest
from conftest import MARCH, REPO, SHARED, fixture


@pytest.fixture(scope="module")
def versus():
    spec = importlib.util.spec_from_file_location("versus", REPO / "benchmarks" / "versus.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def data(tmp_path, versus):
    """A staged folder as `stage` writes it, with two small train shards (the real ones are 80 MB each)."""
    official = SHARED / "data" / "fineweb_sp1024_official"
    if not (official / versus.VAL_PREFIX).is_file():
        pytest.skip(f"{official}: the FineWeb validation prefix is not here")
    d = tmp_path / "staged"
    d.mkdir()
    for name in versus.TRAIN_SHARDS:
        header = np.zeros(256, dtype="<i4")
        header[:3] = (20240520, 1, 1000)
        with lzma.open(d / name, "wb") as f:
            f.write(header.tobytes() + np.arange(1000, dtype="<u2").tobytes())
    for name in (versus.VAL_PREFIX, versus.TOKENIZER):
        (d / name).symlink_to(official / name)
    (d / "train_gpt_315.py").write_text("print('stand-in')\n")
    return d


def test_both_scripts_get_the_same_scaled_schedule(versus):
    env = versus.schedule(180, 7)
    assert env["MAX_WALLCLOCK_SECONDS"] == "180" and env["SEED"] == "7"
    assert env["WARMDOWN_ITERS"] == str(round(300 * 3000 / 7000))  # 180 s at 600 ms/step: 300 steps
    assert env["NUM_LAYERS"] == "11" and env["EVAL_STRIDE"] == "64" and env["VAL_LOSS_EVERY"] == "0"
    with pytest.raises(SystemExit, match="--ttt: 'TTT_EPOCHS' is not KEY=VALUE"):
        versus.parse_env("TTT_EPOCHS", "--ttt")


def test_a_dry_run_stages_the_data_and_tables_both_sides(versus, data, tmp_path, capsys):
    log = fixture(MARCH) / "train_seed1337.log"
    work, out1, out2 = tmp_path / "work", tmp_path / "call1", tmp_path / "call2"
    base = ["run", "--data", str(data), "--work", str(work), "--dry-run", str(log)]
    assert versus.main([*base, "--out", str(out1), "--side", "theirs"]) == 0
    for i in range(2):
        shard = work / "data" / f"fineweb_train_{i:06d}.bin"
        assert shard.stat().st_size == 1024 + 2000  # decompressed under the upstream name
    assert (work / "data" / "fineweb_val_000000.bin").resolve() == (data / versus.VAL_PREFIX).resolve()
    theirs = json.loads((out1 / "theirs.json").read_text())
    assert theirs["steps"] == 7063 and theirs["sliding_val_bpb"] == pytest.approx(1.12527, abs=1e-5)
    assert theirs["bytes_total"] == 15_639_340 and "SDPA stand-in" in theirs["attention"]
    assert (work / "theirs" / "stub" / "flash_attn_interface.py").is_file()
    summary = {
        "steps": 300,
        "step_avg_ms": 580.0,
        "sliding_val_bpb": 1.5,
        "ttt_val_bpb": 1.49,
        "val_tokens": versus.SCORED_TARGETS,
        "eval_time_s": 40.0,
        "ttt": {"ttt_epochs": 3},
        "ttt_timing": {"eval_time_s": 30.0, "ttt_score_s": 10.0, "ttt_train_s": 20.0, "ttt_chunks": 32,
                       "ttt_updates": 93, "ttt_params": 1000},
    }  # fmt: skip
    (tmp_path / "s.json").write_text(json.dumps(summary))
    argv = [*base, "--out", str(out2), "--side", "ours", "--tag", "leaky", "--ours-env", "RELU_SLOPE=0.5"]
    assert versus.main([*argv, "--dry-run-summary", str(tmp_path / "s.json")]) == 0
    ours = json.loads((out2 / "ours_leaky.json").read_text())
    scale = versus.OFFICIAL_VAL_TARGETS / versus.SCORED_TARGETS
    assert ours["ttt_projected_8xh100_s"] == pytest.approx([scale * 30 / 8, scale * (10 / 8 + 20)])
    assert ours["eval_projected_8xh100_s"][0] == pytest.approx(scale * 10 / 8 + scale * 30 / 8)
    assert ours["settings"] == {"RELU_SLOPE": "0.5"}
    env = json.loads((out2 / "ours_leaky.log").read_text().splitlines()[1].removeprefix("# env: "))
    assert env["VAL_TOKENS_LIMIT"] == "1038337" and env["RELU_SLOPE"] == "0.5" and env["COMPRESSOR"] == "brotli"
    assert env["TTT_EPOCHS"] == "3" and env["MAX_WALLCLOCK_SECONDS"] == "180"
    capsys.readouterr()
    assert versus.main(["table", str(out1), str(out2)]) == 0
    table = capsys.readouterr().out
    assert "| theirs: #315 (1.1248) train_gpt.py (SEED=1337) |" in table
    assert "| ours_leaky: src/pgolf/train_gpt.py (RELU_SLOPE=0.5 SEED=1337) |" in table
    assert "ours_leaky - #315 (mean of 1 run(s)), sliding: +0.37473 bpb" in table
    assert "ours_leaky TTT (ttt_epochs=3): -0.01000 bpb against the sliding pass" in table


def test_staging_refuses_a_missing_file(versus, data, tmp_path):
    (data / versus.TOKENIZER).unlink()
    with pytest.raises(SystemExit, match="fineweb_1024_bpe.model: missing"):
        versus.stage_data(data, tmp_path / "work")
