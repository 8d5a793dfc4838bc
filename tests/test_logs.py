"""parse_log on the upstream record logs (read from ../shared at run time) and on synthetic logs."""

from __future__ import annotations

import json

import pytest
from conftest import APRIL, MARCH, NAIVE, fixture

from pgolf.logs import best_of_kind, metric_kind, parse_log, progress_line


def submission(name: str) -> dict:
    return json.loads((fixture(name) / "submission.json").read_text())


def test_naive_baseline_score_and_fields():
    info = parse_log(fixture(NAIVE) / "train.log")
    assert info["score"]["tag"] == "final_int8_zlib_roundtrip_exact"
    assert info["score"]["val_bpb"] == submission(NAIVE)["val_bpb"]
    assert info["score"]["val_loss"] == submission(NAIVE)["val_loss"]
    assert info["steps"] == 13780 and info["iterations"] == 20000
    assert info["stopped_early"] is True
    assert info["train_time_ms"] == 600038
    assert info["step_avg_ms"] == 43.54
    assert info["seed"] == 1337
    assert info["model_bytes"] == 15815847 and info["raw_model_bytes"] == 67224983
    assert info["code_bytes"] == submission(NAIVE)["bytes_code"] == 47642
    assert info["bytes_total"] == submission(NAIVE)["bytes_total"]  # the int8+zlib total, not the raw one
    assert info["quant_format"] == "int8+zlib"
    assert info["eval_times_ms"] == {"final_int8_zlib_roundtrip": 1401.0}
    assert info["eval_time_s"] == pytest.approx(1.401)
    assert info["pre_quant"]["val_bpb"] == 1.2172  # the last step validation
    assert info["train_losses"][:2] == [(1, 6.9408), (2, 16.8763)]
    assert info["val_points"][-1] == (13780, 2.0606, 1.2172)


def test_march_record_best_seed_log_matches_submission():
    sub = submission(MARCH)
    info = parse_log(fixture(MARCH) / "train.log")
    assert info["score"] == {
        "tag": "final_int6_sliding_window_exact",
        "val_loss": sub["val_loss"],
        "val_bpb": sub["val_bpb"],
    }
    assert info["roundtrip"]["val_bpb"] == sub["int6_zstd_val_bpb"]
    assert info["pre_quant"]["val_bpb"] == sub["pre_quant_val_bpb"]
    assert info["bytes_total"] == sub["bytes_total"]
    assert info["model_bytes"] == sub["bytes_model_int6_zstd"]
    assert info["code_bytes"] == sub["bytes_code"]
    assert info["seed"] == 2025
    assert info["final"]["final_int6_sliding_window"]["stride"] == 64


@pytest.mark.parametrize("seed", [42, 1337, 2025])
def test_march_seed_logs(seed):
    info = parse_log(fixture(MARCH) / f"train_seed{seed}.log")
    assert info["seed"] == seed
    assert info["score"]["tag"] == "final_int6_sliding_window_exact"
    assert info["iterations"] == 9000
    assert info["stopped_early"]
    tags = list(info["final"])
    assert tags == [
        "final_int6_roundtrip",
        "final_int6_roundtrip_exact",
        "final_int6_sliding_window",
        "final_int6_sliding_window_exact",
    ]
    # eval time: roundtrip + sliding-window passes
    assert info["eval_time_s"] == pytest.approx(sum(info["eval_times_ms"].values()) / 1000)


def test_march_mean_over_seeds_is_the_readme_mean():
    scores = [parse_log(fixture(MARCH) / f"train_seed{s}.log")["score"]["val_bpb"] for s in (42, 1337, 2025)]
    assert round(sum(scores) / 3, 4) == 1.1250  # "Mean val_bpb: 1.1250" in its README


def test_april_record_seeds_match_seed_results_and_mean():
    sub = submission(APRIL)
    scores = []
    for seed, entry in sub["seed_results"].items():
        info = parse_log(fixture(APRIL) / f"train_seed{seed}.log")
        assert info["seed"] == int(seed)
        assert info["score"]["tag"] == "quantized_ttt_phased"
        assert info["score"]["val_bpb"] == entry["val_bpb"]
        assert info["score"]["val_loss"] == entry["val_loss"]
        assert info["bytes_total"] == entry["artifact_bytes"]
        assert info["steps"] == entry["steps"]
        assert info["eval_time_s"] == entry["eval_time_s"]  # total_eval_time
        scores.append(info["score"]["val_bpb"])
    assert sum(scores) / len(scores) == pytest.approx(sub["val_bpb"], abs=1e-8)


def test_april_record_new_style_fields():
    info = parse_log(fixture(APRIL) / "train_seed42.log")
    assert info["steps"] == 4945 and info["iterations"] == 20000
    assert info["train_time_ms"] == 599592  # from the stopping line (step lines only log minutes)
    assert info["step_avg_ms"] == pytest.approx(599592 / 4945)
    assert info["train_losses"][:2] == [(1, 9.0087), (2, 12.8281)]
    assert info["val_points"] == [(4945, 2.3539, 1.0756)]
    assert info["pre_quant"]["tag"] == "diagnostic_pre-quantization_post-ema"
    assert info["pre_quant"]["val_bpb"] == 1.06395844
    assert info["roundtrip"]["tag"] == "diagnostic_quantized"
    assert info["code_bytes"] == 31999 and info["code_bytes_uncompressed"] == 157868
    assert info["model_bytes"] + info["code_bytes"] == info["bytes_total"] == 15897259
    assert info["total_eval_time_s"] == 508.8
    assert info["hyperparameters"]["seed"] == "42"
    assert info["hyperparameters"]["ttt_lora_rank"] == "80"
    assert info["hyperparameters"]["artifact_dir"] == ""
    assert "gate_int8_row" not in info["hyperparameters"]  # the "Quantized weights:" block is not hyperparameters


OUR_LOG = """\
W0318 14:37:59.159000 871689 site-packages/torch/distributed/run.py:852] *****
NCCL version 2.27.5+cuda12.9
[2026-03-18 14:38:12] pgut1-0:871784:871848 [5] ibvwrap.c:94 NCCL WARN Call to ibv_open_device failed
warmup_step:1/2
step:1/100 train_loss:6.9000 train_time:50ms step_avg:50.00ms\r\n\
step:50/100 train_loss:4.0000 train_time:2500ms step_avg:50.00ms
something unknown: 12 bytes
3/4 of the way there
[rank0]: step:100/100 train_loss:3.5000 train_time:5000ms step_avg:50.00ms
step:100/100 val_loss:3.6000 val_bpb:2.1000 train_time:5000ms step_avg:50.00ms
pre_quant val_loss:3.5500 val_bpb:2.0700 eval_time:900ms
pre_quant_exact val_loss:3.55001234 val_bpb:2.07001234
pgolf_summary {"stage": "train", "seed": 7, "steps": 100, "train_time_s": 5.0}
Serialized model int6_zstd: 900000 bytes (raw payload 3000000 bytes)
Code size: 50000 bytes
Total submission size int6_zstd: 950000 bytes
pgolf_summary {"stage": "quantize", "artifact_bytes": 900000, "code_bytes": 50000, "bytes_total": 950000}
progress 10%\rprogress 50%\rprogress 100%
final_int6_zstd_roundtrip val_loss:3.6100 val_bpb:2.1100 eval_time:1000ms
final_int6_zstd_roundtrip_exact val_loss:3.61001234 val_bpb:2.11001234
final_int6_zstd_sliding_window val_loss:3.5900 val_bpb:2.0900 stride:64 eval_time:4000ms
final_int6_zstd_sliding_window_exact val_loss:3.59001234 val_bpb:2.09001234
total_eval_time:5.2s
pgolf_summary {"stage": "eval", "eval_time_s": 5.234, "val_bpb": 2.09001234, "val_loss": 3.59001234}
pgolf_summary {not json
"""


def test_our_format_with_noise_and_carriage_returns():
    info = parse_log(OUR_LOG)
    assert info["steps"] == 100 and info["iterations"] == 100
    assert info["train_losses"] == [(1, 6.9), (50, 4.0), (100, 3.5)]
    assert info["val_points"] == [(100, 3.6, 2.1)]
    assert info["train_time_ms"] == 5000 and info["step_avg_ms"] == 50.0
    assert not info["stopped_early"]
    assert info["score"] == {
        "tag": "final_int6_zstd_sliding_window_exact",
        "val_loss": 3.59001234,
        "val_bpb": 2.09001234,
    }
    assert info["roundtrip"]["val_bpb"] == 2.11001234
    assert info["pre_quant"] == {"tag": "pre_quant_exact", "val_loss": 3.55001234, "val_bpb": 2.07001234}
    assert info["model_bytes"] == 900000 and info["code_bytes"] == 50000 and info["bytes_total"] == 950000
    assert info["quant_format"] == "int6_zstd"
    assert info["seed"] == 7  # from the train-stage pgolf_summary
    assert info["eval_time_s"] == 5.2  # the logged total_eval_time wins over the summary
    assert [s["stage"] for s in info["summaries"]] == ["train", "quantize", "eval"]
    assert metric_kind("pre_quant_exact") == "pre_quant"


def test_eval_time_from_summary_when_no_total_line():
    text = "\n".join(line for line in OUR_LOG.splitlines() if not line.startswith("total_eval_time"))
    assert parse_log(text)["eval_time_s"] == 5.234


def test_score_precedence():
    lines = [
        "final_int6_roundtrip_exact val_loss:2.00000000 val_bpb:1.20000000",
        "final_int6_roundtrip val_loss:2.0000 val_bpb:1.2000 eval_time:1000ms",
    ]
    assert parse_log("\n".join(lines))["score"]["tag"] == "final_int6_roundtrip_exact"
    lines.append("final_int6_sliding_window val_loss:1.9000 val_bpb:1.1000 stride:64 eval_time:2000ms")
    assert parse_log("\n".join(lines))["score"]["tag"] == "final_int6_sliding_window"  # rounded sliding > exact rt
    lines.append("final_int6_sliding_window_exact val_loss:1.90000001 val_bpb:1.10000001")
    assert parse_log("\n".join(lines))["score"]["val_bpb"] == 1.10000001
    lines.append("legal_ttt_exact val_loss:1.80000000 val_bpb:1.05000000")
    assert parse_log("\n".join(lines))["score"]["tag"] == "legal_ttt_exact"  # the later line of the top class
    lines.append("diagnostic pre-quantization val_loss:1.0 val_bpb:0.5")
    assert parse_log("\n".join(lines))["score"]["tag"] == "legal_ttt_exact"  # pre-quant is never the score


def test_stopping_line_and_empty_log(tmp_path):
    info = parse_log("stopping_early: wallclock_cap train_time: 600500ms step: 300/1000\n")
    assert info["stopped_early"] and info["train_time_ms"] == 600500 and info["steps"] == 300
    assert info["step_avg_ms"] == pytest.approx(600500 / 300)
    empty = parse_log("")
    assert empty["score"] is None and empty["steps"] is None and empty["final"] == {}
    path = tmp_path / "x.log"
    path.write_text("seed:5\nfinal_int8_zlib_roundtrip_exact val_loss:2.5 val_bpb:1.5\n")
    for source in (path, str(path)):
        info = parse_log(source)
        assert info["seed"] == 5 and info["score"]["val_bpb"] == 1.5


@pytest.mark.parametrize(
    ("line", "budget", "expected"),
    [
        (
            "step:60/240 train_loss:4.2774 train_time:178150ms step_avg:2969.16ms",
            600,
            "progress: step 60/240, loss 4.2774, elapsed 178.2s of 600s budget, ETA 422s",
        ),
        (
            "step:60/240 train_loss:4.2774 train_time:178150ms step_avg:2969.16ms",
            0,
            "progress: step 60/240, loss 4.2774, elapsed 178.2s (no time budget), ETA 534s",
        ),
        (
            "[rank0]: 500/20000 train_loss: 2.5615 train_time: 0.8m tok/s: 8217810",
            600,
            "progress: step 500/20000, loss 2.5615, elapsed 48.0s of 600s budget, ETA 552s",
        ),
        (
            "step:200/2000 val_loss:2.8397 val_bpb:1.6774 train_time:8700ms step_avg:43.50ms",
            600,
            "progress: step 200/2000, val_loss 2.8397, elapsed 8.7s of 600s budget, ETA 78s",
        ),
        ("warmup_step:1/20", 600, None),
        ("4945/20000 val_loss: 2.3539 val_bpb: 1.0756", 600, None),
        ("final_int6_roundtrip val_loss:1.9394 val_bpb:1.1486 eval_time:6093ms", 600, None),
    ],
)
def test_progress_line(line, budget, expected):
    assert progress_line(line, budget) == expected


def test_best_of_kind():
    info = parse_log(OUR_LOG)
    assert best_of_kind(info, "sliding") == {
        "tag": "final_int6_zstd_sliding_window_exact",
        "val_loss": 3.59001234,
        "val_bpb": 2.09001234,
    }
    assert best_of_kind(info, "roundtrip")["tag"] == "final_int6_zstd_roundtrip_exact"
    assert best_of_kind(info, "ttt") is None
    assert info["step_avg_logged"] is True
    assert parse_log("stopping_early: wallclock_cap train_time:600ms step:3/10\n")["step_avg_logged"] is False


# ----------------------------------------------------------------------------------------------------------------
# the other layouts real records use (synthetic lines in their formats)


@pytest.mark.parametrize(
    "line, tag, bpb, extra",
    [
        (
            "final_sliding_window_eval_exact stride:64 val_loss:1.9100 val_bpb:1.1300",
            "final_sliding_window_eval_exact",
            1.13,
            {"stride": 64},
        ),
        (
            "1776144163.319 quantized_ttt_phased val_loss:2.3200 val_bpb:1.0600 eval_time:500000ms",
            "quantized_ttt_phased",
            1.06,
            {"eval_time_ms": 500000.0},
        ),
        ("ttt_sliding:done val_loss=1.8900 val_bpb=1.1190 elapsed=480.1s", "ttt_sliding:done", 1.119, {}),
        ("final_sliding val_loss:3.1100 val_bpb:1.2000 (stride=16, T=1.02) time:130598ms", "final_sliding", 1.2, {}),
        ("final_INT7_zlib_roundtrip val_loss:2.0700 val_bpb:1.2300", "final_INT7_zlib_roundtrip", 1.23, {}),
    ],
)
def test_metric_line_layouts(line, tag, bpb, extra):
    entry = parse_log(line + "\n")["final"][tag]
    assert entry["val_bpb"] == pytest.approx(bpb) and entry.items() >= extra.items()


@pytest.mark.parametrize(
    "line, model, total, resolution",
    [
        ("INT7+zlib model: 15370000 bytes | Total submission: 15441000 bytes", 15_370_000, 15_441_000, 0),
        ("artifact:15.92MB ternary:64880640(14237274B) fp:2513744(2537376B) code:70000", 15_920_000, 15_990_000, 5000),
        ("INT4+fp8+brotli: 15.67MB model + 0.077MB code = 15.75/16.00MB FITS", 15_670_000, 15_750_000, 5000),
    ],
)
def test_size_line_layouts(line, model, total, resolution):
    info = parse_log(line + "\n")
    assert (info["model_bytes"], info["bytes_total"], info["bytes_total_resolution"]) == (model, total, resolution)
    assert info["evidence"]["bytes_total"] == f"line 1: {line}"


def test_calibration_formats():
    """Calibration on training data counts as training time; on self-generated data it does not."""
    assert parse_log("GPTQ:collecting Hessians from calibration data...\nGPTQ:collected 67 Hessians in 3.5s\n")[
        "calib_ms"
    ] == pytest.approx(3500)
    assert parse_log("gptq:calibrating with 64 batches (training data)...\ngptq:calibrated 66 layers in 9.7s\n")[
        "calib_ms"
    ] == pytest.approx(9700)
    selfgen = parse_log(
        "gptq:generating autoregressive calibration data...\ngptq:generated 32 seqs in 199.1s\n"
        "gptq:collecting hessians...\ngptq:collected hessians for 33 layers in 20.5s\n"
        "gptq:quantization complete in 223.4s total\n"
    )
    assert selfgen["calib_ms"] == 0 and selfgen["calib_selfgen_ms"] == pytest.approx(20500)
    assert parse_log("GPTQ:quantized in 12.0s\nGPTQ:compressed+saved in 4.0s\n")["calib_ms"] == 0


def test_eval_mode_and_data_names():
    info = parse_log(
        "Hyperparameters:\n  data_path: ./data/datasets/fineweb10B_sp1024\n"
        "  tokenizer_path: ./data/tokenizers/fineweb_1024_bpe.model\n"
        "final_eval_mode:sliding_window stride:64 batch_seqs:32\n"
        "final_int8_zlib_roundtrip_exact val_loss:1.93 val_bpb:1.14\n"
    )
    assert info["final"]["final_int8_zlib_roundtrip_exact"]["eval_mode"] == "sliding_window"
    assert (info["dataset"], info["tokenizer"]) == ("fineweb10B_sp1024", "fineweb_1024_bpe.model")


@pytest.mark.parametrize(
    "text, ok",
    [
        ("Hyperparameters:\n  seed: 1\nstep:1/10 train_loss:3.0 train_time:10ms\n", True),
        ("seed:1\nstep:1/10 train_loss:3.0 train_time:10ms\n", True),
        ('"""a script copy"""\nimport os\nstep:1/10 train_loss:3.0 train_time:10ms\n', True),
        ("step:50/250 train_loss:3.0 train_time:10ms\nfinal_x_roundtrip val_loss:2 val_bpb:1\n", False),
        ("final_x_roundtrip val_loss:2 val_bpb:1\n", True),  # an evaluation-only log: no steps, no header needed
        # our own logs: the header train_gpt.py writes (Running Python and the Hyperparameters block) comes first
        ("seed:1\nstep:1/10 train_loss:3.0 train_time:10ms\npgolf_summary {}\n", False),
        (
            "Running Python 3.12\nHyperparameters:\n  seed: 1\nstep:1/10 train_loss:3.0 train_time:10ms\n"
            'pgolf_summary {"stage": "train"}\n',
            True,
        ),
    ],
)
def test_log_start(text, ok):
    assert parse_log(text)["start"]["ok"] is ok
