"""Evaluation: exact byte accounting on real text, rank-count independence, and the time-budget compliance check."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from conftest import SCRIPT, SHARED, run_script

from pgolf.cli import main as pgolf

OFFICIAL = SHARED / "data" / "fineweb_sp1024_official"


def official():
    if not (OFFICIAL / "fineweb_1024_bpe.model").is_file():
        pytest.skip(f"official tokenizer not found in {OFFICIAL} (it lives in the shared folder)")
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_file=str(OFFICIAL / "fineweb_1024_bpe.model"))


def doc_bytes(mod, sp, tokens: np.ndarray) -> tuple[int, int]:
    """(bytes counted over the tokens by the scorer's rule, UTF-8 bytes of the decoded documents)."""
    luts = mod.byte_luts(sp, 1024)
    counted = int(mod.token_bytes(tokens[:-1], tokens[1:], luts).sum())
    docs = np.split(tokens, np.flatnonzero(tokens == 1))[1:]
    return counted, sum(len(sp.decode(d[1:].tolist()).encode("utf-8")) for d in docs)


def test_bytes_on_fineweb_documents_with_the_official_tokenizer(train_script):
    sp = official()
    texts = [json.loads(line)["text"] for line in (OFFICIAL / "fineweb_docs_200.jsonl").open(encoding="utf-8")]
    tokens = np.concatenate([np.array([1] + sp.encode(t), dtype=np.int64) for t in texts])
    counted, decoded = doc_bytes(train_script, sp, tokens)
    assert counted == decoded and counted > 1_000_000


def test_bytes_on_the_official_validation_prefix(train_script):
    sp = official()
    from pgolf.data import read_shard

    tokens = read_shard(OFFICIAL / "fineweb_val_prefix_sp1024.bin").astype(np.int64)
    cut = int(np.flatnonzero(tokens == 1)[-1])  # complete documents only
    counted, decoded = doc_bytes(train_script, sp, tokens[:cut])
    assert counted == decoded
    assert 2.3 < counted / (cut - 1) < 2.5  # bytes per token of FineWeb (about 2.41 on this prefix)


@pytest.fixture(scope="module")
def artifact(tiny_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("artifact")
    run_script(["--stage", "train", "--checkpoint", str(tmp / "c.pt")], {"ITERATIONS": "3"}, tiny_data, tmp)
    run_script(
        ["--stage", "quantize", "--checkpoint", str(tmp / "c.pt"), "--artifact", str(tmp / "m.ptz")], {}, tiny_data, tmp
    )
    return tmp


@pytest.mark.slow
def test_two_ranks_score_exactly_what_one_rank_scores(tiny_data, artifact, tmp_path):
    res = []
    for nproc in (0, 2):
        out = tmp_path / f"e{nproc}.json"
        run_script(
            ["--stage", "eval", "--artifact", str(artifact / "m.ptz"), "--summary", str(out)],
            {"EVAL_STRIDE": "16"},
            tiny_data,
            tmp_path,
            nproc=nproc,
        )
        res.append(json.loads(out.read_text()))
    one, two = res
    assert one["val_tokens"] == two["val_tokens"] == tiny_data["val_tokens"] - 1
    assert one["val_bytes"] == two["val_bytes"]
    assert two["sliding_val_bpb"] == pytest.approx(one["sliding_val_bpb"], rel=1e-6)
    assert two["roundtrip_val_bpb"] == pytest.approx(one["roundtrip_val_bpb"], rel=1e-6)


def test_eval_time_is_the_scoring_alone_with_loading_and_compile_apart(tiny_data, artifact, tmp_path):
    from pgolf.logs import parse_log

    out, log = tmp_path / "e.json", tmp_path / "e.log"
    run_script(
        ["--stage", "eval", "--artifact", str(artifact / "m.ptz"), "--summary", str(out), "--logfile", str(log)],
        {"EVAL_STRIDE": "16"},
        tiny_data,
        tmp_path,
    )
    ev, text = json.loads(out.read_text()), log.read_text()
    assert ev["compile_s"] == 0.0 and "eval_compile: off (eager)" in text  # CPU: compile is auto = off
    assert 0 < ev["load_s"] and 0 < ev["eval_time_s"] < ev["eval_total_s"]
    assert ev["load_s"] + ev["compile_s"] + ev["eval_time_s"] <= ev["eval_total_s"]
    passes = [float(m) for m in re.findall(r"^final_\S+_(?:roundtrip|sliding_window) .*eval_time:(\d+)ms$", text, re.M)]
    assert len(passes) == 2 and sum(passes) / 1000 == pytest.approx(ev["eval_time_s"], abs=0.01)
    assert f"eval_timing: load:{ev['load_s']:.1f}s compile:0.0s scoring:{ev['eval_time_s']:.1f}s" in text
    info = parse_log(log)
    assert info["total_eval_time_s"] == round(ev["eval_time_s"], 1) == info["eval_time_s"]


@pytest.mark.slow
def test_evaluation_over_its_time_budget_fails_the_step(tiny_data, artifact, tmp_path, capsys):
    train_summary = {
        "stage": "train",
        "pre_quant_val_bpb": 1,
        "pre_quant_val_loss": 1,
        "live_val_bpb": 1,
        "train_time_s": 1,
        "steps": 1,
        "step_avg_ms": 1,
        "stopped_early": False,
        "model_params": 1,
        "world_size": 1,
        "attention_backend": "sdpa",
        "device": "cpu",
    }
    from pgolf.stages import measure

    ckpt = {"checkpoint": measure(artifact / "c.pt")}  # what evaluate checks: the files the summaries describe
    (tmp_path / "t.json").write_text(json.dumps({**train_summary, "files": ckpt}))
    quantized = {"stage": "quantize", "quant_tag": "int6_zstd"}
    files = {**ckpt, "artifact": measure(artifact / "m.ptz"), "code_file": {"path": str(SCRIPT), **measure(SCRIPT)}}
    (tmp_path / "q.json").write_text(json.dumps({**quantized, "files": files}))
    common = [
        "evaluate",
        "--script",
        str(SCRIPT),
        "--data-manifest",
        tiny_data["manifest_path"],
        "--artifact",
        str(artifact / "m.ptz"),
        "--seed",
        "1",
        "--run",
        "t",
        "--nproc",
        "0",
        "--train-summary",
        str(tmp_path / "t.json"),
        "--quantize-summary",
        str(tmp_path / "q.json"),
        "--summary",
        str(tmp_path / "e.json"),
        "--logfile",
        str(tmp_path / "e.log"),
        "--metrics",
        str(tmp_path / "m.json"),
    ]
    env = {"eval_stride": 64, "eval_seq_len": 128}
    assert pgolf([*common, "--eval-json", json.dumps({**env, "time_budget_s": 0.001})]) == 2
    assert "over the 0 s budget" in capsys.readouterr().err
    assert not (tmp_path / "m.json").exists()
    assert pgolf([*common, "--eval-json", json.dumps({**env, "time_budget_s": 600})]) == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert 0 < metrics["eval_time_s"] < metrics["eval_total_s"] < 600 and metrics["eval_time_budget_s"] == 600
    assert metrics["eval_compile_s"] == 0.0 and metrics["eval_load_s"] > 0


def test_pod_table_shows_the_evaluation_compile_apart(tmp_path, capsys):
    import importlib.util

    from conftest import REPO

    spec = importlib.util.spec_from_file_location("pod_table", REPO / "benchmarks" / "pod_table.py")
    table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table)
    res, logs = tmp_path / "results" / "r" / "seed_1", tmp_path / "logs" / "r" / "seed_1"
    res.mkdir(parents=True)
    logs.mkdir(parents=True)
    summaries = {
        "train": {"train_time_s": 45.0, "gptq_calib_time_s": 2.0, "startup_s": 60.0},
        "quantize": {"quantize_time_s": 12.0},
        "eval": {"eval_time_s": 10.0, "compile_s": 20.0, "load_s": 3.0},
    }
    for name, summary in summaries.items():
        (res / f"{name}.json").write_text(json.dumps(summary))
    for step, wall in (("train", 120.0), ("quantize", 15.0), ("evaluate", 40.0)):
        (logs / f"{step}.log").write_text(f"+ ...\nstage finished in {wall} s\n")
    assert table.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| start-up (s) | compile (s) | rest (s) |" in out
    assert "| 1 | evaluate | 40.0 | 10.0 | 3.0 | 20.0 | 7.0 |" in out
    assert "| 1 | train | 120.0 | 47.0 | 60.0 |  | 13.0 |" in out
    (res / "eval.json").write_text(json.dumps({"eval_time_s": 30.0}))  # an older summary: no compile_s
    table.main([str(tmp_path)])
    assert "| 1 | evaluate | 40.0 | 30.0 |  |  | 10.0 |" in capsys.readouterr().out
