"""Issue 27: the frontier's own scripts in upstream mode, the CPU parts: CaseOps data made from documents by a
record's own prepare script (a stand-in here, and the real one where ../shared has it), the audit checks, the
`train_shards:` line checked against the data, the phases of an upstream run from its log, the 1.0611 and 1.0565
examples dry-run with a stand-in upstream clone in upstream/, and the venv hole of the fa3 step."""

from __future__ import annotations

import json
import lzma
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, SHARED, env_with_venv

from pgolf.data import build_from_documents, verify_manifest
from pgolf.data.section import documents_arguments
from pgolf.logs import upstream_phases
from pgolf.upstream import check_logged_shards

CORPUS = SHARED / "fixtures" / "upstream-corpus"
R0611 = CORPUS / "track_10min_16mb" / "2026-04-27_SP8192_LQER_SparseGate_BOSSmearFix_9HpStack_1.0611"
R0565 = SHARED / "fixtures" / "frontier" / "2026-05-01_SP8192_PR2130Base_Calib32"
CASEOPS_TOK = "tokenizers/fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model"

# A prepare script with the CLI and output layout of the CaseOps records' prepare_caseops_data.py: the first
# --val-docs documents are validation (with a byte sidecar), BOS before each document, shards under
# --out/datasets/<name>/. LEAKY=1 writes the validation documents into training too (the #2127/#2146 bug).
STAND_IN_PREP = r"""
import argparse, json, os, pathlib
import numpy as np
import sentencepiece as spm

ap = argparse.ArgumentParser()
for a in ("--docs", "--out", "--sp"):
    ap.add_argument(a, required=True)
ap.add_argument("--val-docs", type=int, default=10)
args = ap.parse_args()
sp = spm.SentencePieceProcessor(model_file=args.sp)
out = pathlib.Path(args.out) / "datasets" / "stand_in"
out.mkdir(parents=True)
val, val_bytes, train, n = [], [], [], 0
for line in open(args.docs, encoding="utf-8"):
    text = json.loads(line)["text"]
    ids = [1] + sp.encode(text)
    if n < args.val_docs:
        val += ids
        val_bytes += [0] + [len(sp.id_to_piece(i).replace("\u2581", " ").encode()) for i in ids[1:]]
        if os.environ.get("LEAKY"):
            train += ids
    else:
        train += ids
    n += 1
def write(path, arr):
    header = np.zeros(256, dtype=np.int32)
    header[:3] = (20240520, 1, len(arr))
    path.write_bytes(header.tobytes() + np.asarray(arr, dtype=np.uint16).tobytes())
write(out / "fineweb_val_000000.bin", val)
write(out / "fineweb_val_bytes_000000.bin", val_bytes)
write(out / "fineweb_train_000000.bin", train)
print(f"done. docs={n} train_shards=1 val_shards=1")
"""


def _docs(path: Path, texts: list[str]) -> Path:
    with lzma.open(path, "wt", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps({"text": t}) + "\n")
    return path


@pytest.fixture
def prep(tmp_path, tiny_data):
    script = tmp_path / "record" / "prepare_caseops_data.py"
    script.parent.mkdir()
    script.write_text(STAND_IN_PREP)
    (script.parent / "lossless_caps.py").write_text("# a helper beside the script\n")
    texts = [f"Document number {i} says {'hello ' * (i % 7 + 1)}world." for i in range(60)]
    return {"script": script, "tok": Path(tiny_data["tokenizer_path"]), "docs": _docs(tmp_path / "d.jsonl.xz", texts)}


def _build(prep, out, **kw):
    args = dict(vocab_size=1024, prepare_script=prep["script"], tokenizer=prep["tok"]) | kw
    return build_from_documents(prep["docs"], out, "caseops_test", 10, **args)


def test_a_records_prepare_script_makes_the_shards_sidecar_and_provenance(prep, tmp_path):
    m = _build(prep, tmp_path / "data")
    src = m["source"]
    assert (len(m["train"]["files"]), len(m["val"]["files"]), len(m["val_bytes"]["files"])) == (1, 1, 1)
    assert m["val_bytes"]["tokens"] == m["val"]["tokens"]
    assert (src["docs_read"], src["val_docs"], src["train_docs"], src["split_overlap_docs"]) == (60, 10, 50, 0)
    assert src["prepare_script_sha256"] == _sha(prep["script"]) and src["tokenizer_sha256"] == _sha(prep["tok"])
    assert src["docs_sha256"] == _sha(prep["docs"]) and set(src["prepare_helpers_sha256"]) == {"lossless_caps.py"}
    assert src["expected_log"] == {"train_shards": 1} and src["byte_sidecar"] is True
    v = verify_manifest(tmp_path / "data" / "manifest.json")
    assert len(v["val_bytes_files"]) == 1 and v["vocab_size"] == 1024
    assert sorted(p.name for p in (tmp_path / "data").iterdir() if p.suffix == ".bin") == [
        "caseops_test_train_000000.bin",
        "caseops_test_val_000000.bin",
        "caseops_test_val_bytes_000000.bin",
    ]


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_leaky_prep_is_refused(prep, tmp_path, monkeypatch):
    monkeypatch.setenv("LEAKY", "1")
    with pytest.raises(RuntimeError, match=r"60 training documents.*given 10 and 50.*#2127/#2146"):
        _build(prep, tmp_path / "data")
    assert not (tmp_path / "data" / "manifest.json").exists()


def test_a_document_in_both_splits_is_refused(prep, tmp_path):
    texts = [f"doc {i}" for i in range(20)] + ["doc 3"]
    prep["docs"] = _docs(tmp_path / "dup.jsonl.xz", texts)
    with pytest.raises(ValueError, match=r"1 training documents have the text of a validation document.*document 4"):
        _build(prep, tmp_path / "data")


def test_prepare_settings_are_checked_naming_the_key(prep, tmp_path):
    with pytest.raises(ValueError, match=r"data.documents.vocab_size is 8192, but .* has 1024"):
        _build(prep, tmp_path / "data", vocab_size=8192)
    with pytest.raises(FileNotFoundError, match="data.documents.prepare_script"):
        _build(prep, tmp_path / "data", prepare_script=tmp_path / "nope.py")
    section = {"source": "documents", "name": "x", "documents": {"path": "d", "vocab_size": 1024, "val_docs": 1}}
    with pytest.raises(ValueError, match="data.documents.tokenizer is set without"):
        documents_arguments(section | {"documents": section["documents"] | {"tokenizer": "t.model"}})
    both = section["documents"] | {"prepare_script": "p.py", "tokenizer": "t.model", "tokenizer_max_docs": 5}
    with pytest.raises(ValueError, match="tokenizer_max_docs goes without prepare_script"):
        documents_arguments(section | {"documents": both})
    args = documents_arguments(section | {"documents": both | {"tokenizer_max_docs": None}}, root="/r")
    assert (args["prepare_script"], args["tokenizer"]) == ("/r/p.py", "/r/t.model")


def test_the_data_command_runs_the_prepare_script_from_the_config_section(prep, tmp_path):
    section = {
        "source": "documents",
        "name": "caseops_cli",
        "documents": {
            "path": str(prep["docs"]),
            "vocab_size": 1024,
            "val_docs": 10,
            "prepare_script": str(prep["script"]),
            "tokenizer": str(prep["tok"]),
        },
    }
    # the data rule's --out is relative to the working folder (data/<name>)
    cmd = [sys.executable, "-m", "pgolf.cli", "data", "--data-json", json.dumps(section), "--out", "o"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env_with_venv(), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "the log will print train_shards: 1" in proc.stdout + proc.stderr
    assert verify_manifest(tmp_path / "o" / "manifest.json")["source"]["train_docs"] == 50


@pytest.mark.parametrize("record", [R0611, R0565], ids=["1.0611", "1.0565"])
def test_the_records_own_prepare_script_on_demo_documents(record, tmp_path):
    if not record.is_dir():
        pytest.skip(f"{record} is not present (../shared is absent)")
    import sentencepiece

    docs = REPO / "demo" / "wiki_vital_en.jsonl.xz"
    kw = dict(vocab_size=8192, max_docs=400, prepare_script=record / "prepare_caseops_data.py")
    kw["tokenizer"] = record / CASEOPS_TOK
    if not hasattr(sentencepiece.SentencePieceProcessor, "encode_as_immutable_proto"):
        # a sentencepiece without it (0.2.3 removed it) the API the script calls: the step says so and what to do
        with pytest.raises(RuntimeError, match=r"encode_as_immutable_proto.*sentencepiece==0.2.1"):
            build_from_documents(docs, tmp_path / "data", "caseops_demo", 40, **kw)
        return
    m = build_from_documents(docs, tmp_path / "data", "caseops_demo", 40, **kw)
    assert m["val_bytes"]["tokens"] == m["val"]["tokens"] and m["source"]["train_docs"] == 360
    assert 0 < m["val_bytes"]["text_bytes"] and m["tokenizer"]["vocab_size"] == 8192


def test_the_logged_train_shards_are_checked_against_the_data(prep, tmp_path):
    _build(prep, tmp_path / "data")
    manifest = tmp_path / "data" / "manifest.json"
    assert check_logged_shards("x\ntrain_shards: 1\nval_tokens: 5\n", manifest, "log") == 1
    assert check_logged_shards("world_size:1 train_shards:1\n", manifest, "log") is None
    with pytest.raises(ValueError, match=r"log: the script logged train_shards: 1499, but .* has 1 train shards"):
        check_logged_shards("train_shards: 1499\n", manifest, "log")


def _logs():
    found = sorted(p for p in CORPUS.rglob("*") if p.suffix in (".log", ".txt") and p.name != "requirements.txt")
    return found + sorted(R0565.glob("*.log"))


def test_every_upstream_corpus_log_parses_into_phases():
    logs = _logs()
    if not CORPUS.is_dir():
        pytest.skip(f"{CORPUS} is not present (../shared is absent)")
    folders = {p.parent for p in logs}
    assert len(folders) >= 40
    with_loop = 0
    for p in logs:
        ph = upstream_phases(p)
        assert set(ph) >= {"train_loop_s", "calibration_s", "compression_s", "eval_s", "ttt_eval_s", "evals"}
        with_loop += ph["train_loop_s"] is not None
    assert with_loop > len(logs) // 2


def test_the_frontier_logs_phases():
    if not R0611.is_dir() or not R0565.is_dir():
        pytest.skip("the frontier record folders are not present (../shared is absent)")
    a = upstream_phases(R0611 / "train_seed42.log")
    assert (a["train_loop_s"], a["calibration_s"], a["compression_s"]) == (599.592, 4.7, 99.9)
    assert (a["decompression_s"], a["ttt_compile_s"], a["total_eval_s"], a["ttt_eval_s"]) == (
        44.4,
        137.6,
        508.8,
        508.785,
    )
    assert a["eval_s"] == pytest.approx(6.718 + 49.995) and a["ngram_precompute_s"] is None and a["steps"] == 4945
    b = upstream_phases(R0565 / "train_seed42.log")
    assert (b["train_loop_s"], b["calibration_s"], b["compression_s"], b["ngram_precompute_s"]) == (
        599.672,
        6.9,
        51.8,
        200.89,
    )
    assert [e["tag"] for e in b["evals"] if e["ttt"]] == ["quantized_ttt_phased"]
    # the step time from the exact stopping_early line (the step lines round train_time to 0.1 min)
    assert (b["steps"], b["step_avg_ms"]) == (5001, 119.91)


def _repo_copy(dest: Path) -> Path:
    """The pipeline's files (Snakefile, workflow/, config/) in dest, with a stand-in upstream clone in upstream/."""
    dest.mkdir()
    shutil.copy(REPO / "Snakefile", dest / "Snakefile")
    for d in ("workflow", "config", "profiles"):
        shutil.copytree(REPO / d, dest / d)
    rec = dest / "upstream" / "records" / "track_10min_16mb"
    rec.mkdir(parents=True)
    (rec / R0611.name).symlink_to(R0611)
    (rec / R0565.name).symlink_to(R0565)
    subprocess.run(["git", "init", "-q", str(dest / "upstream")], check=True)
    return dest


@pytest.mark.parametrize(
    "example,record,seeds",
    [("upstream_1.0611_caseops.yaml", R0611, {42, 0, 1234}), ("upstream_1.0565_caseops.yaml", R0565, {314, 42, 0})],
    ids=["1.0611", "1.0565"],
)
def test_the_examples_dry_run_with_upstream_cloned_in_upstream(example, record, seeds, tmp_path):
    if not record.is_dir():
        pytest.skip(f"{record} is not present (../shared is absent)")
    repo = _repo_copy(tmp_path / "repo")
    cmd = [sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile"), "-d", str(repo), "-n", "-p"]
    proc = subprocess.run(
        [*cmd, "--configfile", str(repo / "config" / "examples" / example)], capture_output=True, text=True
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    runs = [x for x in out.splitlines() if "pgolf run-upstream" in x]
    assert {int(s) for x in runs for s in x.split("--seed ")[1].split()[:1]} == seeds
    assert all(f"--script upstream/records/track_10min_16mb/{record.name}/train_gpt.py" in x for x in runs)
    assert all('"CASEOPS_ENABLED":1' in x and '"COMPRESSOR":"pergroup"' in x for x in runs)
    record_cmd = next(x for x in out.splitlines() if "pgolf record" in x)
    assert f"upstream/records/track_10min_16mb/{record.name}/tokenizers" in record_cmd


def test_a_venv_made_from_a_venvs_python_is_named_as_the_cause(tmp_path):
    """The hole of issue 27, faked: a venv made with --system-site-packages from this venv's python is a venv of the
    base interpreter, which lacks torch; the fa3 step says so (it used to die in a traceback), and the layered venv
    of benchmarks/layered_venv.sh sees torch."""
    from pgolf.fa3 import torch_problem

    if sys.prefix == sys.base_prefix:
        pytest.skip("the tests do not run in a venv: the layout cannot be made from here")
    base = subprocess.run([sys._base_executable, "-c", "import torch"], capture_output=True)
    if base.returncode == 0:
        pytest.skip(f"the base interpreter {sys._base_executable} has torch itself: the hole does not open here")
    hole = tmp_path / "hole"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(hole)], check=True)
    problem = torch_problem(hole / "bin" / "python")
    assert problem and "cannot import torch" in problem and f"venv ({hole})" in problem
    assert f"made by `{sys.executable}" in problem or "made by" in problem
    assert "layered_venv.sh" in problem
    proc = subprocess.run(
        [
            str(hole / "bin" / "python"),
            "-m",
            "pgolf.fa3",
            "--config",
            str(REPO / "config" / "config.yaml"),
            "--status",
            str(tmp_path / "s.json"),
            "--environment",
            str(tmp_path / "e.json"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "cannot import torch" in proc.stderr
    layered = tmp_path / "layered"
    subprocess.run(
        ["bash", str(REPO / "benchmarks" / "layered_venv.sh"), sys.executable, str(layered)],
        check=True,
        capture_output=True,
    )
    assert torch_problem(layered / "bin" / "python") is None
    assert torch_problem() is None


def test_the_record_shows_the_phases_and_the_prepare_provenance(prep, tmp_path):
    from pgolf.provenance import data_provenance, data_section
    from pgolf.readme import _phases_section

    _build(prep, tmp_path / "data")
    data = data_provenance(tmp_path / "data" / "manifest.json")
    assert data["prepare_script"] == "prepare_caseops_data.py" and data["train_docs"] == 50
    assert any("the first 10 documents are validation, 50 train" in x for x in data_section(data))
    log = "\n".join(
        [
            "stopping_early: wallclock_cap train_time: 60500ms step: 70/20000",
            "GPTQ:collected 67 Hessians in 4.2s",
            "Serialize: per-group compression done in 88.0s",
            "diagnostic quantized val_loss:3.1 val_bpb:1.4 eval_time:9000ms",
            "ttt_lora:compile warmup done (120.5s)",
            "quantized_ttt_phased val_loss:3.0 val_bpb:1.3 eval_time:30000ms",
            "total_eval_time:30.0s",
        ]
    )
    phases = upstream_phases(log)
    assert (phases["train_loop_s"], phases["steps"], phases["step_avg_ms"]) == (60.5, 70, 864.286)
    text = "\n".join(_phases_section([{"seed": 42, "metrics": {"phases": phases}}]))
    assert "## Where the time went" in text and "| seed 42 |" in text
    for row in ("training loop (timed by the script) | 60.5", "GPTQ Hessians; training time under the rules) | 4.2"):
        assert row in text
    assert "compression (as logged) | 88.0" in text and "evaluation with TTT | 30.0" in text
    assert "TTT compile warm-up | 120.5" in text and "evaluation without TTT | 9.0" in text
    assert _phases_section([{"seed": 1, "metrics": {}}]) == []


def test_an_fa3_build_without_varlen_stops_a_script_that_calls_it(tmp_path, monkeypatch):
    """The frontier records call flash_attn_varlen_func; the config's default build switches leave VARLEN out (the
    import still works, the call fails mid-run): stop before training, naming fa3.disable."""
    from pgolf import fa3

    monkeypatch.setattr(fa3, "fa3_importable", lambda: True)
    script = tmp_path / "train_gpt.py"
    script.write_text(
        "from flash_attn_interface import (\n    flash_attn_func as flash_attn_3_func,\n"
        "    flash_attn_varlen_func,\n)\n"
    )
    status = tmp_path / "fa3.json"
    switches = {f"FLASH_ATTENTION_DISABLE_{x}": "TRUE" for x in ("SM80", "FP8", "VARLEN")}
    status.write_text(json.dumps({"available": True, "state": "built", "switches": switches}))
    with pytest.raises(
        RuntimeError, match=r"calls flash_attn_varlen_func, but .*remove VARLEN from config fa3.disable"
    ):
        fa3.require_for_script(script, status)
    del switches["FLASH_ATTENTION_DISABLE_VARLEN"]
    status.write_text(json.dumps({"available": True, "state": "built", "switches": switches}))
    assert fa3.require_for_script(script, status) is None
    status.write_text(json.dumps({"available": True, "state": "prebuilt"}))  # the full prebuilt wheel
    assert fa3.require_for_script(script, status) is None


def test_the_examples_keep_what_the_scripts_call_in_an_fa3_build():
    import yaml

    for name in ("upstream_1.0611_caseops.yaml", "upstream_1.0565_caseops.yaml"):
        cfg = yaml.safe_load((REPO / "config" / "examples" / name).read_text())
        assert cfg["fa3"]["required"] is True and "VARLEN" not in cfg["fa3"]["disable"], name
