"""Every record says what it was trained on and with (issue 21): the data set's source (hub repo, revision, the
commit it resolved to, variant, shard counts, the lock's hashes; or the documents file's sha256), the tokenizer's
sha256, the byte sidecar, and requirements.txt pinned to the versions that ran."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_manifest import _hub_folder
from test_record import ENVIRONMENT, HPARAMS, SETTINGS, run  # noqa: F401 (the run fixture)

from pgolf.data import read_lock, write_manifest
from pgolf.provenance import data_provenance, pinned_requirements
from pgolf.record import build_record

REPO = Path(__file__).resolve().parents[1]


def test_record_names_its_hub_data(run, tmp_path, tiny_data):  # noqa: F811
    data, lock, key = _hub_folder(tmp_path, tiny_data["tokenizer_path"])
    m = json.loads((data / "manifest.json").read_text())
    m["source"].update(commit=m["source"]["revision"], remote_root="datasets", train_shards=1)
    (data / "manifest.json").write_text(json.dumps(m))
    sub = build_record(
        run["out"], run["dirs"], run["script"], ENVIRONMENT, SETTINGS, HPARAMS, 8, data_manifest=data / "manifest.json"
    )
    d = json.loads((run["out"] / "submission.json").read_text())["data"]
    assert d == sub["data"]
    assert d["source"] == "hub" and d["repo_id"] == "someone/golf" and d["variant"] == "sp1024"
    assert d["commit"] == m["source"]["revision"] and d["lock_key"] == key
    assert d["train_shards"] == 1 and d["val_shards"] == 1 and d["train_tokens"] == 1200 and d["vocab_size"] == 1024
    assert d["tokenizer"] == "fineweb_1024_bpe.model"
    assert d["tokenizer_sha256"] == hashlib.sha256((data / "fineweb_1024_bpe.model").read_bytes()).hexdigest()
    assert d["files_sha256"] == read_lock(lock)["datasets"][key]["files"]  # the lock's hashes
    assert d["val_bytes_sidecar"] is None
    readme = (run["out"] / "README.md").read_text()
    section = readme.split("## Data\n", 1)[1].split("\n## ", 1)[0]
    assert f"`someone/golf`, revision `{d['revision']}` (commit `{d['commit']}`), variant `sp1024`" in section
    assert "Train shards: 1 (1,200 tokens)" in section and d["tokenizer_sha256"] in section
    assert "val_bpb bytes: the tokenizer's pieces" in section
    assert f"--revision {d['commit']} --variant sp1024 --train-shards 1 --remote-root datasets" in section


def test_record_names_its_documents_and_sidecar(tmp_path, tiny_data):
    data = tmp_path / "docs_data"
    shutil.copytree(Path(tiny_data["manifest_path"]).parent, data)
    shutil.copyfile(data / "tiny_val_000000.bin", data / "tiny_val_bytes_000000.bin")  # any counts of the right length
    source = {"kind": "documents", "docs": "/home/someone/corpus.jsonl.xz", "docs_sha256": "ab" * 32}
    write_manifest(data, "tiny", source, data / "tok.model", "tiny")
    d = data_provenance(data)
    assert d["source"] == "documents" and d["documents"] == "corpus.jsonl.xz" and d["documents_sha256"] == "ab" * 32
    assert "/home/someone" not in json.dumps(d)  # no absolute path of the machine
    side = hashlib.sha256((data / "tiny_val_bytes_000000.bin").read_bytes()).hexdigest()
    assert d["val_bytes_sidecar"] == [{"path": "tiny_val_bytes_000000.bin", "sha256": side}]
    assert d["files_sha256"]["tiny_val_bytes_000000.bin"] == side and "tok.model" in d["files_sha256"]
    assert d["train_shards"] == len(tiny_data["train_files"])


def test_requirements_are_pinned_to_the_versions_that_ran():
    env = {
        "torch": "2.9.1",
        "cuda": "12.8",
        "packages": {"numpy": "2.1.3", "sentencepiece": "0.2.0", "huggingface_hub": "0.9"},
    }
    reqs = ["numpy", "sentencepiece", "torch", "huggingface-hub", "brotli>=1.1", "no-such-package-pgolf-test"]
    text = pinned_requirements(reqs, env)
    assert text.splitlines() == [
        "# Python deps. Install with: pip install -r requirements.txt",
        "numpy==2.1.3",
        "sentencepiece==0.2.0",
        "torch==2.9.1  # ran: 2.9.1, the CUDA 12.8 build (the default index's wheel)",
        "huggingface-hub==0.9",
        "brotli>=1.1",
        "no-such-package-pgolf-test  # version unknown: not installed where this was recorded",
    ]


def _requirement_lines(text: str) -> list:
    """The requirements of a requirements.txt as plain pip reads them (comments and blank lines dropped)."""
    from packaging.requirements import Requirement

    lines = [line.split(" #", 1)[0].strip() for line in text.splitlines()]
    return [Requirement(line) for line in lines if line and not line.startswith("#")]


@pytest.mark.parametrize(
    ("torch", "cuda", "pin", "index"),
    [("2.11.0+cu130", "13.0", "2.11.0", "cu130"), ("2.13.0+cpu", None, "2.13.0", "cpu")],
)
def test_requirements_have_no_local_version_label(torch, cuda, pin, index):
    """Plain `pip install -r` cannot resolve a local version label (+cu130, +cpu): the pin is the public version (what
    the default index serves), and the build that ran is named in a comment with the index that serves it."""
    env = {"torch": torch, "cuda": cuda, "packages": {"numpy": "2.4.6+local1"}}
    text = pinned_requirements(["torch", "numpy"], env)
    reqs = {r.name: str(r.specifier) for r in _requirement_lines(text)}
    assert reqs == {"torch": f"=={pin}", "numpy": "==2.4.6"}
    torch_line = next(line for line in text.splitlines() if line.startswith("torch=="))
    assert f"ran: {torch}" in torch_line and f"https://download.pytorch.org/whl/{index}" in torch_line
    assert ("CUDA 13.0 build" in torch_line) == (cuda is not None) and ("CPU build" in torch_line) == (cuda is None)
    assert "ran: 2.4.6+local1" in text


def test_requirements_note_what_pip_cannot_install():
    """FlashAttention 3 and lrzip as the frontier records note them (comments: pip skips them)."""
    url = "https://download.pytorch.org/whl/cu128/flash_attn_3-3.0.0-cp39-abi3-manylinux_2_28_x86_64.whl"
    env = {"torch": "2.9.1", "packages": {"flash_attn_3": "3.0.0"}, "fa3_status": {"state": "prebuilt", "url": url}}
    text = pinned_requirements(["torch"], env, "import torch\n")
    assert "# FlashAttention 3 must be installed separately (not on PyPI) (the run used flash_attn_3 3.0.0):" in text
    assert f"# pip install --no-deps {url}" in text and "falls back to PyTorch SDPA" in text
    assert "lrzip" not in text
    script = "from flash_attn_interface import flash_attn_func\nsubprocess.run(['lrzip', '-z', path])\n"
    text = pinned_requirements(["torch"], {"torch": "2.9.1"}, script)
    assert "FlashAttention 3 must be installed separately" in text and "falls back" not in text  # the script needs it
    assert "# apt-get install -y lrzip" in text
    assert [r.name for r in _requirement_lines(text)] == ["torch"]
    plain = pinned_requirements(["torch"], {"torch": "2.9.1"}, "import torch\n")
    assert "FlashAttention" not in plain and "lrzip" not in plain


def test_requirements_name_the_python_and_no_local_path_of_the_fa3_build():
    """The pins are those of the Python that ran (numpy 2.5 needs Python >= 3.12); an FA3 built from a local clone or
    git bundle is named by its commit, not by the machine's path (the rehearsal's record named a /work path)."""
    status = {"state": "built", "repo": "/work/main/.fa3src/flash-attention-0251105a-hopper.bundle", "commit": "7fdd"}
    env = {"python": "3.12.3", "torch": "2.11.0", "fa3": "3.0.0", "fa3_status": status}
    text = pinned_requirements(["torch"], env, "import torch\n")
    assert text.splitlines()[1] == "# ran on Python 3.12.3"
    assert (
        "/work/main" not in text and "a local copy of flash-attention (flash-attention-0251105a-hopper.bundle)" in text
    )
    assert "hopper/ at commit 7fdd" in text
    url = "https://github.com/Dao-AILab/flash-attention.git"
    text = pinned_requirements(["torch"], {**env, "fa3_status": {**status, "repo": url}}, "import torch\n")
    assert f"# built from {url} hopper/ at commit 7fdd" in text


def test_record_rule_passes_the_data_manifest(tmp_path):
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path), "-n", "-p"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in (proc.stdout + proc.stderr).splitlines() if "pgolf record" in x)
    assert "--data-manifest data/fineweb10B_sp1024/manifest.json" in line


def test_logs_say_what_val_bpb_counted():
    from pgolf.logs import parse_log

    assert parse_log("val_bytes:sidecar /d/fineweb_val_bytes_*.bin\n")["val_bytes"] == "sidecar"
    assert parse_log("[rank0]: val_bytes:pieces\n")["val_bytes"] == "pieces"
    assert parse_log("step:1/2 train_loss:3.0\n")["val_bytes"] is None
    corpus = REPO.parent / "shared" / "fixtures" / "upstream-corpus" / "track_10min_16mb"
    if not corpus.is_dir():
        return
    caseops = corpus / "2026-04-27_SP8192_LQER_SparseGate_BOSSmearFix_9HpStack_1.0611" / "train_seed42.log"
    assert parse_log(caseops)["val_bytes"] == "sidecar"  # caseops_enabled: True
    plain = corpus / "2026-04-06_SP8192_HessianSDClip_ProgressiveRecurrence" / "train_seed42.log"
    assert parse_log(plain)["val_bytes"] is None


def test_check_refuses_a_record_that_scored_the_wrong_bytes(run, tmp_path, tiny_data):  # noqa: F811
    """A data set with a byte sidecar scored with the pieces' bytes (CASEOPS_ENABLED forgotten) fails the record."""
    import pytest

    data = tmp_path / "sc"
    shutil.copytree(Path(tiny_data["manifest_path"]).parent, data)
    shutil.copyfile(data / "tiny_val_000000.bin", data / "tiny_val_bytes_000000.bin")
    write_manifest(data, "tiny", {"kind": "test"}, data / "tok.model", "tiny")
    for d in run["dirs"]:
        with open(d / "eval.log", "a") as f:
            f.write("val_bytes:sidecar /x/tiny_val_bytes_*.bin\n")
    build_record(run["out"], run["dirs"], run["script"], ENVIRONMENT, SETTINGS, HPARAMS, 8, data_manifest=data)
    with open(run["dirs"][1] / "eval.log", "a") as f:
        f.write("val_bytes:pieces\n")
    seed = run["dirs"][1].name.split("_")[1]
    with pytest.raises(ValueError, match=rf"train_seed{seed}\.log: val_bpb counted the bytes of the tokenizer's"):
        build_record(run["out"], run["dirs"], run["script"], ENVIRONMENT, SETTINGS, HPARAMS, 8, data_manifest=data)
