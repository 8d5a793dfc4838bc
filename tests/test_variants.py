"""The frontier's data variants from stand-in hubs on 127.0.0.1, one per upstream layout (issue 21): kevclark's
(sp8192 listed in the repo's manifest.json, sp4096 not: default names), romeerp's CaseOps SP8192 (a non-numeric
variant name, the tokenizer under its own name, the validation byte sidecar), with a sidecar of the wrong length, a
sidecar missing, and a variant that no manifest describes. The production config names each variant's repo."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import data_rule_arguments, private_hf_home
from test_data import _FakeHub

from pgolf import stages
from pgolf.data import HubError, download_from_hub, read_lock, read_shard, train_tokenizer, write_shard

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "demo" / "wiki_vital_en.jsonl.xz"
CASEOPS = "sp8192_lossless_caps_caseops_v1_reserved"
CASEOPS_TOK = "fineweb_8192_bpe_lossless_caps_caseops_v1_reserved"


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory) -> dict[int, Path]:
    if not DEMO.is_file():
        pytest.skip(f"demo corpus {DEMO} not present")
    folder = tmp_path_factory.mktemp("variant_tok")
    return {v: train_tokenizer(DEMO, folder / f"sp{v}", vocab_size=v, max_docs=2000, threads=1) for v in (4096, 8192)}


@pytest.fixture
def hf_env(tmp_path, monkeypatch) -> Path:
    """A private Hugging Face home, online, no token (as the fake_hub fixture of test_data)."""
    return private_hf_home(tmp_path, monkeypatch)


def _tokens(rng: np.random.Generator, n: int, vocab: int) -> np.ndarray:
    toks = rng.integers(4, vocab, size=n, dtype=np.uint16)
    toks[[0, n // 3, 2 * n // 3]] = 1  # BOS
    return toks


def _repo(root: Path, variant: str, vocab: int, tokenizer: Path, tok_name: str, *, sidecar: bool, listed: bool) -> dict:
    """Files of one variant under ``root/datasets`` in the upstream layout; returns its manifest.json entry."""
    rng = np.random.default_rng(vocab)
    shards = root / "datasets" / "datasets" / f"fineweb10B_{variant}"
    shards.mkdir(parents=True, exist_ok=True)
    (root / "datasets" / "tokenizers").mkdir(parents=True, exist_ok=True)
    (root / "datasets" / "tokenizers" / f"{tok_name}.model").write_bytes(tokenizer.read_bytes())
    (root / "datasets" / "tokenizers" / f"{tok_name}.vocab").write_bytes(tokenizer.with_suffix(".vocab").read_bytes())
    val = _tokens(rng, 900, vocab)
    write_shard(shards / "fineweb_val_000000.bin", val)
    if sidecar:
        counts = rng.integers(1, 7, size=val.size, dtype=np.uint16)
        counts[val == 1] = 0
        write_shard(shards / "fineweb_val_bytes_000000.bin", counts)
    for i in range(3):
        write_shard(shards / f"fineweb_train_{i:06d}.bin", _tokens(rng, 1000 + i, vocab))
    entry = {"name": f"fineweb10B_{variant}", "tokenizer_name": variant, "stats": {"files_train": 3, "files_val": 1}}
    if sidecar and listed:
        entry["val_bytes_glob"] = f"datasets/fineweb10B_{variant}/fineweb_val_bytes_*.bin"
    return {
        "dataset": entry,
        "tokenizer": {
            "name": variant,
            "model_path": f"tokenizers/{tok_name}.model",
            "vocab_path": f"tokenizers/{tok_name}.vocab",
        },
    }


def _serve(root: Path, repo_id: str, listed: list[dict] | None) -> _FakeHub:
    if listed is not None:
        manifest = {"datasets": [e["dataset"] for e in listed], "tokenizers": [e["tokenizer"] for e in listed]}
        (root / "datasets" / "manifest.json").write_text(json.dumps(manifest))
    hub = _FakeHub(root, repo_id)
    hub.thread.start()
    return hub


@pytest.fixture
def hubs(tmp_path, hf_env, tokenizers):
    """kevclark-like: sp4096 (not in the manifest) and sp8192 (in it), no sidecars; romeerp-like: CaseOps with its
    sidecar, listed in the manifest."""
    kev = tmp_path / "kevclark"
    _repo(kev, "sp4096", 4096, tokenizers[4096], "fineweb_4096_bpe", sidecar=False, listed=False)
    sp8192 = _repo(kev, "sp8192", 8192, tokenizers[8192], "fineweb_8192_bpe", sidecar=False, listed=True)
    rom = tmp_path / "romeerp"
    caseops = _repo(rom, CASEOPS, 8192, tokenizers[8192], CASEOPS_TOK, sidecar=True, listed=True)
    out = {"kevclark": _serve(kev, "kevclark/parameter-golf", [sp8192])}
    out["romeerp"] = _serve(rom, "romeerp/parameter-golf-caseops-v1", [caseops])
    for hub in out.values():
        hub.cache_dir = hf_env
    yield out
    for hub in out.values():
        hub.server.shutdown()
        hub.server.server_close()


def _get(out: Path, hub: _FakeHub, variant: str, **kwargs) -> tuple[dict, list[str]]:
    lines: list[str] = []
    result = download_from_hub(
        out,
        repo_id=hub.repo_id,
        variant=variant,
        train_shards=kwargs.pop("train_shards", 3),
        endpoint=hub.endpoint,
        timeout=5.0,
        retries=0,
        max_workers=2,
        cache_dir=hub.cache_dir,
        log=lines.append,
        threads=1,
        **kwargs,
    )
    return result, lines


def test_kevclark_layout_listed_and_unlisted_variants(tmp_path, hubs):
    hub = hubs["kevclark"]
    result, lines = _get(tmp_path / "sp8192", hub, "sp8192", lock_path=tmp_path / "lock.json")
    m = result["manifest"]
    assert m["tokenizer"]["vocab_size"] == 8192 and len(m["train"]["files"]) == 3 and "val_bytes" not in m
    assert m["source"]["commit"] == hub.COMMIT and any(f"'main' is commit {hub.COMMIT}" in x for x in lines)
    assert stages.data_env(tmp_path / "sp8192")["VAL_BYTES_FILES"] == ""
    # Run again with every file in place: nothing is fetched, and the branch is still resolved (one request).
    again, lines = _get(tmp_path / "sp8192", hub, "sp8192", lock_path=tmp_path / "lock.json")
    assert again["downloaded"] == [] and again["manifest"]["source"]["commit"] == hub.COMMIT
    assert any(f"'main' is commit {hub.COMMIT}" in x for x in lines)

    # sp4096 is not in the repo's manifest.json: default file names, the sidecar only if the repo has one (it has not)
    result, lines = _get(tmp_path / "sp4096", hub, "sp4096")
    assert any("does not list fineweb10B_sp4096" in x for x in lines)
    assert any("no byte sidecar" in x and "not in the repo" in x for x in lines)
    assert result["manifest"]["tokenizer"]["vocab_size"] == 4096 and "val_bytes" not in result["manifest"]
    assert sorted(p.name for p in (tmp_path / "sp4096").glob("*.model")) == ["fineweb_4096_bpe.model"]


def test_caseops_layout_with_its_byte_sidecar(tmp_path, hubs):
    hub, out, lock = hubs["romeerp"], tmp_path / "caseops", tmp_path / "lock.json"
    result, _ = _get(out, hub, CASEOPS, lock_path=lock)
    m = result["manifest"]
    assert m["name"] == f"fineweb10B_{CASEOPS}" and m["tokenizer"]["path"] == f"{CASEOPS_TOK}.model"
    assert [e["path"] for e in m["val_bytes"]["files"]] == ["fineweb_val_bytes_000000.bin"]
    served = hub.remote("fineweb_val_bytes_000000.bin")
    assert (out / "fineweb_val_bytes_000000.bin").read_bytes() == served.read_bytes()
    assert m["val_bytes"]["text_bytes"] == int(read_shard(served).sum(dtype=np.int64))
    files = read_lock(lock)["datasets"][f"{hub.repo_id}@main/{CASEOPS}"]["files"]
    assert f"datasets/datasets/fineweb10B_{CASEOPS}/fineweb_val_bytes_000000.bin" in files
    env = stages.data_env(out)
    assert env["VAL_BYTES_FILES"] == str(out.resolve() / "fineweb_val_bytes_*.bin") and env["VOCAB_SIZE"] == "8192"

    # A changed sidecar in the folder is refused before use (it is not the one the lock knows), then fetched again.
    counts = read_shard(out / "fineweb_val_bytes_000000.bin").copy()
    counts[3] += 1
    write_shard(out / "fineweb_val_bytes_000000.bin", counts)
    with pytest.raises(ValueError, match=r"fineweb_val_bytes_000000\.bin: sha256"):
        stages.data_env(out)
    again, lines = _get(out, hub, CASEOPS, lock_path=lock)
    assert again["downloaded"] == ["fineweb_val_bytes_000000.bin"] and stages.data_env(out) == env


def test_caseops_sidecar_of_the_wrong_length(tmp_path, hubs):
    hub = hubs["romeerp"]
    served = hub.remote("fineweb_val_bytes_000000.bin")
    write_shard(served, read_shard(served)[:-2])
    with pytest.raises(HubError, match=r"fineweb_val_bytes_000000\.bin: 898 byte counts, but fineweb_val_000000\.bin"):
        _get(tmp_path / "caseops", hub, CASEOPS)
    assert not (tmp_path / "caseops" / "manifest.json").exists()


def test_caseops_sidecar_missing(tmp_path, hubs):
    hub = hubs["romeerp"]
    hub.remote("fineweb_val_bytes_000000.bin").unlink()
    with pytest.raises(HubError, match=r"not found: .*fineweb_val_bytes_000000\.bin: datasets/manifest\.json lists a"):
        _get(tmp_path / "caseops", hub, CASEOPS)
    assert not (tmp_path / "caseops").exists()  # nothing written before every file is known to be there


def test_variant_no_manifest_describes(tmp_path, hubs):
    """Without the repo's manifest.json the CaseOps tokenizer cannot be found under the default name: a clear error;
    the sidecar the repo has is still fetched for a variant whose default names fit."""
    hub = hubs["romeerp"]
    (hub.root / "datasets" / "manifest.json").unlink()
    with pytest.raises(HubError, match=rf"not found: datasets/tokenizers/fineweb_8192_bpe\.model.*variant {CASEOPS}"):
        _get(tmp_path / "caseops", hub, CASEOPS)

    tok = hub.root / "datasets" / "tokenizers"
    (tok / f"{CASEOPS_TOK}.model").rename(tok / "fineweb_8192_bpe.model")
    (tok / f"{CASEOPS_TOK}.vocab").rename(tok / "fineweb_8192_bpe.vocab")
    result, lines = _get(tmp_path / "caseops", hub, CASEOPS)
    assert any("no datasets/manifest.json" in x for x in lines)
    assert [e["path"] for e in result["manifest"]["val_bytes"]["files"]] == ["fineweb_val_bytes_000000.bin"]


def test_production_config_names_each_variant(tmp_path):
    hub = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["data"]["hub"]
    repos = hub["repos"]
    assert repos["sp1024"]["repo_id"] == "willdepueoai/parameter-golf" and repos["sp1024"]["verified"] is True
    assert {repos[v]["repo_id"] for v in ("sp4096", "sp8192")} == {"kevclark/parameter-golf"}
    assert repos[CASEOPS]["repo_id"] == "romeerp/parameter-golf-caseops-v1"
    for variant, repo in repos.items():
        assert repo["remote_root"] == "datasets" and repo["train_shards"] >= 80, variant
        assert repo["verified"] == bool(len(repo["revision"]) == 40), variant  # a branch is never "verified"

    def plan(overlay: dict) -> str:
        path = tmp_path / "overlay.yaml"
        path.write_text(yaml.safe_dump(overlay))
        cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path), "-n", "-p"]
        proc = subprocess.run([*cmd, "--until", "data", "--configfile", str(path)], capture_output=True, text=True)
        return proc.stdout + proc.stderr

    args = data_rule_arguments(plan({"data": {"name": f"fineweb10B_{CASEOPS}", "hub": {"variant": CASEOPS}}}))
    assert (args["variant"], args["train_shards"], args["repo_id"]) == (
        CASEOPS,
        80,
        "romeerp/parameter-golf-caseops-v1",
    )
    args = data_rule_arguments(plan({"data": {"name": "fineweb10B_sp8192", "hub": {"variant": "sp8192"}}}))
    assert (args["variant"], args["train_shards"], args["repo_id"], args["revision"]) == (
        "sp8192",
        128,
        "kevclark/parameter-golf",
        "main",
    )
    args = data_rule_arguments(plan({"data": {"name": "x", "hub": {"variant": "sp8192", "train_shards": 2}}}))
    assert args["train_shards"] == 2
    text = plan({"data": {"name": "x", "hub": {"variant": "sp8192", "repos": {"sp8192": {"verified": True}}}}})
    assert "verified is true but revision 'main' is not a 40-hex commit" in text


def test_upstream_script_sees_the_sidecar_under_the_upstream_name(tmp_path, hubs):
    """train.mode upstream: the data links hold the byte sidecar where CaseOps scripts look for it."""
    from pgolf.upstream import link_data

    out = tmp_path / "caseops"
    _get(out, hubs["romeerp"], CASEOPS)
    env = link_data(out, tmp_path / "links")
    names = sorted(p.name for p in (tmp_path / "links").iterdir())
    assert names == ["fineweb_train_000000.bin", "fineweb_train_000001.bin", "fineweb_train_000002.bin"] + [
        "fineweb_val_000000.bin",
        "fineweb_val_bytes_000000.bin",
    ]
    side = tmp_path / "links" / "fineweb_val_bytes_000000.bin"
    assert side.resolve() == (out / "fineweb_val_bytes_000000.bin").resolve()
    assert env["TOKENIZER_PATH"].endswith(f"{CASEOPS_TOK}.model") and env["VOCAB_SIZE"] == "8192"


EXAMPLE = REPO / "config" / "examples" / "upstream_1.0611_caseops.yaml"
RECORD_1_0611 = "track_10min_16mb/2026-04-27_SP8192_LQER_SparseGate_BOSSmearFix_9HpStack_1.0611"


def test_example_config_reproducing_the_1_0611_record_dry_run(tmp_path):
    upstream = REPO.parent / "shared" / "fixtures" / "upstream-corpus" / RECORD_1_0611
    if not upstream.is_dir():
        pytest.skip(f"the 1.0611 record folder {upstream} is not present (../shared is absent)")
    # The example expects an openai/parameter-golf checkout in upstream/; here the corpus copy of the record stands in.
    text = EXAMPLE.read_text().replace(f"upstream/records/{RECORD_1_0611}", str(upstream))
    assert str(upstream) in text
    overlay = tmp_path / "example.yaml"
    overlay.write_text(text)
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path), "-n", "-p"]
    proc = subprocess.run([*cmd, "--configfile", str(overlay)], capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    lines = out.splitlines()
    data = data_rule_arguments(out)
    assert (data["variant"], data["train_shards"], data["repo_id"]) == (
        CASEOPS,
        80,
        "romeerp/parameter-golf-caseops-v1",
    )
    runs = [x for x in lines if "pgolf run-upstream" in x]
    assert len(runs) == 3 and all(f"--script {upstream / 'train_gpt.py'}" in x for x in runs)
    assert all('"CASEOPS_ENABLED":1' in x and '"COMPRESSOR":"pergroup"' in x for x in runs)
    assert {s for x in runs for s in ("42", "0", "1234") if f"--seed {s} " in x} == {"42", "0", "1234"}
    record = next(x for x in lines if "pgolf record" in x)
    assert "--data-manifest data/fineweb10B_sp8192_lossless_caps_caseops_v1_reserved/manifest.json" in record
    assert str(upstream / "tokenizers") in record and str(upstream / "lossless_caps.py") in record


def test_missing_system_tool_is_reported(tmp_path, monkeypatch):
    from pgolf import upstream

    (tmp_path / "train_gpt.py").write_text('subprocess.run(["lrzip", "-z", path])\n')
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert upstream.missing_tools(tmp_path) == ["lrzip"]
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "lrzip").write_text("#!/bin/sh\n")
    (fake / "lrzip").chmod(0o755)
    monkeypatch.setenv("PATH", str(fake))
    assert upstream.missing_tools(tmp_path) == []
    (tmp_path / "train_gpt.py").write_text("import brotli\n")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert upstream.missing_tools(tmp_path) == []
