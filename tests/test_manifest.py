"""Train and evaluate verify the data folder against its manifest (and a hub manifest against its lock) before use:
a swapped tokenizer, a shard edited after the manifest was written, token ids beyond the vocabulary are clear errors
naming the file and the expected and found values (issue 15). Each case goes through ``stages.data_env``, the code
path of ``pgolf train`` / ``pgolf evaluate``, which on the old code returned the environment without a word."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pgolf import stages
from pgolf.data import HEADER_BYTES, read_shard, train_tokenizer, write_manifest, write_shard
from pgolf.fsio import write_json

DEMO = Path(__file__).resolve().parents[1] / "demo" / "wiki_vital_en.jsonl.xz"


@pytest.fixture
def data_dir(tmp_path, tiny_data) -> Path:
    """A private copy of the tiny data set (documents source), free to damage."""
    out = tmp_path / "tiny"
    shutil.copytree(Path(tiny_data["manifest_path"]).parent, out)
    return out


@pytest.fixture(scope="module")
def other_tokenizers(tmp_path_factory) -> dict[int, Path]:
    """Two tokenizers that are not the tiny data's: another 1024-piece model (other documents) and a 2048-piece one."""
    if not DEMO.is_file():
        pytest.skip(f"demo corpus {DEMO} not present")
    folder = tmp_path_factory.mktemp("other_tok")
    docs = folder / "docs.jsonl"
    import lzma

    with lzma.open(DEMO, "rt", encoding="utf-8") as f, open(docs, "w", encoding="utf-8") as out:
        for i, line in enumerate(f):
            if i >= 400:  # the tiny data's tokenizer saw the first 400 documents
                out.write(line)
            if i >= 900:
                break
    return {
        1024: train_tokenizer(docs, folder / "other_sp1024", vocab_size=1024, threads=1),
        2048: train_tokenizer(docs, folder / "other_sp2048", vocab_size=2048, threads=1),
    }


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_untouched_data_passes_and_manifest_records_max_token(data_dir, tiny_data):
    env = stages.data_env(data_dir / "manifest.json")
    assert env["VOCAB_SIZE"] == "1024" and env["TOKENIZER_PATH"] == str((data_dir / "tok.model").resolve())
    assert env["TRAIN_FILES"] == str(data_dir.resolve() / "tiny_train_*.bin")
    m = _manifest(data_dir)
    for split in ("train", "val"):
        for entry in m[split]["files"]:
            assert entry["max_token"] == int(read_shard(data_dir / entry["path"]).max())
            assert 0 < entry["max_token"] < 1024


@pytest.mark.parametrize("pieces", [1024, 2048])
def test_swapped_tokenizer_is_refused(data_dir, other_tokenizers, pieces):
    tok = data_dir / "tok.model"
    recorded = _manifest(data_dir)["tokenizer"]["sha256"]
    shutil.copyfile(other_tokenizers[pieces], tok)
    with pytest.raises(ValueError) as err:
        stages.data_env(data_dir / "manifest.json")
    msg = str(err.value)
    assert f"{tok.resolve()}: tokenizer sha256 {_sha(tok)}, the manifest says {recorded}" in msg
    if pieces == 2048:
        assert "tokenizer has 2048 pieces, the manifest's vocab_size is 1024" in msg
    else:
        assert "pieces" not in msg
    assert "Re-run the data step" in msg and "snakemake --forcerun data" in msg


@pytest.mark.parametrize("split", ["train", "val"])
def test_edited_shard_is_refused(data_dir, split):
    entry = _manifest(data_dir)[split]["files"][-1]
    shard = data_dir / entry["path"]
    tokens = read_shard(shard).copy()
    tokens[len(tokens) // 2] = (int(tokens[len(tokens) // 2]) + 1) % 1024  # same size, valid ids, other content
    write_shard(shard, tokens)
    with pytest.raises(ValueError) as err:
        stages.data_env(data_dir / "manifest.json")
    msg = str(err.value)
    assert f"{shard.resolve()}: sha256 {_sha(shard)}, the manifest says {entry['sha256']} (the file changed)" in msg
    assert "(1 problem)" in msg  # nothing else is blamed


def test_token_id_beyond_the_vocabulary_names_shard_and_id(data_dir):
    """A manifest whose hashes match a shard holding id 5000 (written by a tool that did not check ids, or an older
    manifest): refused at load time naming the shard and the id, not an IndexError inside training."""
    m = _manifest(data_dir)
    entry = m["train"]["files"][1]
    shard = data_dir / entry["path"]
    tokens = read_shard(shard).copy()
    tokens[7] = 5000
    write_shard(shard, tokens)
    entry.update(sha256=_sha(shard), bytes=HEADER_BYTES + 2 * tokens.size, tokens=int(tokens.size))
    entry.pop("max_token", None)  # a manifest of before max_token was recorded
    write_json(data_dir / "manifest.json", m)
    with pytest.raises(ValueError, match=rf"{shard.name}: token id 5000 is not below the vocabulary size 1024"):
        stages.data_env(data_dir / "manifest.json")

    # The recorded max_token, when the manifest has it, must match the file as well.
    entry["max_token"] = 900
    write_json(data_dir / "manifest.json", m)
    with pytest.raises(ValueError, match=rf"{shard.name}: token id 5000 is not below"):
        stages.data_env(data_dir / "manifest.json")


def _hub_folder(tmp_path: Path, tokenizer: str) -> tuple[Path, Path, str]:
    """A data folder as the hub step leaves it (flat, source kind hub) and the lock file it was checked against."""
    out = tmp_path / "fineweb10B_sp1024"
    out.mkdir()
    shutil.copyfile(tokenizer, out / "fineweb_1024_bpe.model")
    rng = np.random.default_rng(3)
    for name, n in (("fineweb_val_000000.bin", 900), ("fineweb_train_000000.bin", 1200)):
        toks = rng.integers(4, 1024, size=n, dtype=np.uint16)
        toks[0] = 1
        write_shard(out / name, toks)
    repo, rev = "someone/golf", "0123456789abcdef0123456789abcdef01234567"
    key = f"{repo}@{rev}/sp1024"
    lock = tmp_path / "data.lock.json"
    files = {
        f"datasets/tokenizers/{p.name}" if p.suffix == ".model" else f"datasets/x/{p.name}": _sha(p)
        for p in out.iterdir()
    }
    write_json(lock, {"format": "pgolf-data-lock", "version": 1, "datasets": {key: {"files": files}}})
    source = {"kind": "hub", "repo_id": repo, "revision": rev, "variant": "sp1024", "lock": str(lock)}
    write_manifest(out, "fineweb10B_sp1024", source, out / "fineweb_1024_bpe.model", "fineweb")
    return out, lock, key


def test_hub_manifest_is_checked_against_the_lock(tmp_path, tiny_data):
    out, lock, key = _hub_folder(tmp_path, tiny_data["tokenizer_path"])
    assert stages.data_env(out / "manifest.json")["VOCAB_SIZE"] == "1024"

    # A shard replaced and the manifest "fixed" to match it: only the lock tells.
    shard = out / "fineweb_train_000000.bin"
    write_shard(shard, np.array([1, 5, 6, 7], dtype=np.uint16))
    write_manifest(out, "fineweb10B_sp1024", _manifest(out)["source"], out / "fineweb_1024_bpe.model", "fineweb")
    locked = json.loads(lock.read_text())["datasets"][key]["files"]["datasets/x/fineweb_train_000000.bin"]
    with pytest.raises(ValueError) as err:
        stages.data_env(out / "manifest.json")
    msg = str(err.value)
    assert f"fineweb_train_000000.bin: the manifest's sha256 {_sha(shard)} differs from the lock's {locked}" in msg
    assert str(lock) in msg and "pgolf data hub" in msg

    # The lock the manifest names is gone, or has no entry for the data set.
    lock.rename(tmp_path / "moved.json")
    with pytest.raises(ValueError, match=rf"{lock}: the lock file .* not found"):
        stages.data_env(out / "manifest.json")
    write_json(lock, {"format": "pgolf-data-lock", "version": 1, "datasets": {}})
    with pytest.raises(ValueError, match=rf"{lock}: no entry '{key}'"):
        stages.data_env(out / "manifest.json")
