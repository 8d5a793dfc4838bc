"""data.source: local (README, "Data on a volume, results that survive the pod"): a hub data set that `pgolf data`
wrote on another machine (a network volume), checked against the config's hub section, its manifest and the lock, then
linked into data/<name>/ instead of downloaded on the GPU clock."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, env_with_venv
from test_manifest import _hub_folder

from pgolf import stages
from pgolf.cli import main as cli
from pgolf.data import write_shard
from pgolf.data.local import link_local
from pgolf.data.section import local_arguments
from pgolf.fsio import write_json

REMOTE = "datasets/datasets/fineweb10B_sp1024"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def volume(tmp_path, tiny_data):
    """A data folder `pgolf data hub` wrote on a CPU machine (its own lock there), and this machine's lock, which pins
    only the tokenizer (as config/data.lock.json pins sp1024's tokenizer and val shard)."""
    vol = tmp_path / "volume"
    vol.mkdir()
    folder, _, _ = _hub_folder(vol, tiny_data["tokenizer_path"])
    repo, rev = "someone/golf", "0123456789abcdef0123456789abcdef01234567"
    lock = tmp_path / "repo" / "config" / "data.lock.json"
    lock.parent.mkdir(parents=True)
    model = f"datasets/tokenizers/{'fineweb_1024_bpe.model'}"
    key = f"{repo}@{rev}/sp1024"
    write_json(
        lock,
        {
            "format": "pgolf-data-lock",
            "version": 1,
            "datasets": {key: {"files": {model: sha(folder / "fineweb_1024_bpe.model")}}},
        },
    )
    return {"folder": folder, "lock": lock, "key": key, "repo": repo, "rev": rev, "root": tmp_path / "repo"}


def section(v: dict, **hub) -> dict:
    repos = {"sp1024": {"repo_id": v["repo"], "revision": v["rev"], "train_shards": 1, **hub}}
    return {
        "source": "local",
        "name": "fineweb10B_sp1024",
        "local": {"path": str(v["folder"])},
        "hub": {"variant": "sp1024", "repos": repos, "lock": "config/data.lock.json"},
    }


def link(v: dict, data: dict) -> Path:
    """The data step's work (``pgolf data --data-json``), its errors raised."""
    out = v["root"] / "data" / "fineweb10B_sp1024"
    link_local(out, threads=2, **local_arguments(data, v["root"]))
    return out


def test_a_volume_folder_is_checked_and_linked(volume):
    v = volume
    out = v["root"] / "data" / "fineweb10B_sp1024"
    argv = ["data", "--data-json", json.dumps(section(v)), "--root", str(v["root"]), "--out", str(out)]
    assert cli(argv) == 0  # what the data rule runs
    names = {"fineweb_1024_bpe.model", "fineweb_val_000000.bin", "fineweb_train_000000.bin"}
    assert {p.name for p in out.iterdir()} == names | {"manifest.json"}
    for name in names:  # links, no second copy of 16 GB
        assert (out / name).is_symlink() and (out / name).resolve() == (v["folder"] / name).resolve()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source"]["kind"] == "hub" and manifest["source"]["local_path"] == str(v["folder"].absolute())
    assert manifest["source"]["lock"] == str(v["root"] / "config" / "data.lock.json")
    # the files this machine's lock did not have yet are recorded (as the hub step records them), under the hub's names
    files = json.loads(v["lock"].read_text())["datasets"][v["key"]]["files"]
    assert files[f"{REMOTE}/fineweb_train_000000.bin"] == sha(v["folder"] / "fineweb_train_000000.bin")
    assert files[f"{REMOTE}/fineweb_val_000000.bin"] == sha(v["folder"] / "fineweb_val_000000.bin")
    # train and evaluate read the volume's files through it, checked against the lock before every use
    env = stages.data_env(out / "manifest.json")
    # through the repository's own data/ folder (paths published in a record are the repository's), whose links
    # lead to the volume
    assert env["TRAIN_FILES"].startswith(str(out)) and env["VOCAB_SIZE"] == "1024"
    assert (
        Path(env["TRAIN_FILES"].replace("*", "000000")).resolve()
        == (v["folder"] / "fineweb_train_000000.bin").resolve()
    )
    shard = v["folder"] / "fineweb_train_000000.bin"
    write_shard(shard, np.array([1, 5, 6, 7], dtype=np.uint16))  # the volume's file changed afterwards
    with pytest.raises(ValueError, match="fineweb_train_000000.bin has 1032 bytes, manifest says 3424"):
        stages.data_env(out / "manifest.json")


def test_a_changed_file_is_refused_and_the_previous_link_kept(volume):
    v = volume
    out = link(v, section(v))
    before = (out / "manifest.json").read_bytes()
    lock_before = v["lock"].read_bytes()
    shard = v["folder"] / "fineweb_val_000000.bin"
    with open(shard, "r+b") as f:  # same size, one token changed: only the sha256 tells
        f.seek(2000)
        f.write(b"\x05\x00")
    with pytest.raises(ValueError, match=r"fineweb_val_000000.bin: sha256 .* the manifest says"):
        link(v, section(v))
    assert (out / "manifest.json").read_bytes() == before and v["lock"].read_bytes() == lock_before
    assert not any(p.name.startswith(".") for p in out.parent.iterdir())  # no temporary folder left


def test_a_file_that_differs_from_the_lock_is_refused_before_it_is_read(volume):
    v = volume
    lock = json.loads(v["lock"].read_text())
    lock["datasets"][v["key"]]["files"][f"{REMOTE}/fineweb_val_000000.bin"] = "0" * 64
    write_json(v["lock"], lock)
    with pytest.raises(
        ValueError, match=r"does not match the lock .*\n  fineweb_val_000000.bin: .* the lock has 0{64}"
    ):
        link(v, section(v))
    assert not (v["root"] / "data" / "fineweb10B_sp1024").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"revision": "f" * 40}, r"config data\.hub\.repos\.sp1024\.revision is 'f{40}'"),
        ({"repo_id": "other/golf"}, r"repo_id is 'someone/golf', config data\.hub\.repos\.sp1024\.repo_id"),
        ({"train_shards": 2}, r"1 train shards, the config asks for 2"),
    ],
)
def test_a_folder_of_another_data_set_is_refused(volume, change, message):
    with pytest.raises(ValueError, match=message):
        link(volume, section(volume, **change))


def test_a_folder_without_a_manifest_is_refused(volume, tmp_path):
    data = section(volume)
    data["local"]["path"] = str(tmp_path / "empty")
    with pytest.raises(ValueError, match=r"config data\.local\.path: .*empty holds no manifest\.json"):
        link(volume, data)


def test_the_pipeline_refuses_a_missing_folder_before_any_job(tmp_path):
    overlay = tmp_path / "local.yaml"
    overlay.write_text(json.dumps({"data": {"source": "local", "local": {"path": str(tmp_path / "nowhere")}}}))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path), "-n"]
    proc = subprocess.run([*cmd, "--configfile", str(overlay)], capture_output=True, text=True, env=env_with_venv())
    assert proc.returncode != 0
    assert f"config data.local.path: {tmp_path / 'nowhere'} holds no manifest.json" in proc.stdout + proc.stderr
    os.makedirs(tmp_path / "nowhere")
    (tmp_path / "nowhere" / "manifest.json").write_text("{}")
    proc = subprocess.run([*cmd, "--configfile", str(overlay)], capture_output=True, text=True, env=env_with_venv())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "pgolf data --data-json" in proc.stdout + proc.stderr or "rule data" in proc.stdout + proc.stderr
