"""The validation byte sidecar (``fineweb_val_bytes_*.bin``: one uint16 count of original UTF-8 bytes per val token,
0 for BOS), on documents built here: its counts are the UTF-8 length of the text, the manifest records and verifies
it, ``data_env`` passes it to the script, and val_bpb from the sidecar equals val_bpb from the pieces on a tokenizer
that is lossless on these documents (issue 21)."""

from __future__ import annotations

import json
import lzma
import shutil
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm
import torch
from test_train_script import small_args

from pgolf import stages
from pgolf.data import read_shard, verify_manifest, write_manifest, write_shard

DEMO = Path(__file__).resolve().parents[1] / "demo" / "wiki_vital_en.jsonl.xz"


def _incremental_bytes(sp: spm.SentencePieceProcessor, ids: list[int]) -> list[int]:
    """Bytes each token adds to the decoded text: len(decode(ids[:i+1])) - len(decode(ids[:i])), in UTF-8."""
    out, before = [], 0
    for i in range(len(ids)):
        now = len(sp.decode(ids[: i + 1]).encode("utf-8"))
        out.append(now - before)
        before = now
    return out


@pytest.fixture(scope="module")
def docs(tiny_data) -> dict:
    """Short documents (other than the tiny tokenizer's training text) that the tokenizer encodes losslessly without
    byte-fallback pieces, their tokens and their sidecar counts."""
    if not DEMO.is_file():
        pytest.skip(f"demo corpus {DEMO} not present")
    sp = spm.SentencePieceProcessor(model_file=tiny_data["tokenizer_path"])
    texts, tokens, counts = [], [], []
    with lzma.open(DEMO, "rt", encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i < 400:
                continue
            text = " ".join(json.loads(line)["text"][:400].split())
            ids = sp.encode(text)
            if sp.decode(ids) != text or any(sp.is_byte(t) for t in ids):
                continue
            texts.append(text)
            tokens += [1, *ids]
            counts += [0, *_incremental_bytes(sp, ids)]
            if len(texts) == 40:
                break
    assert len(texts) == 40
    return {"sp": sp, "texts": texts, "tokens": np.array(tokens, np.uint16), "bytes": np.array(counts, np.uint16)}


def test_sidecar_counts_are_the_utf8_length_of_the_text(docs):
    tokens, counts = docs["tokens"], docs["bytes"].astype(np.int64)
    starts = list(np.flatnonzero(tokens == 1)) + [tokens.size]
    assert len(starts) == len(docs["texts"]) + 1
    for text, a, b in zip(docs["texts"], starts[:-1], starts[1:], strict=True):
        assert counts[a] == 0  # BOS
        assert (
            int(counts[a:b].sum())
            == len(text.encode("utf-8"))
            == len(docs["sp"].decode(tokens[a + 1 : b].tolist()).encode())
        )
    assert (counts[tokens != 1] > 0).all()


@pytest.fixture
def sidecar_data(tmp_path, tiny_data, docs) -> Path:
    """A data folder: the tiny tokenizer and train shards, the documents above as val, and their sidecar."""
    out = tmp_path / "sc"
    out.mkdir()
    shutil.copyfile(tiny_data["tokenizer_path"], out / "tok.model")
    for i, path in enumerate(tiny_data["train_files"][:2]):
        shutil.copyfile(path, out / f"sc_train_{i:06d}.bin")
    write_shard(out / "sc_val_000000.bin", docs["tokens"])
    write_shard(out / "sc_val_bytes_000000.bin", docs["bytes"])
    write_manifest(out, "sc", {"kind": "test"}, out / "tok.model", "sc")
    return out


def test_manifest_records_and_verifies_the_sidecar(sidecar_data, docs):
    m = json.loads((sidecar_data / "manifest.json").read_text())
    assert [e["path"] for e in m["val_bytes"]["files"]] == ["sc_val_bytes_000000.bin"]
    assert m["val_bytes"]["tokens"] == m["val"]["tokens"] == docs["tokens"].size
    assert m["val_bytes"]["text_bytes"] == sum(len(t.encode()) for t in docs["texts"])
    env = stages.data_env(sidecar_data / "manifest.json")
    assert env["VAL_BYTES_FILES"] == str(sidecar_data.resolve() / "sc_val_bytes_*.bin")
    # the val pattern matches the val shard only, not its sidecar
    assert env["VAL_FILES"].endswith("sc_val_[0-9][0-9][0-9][0-9][0-9][0-9].bin")
    assert sorted(Path(env["VAL_FILES"]).parent.glob(Path(env["VAL_FILES"]).name)) == [
        (sidecar_data / "sc_val_000000.bin").resolve()
    ]

    counts = docs["bytes"].copy()
    counts[5] += 1  # an edited sidecar: same length, other counts
    write_shard(sidecar_data / "sc_val_bytes_000000.bin", counts)
    with pytest.raises(ValueError, match=r"sc_val_bytes_000000\.bin: sha256 \w+, the manifest says"):
        verify_manifest(sidecar_data)
    (sidecar_data / "sc_val_bytes_000000.bin").unlink()
    with pytest.raises(FileNotFoundError, match=r"sc_val_bytes_000000\.bin not found"):
        verify_manifest(sidecar_data)


def test_sidecar_of_the_wrong_length_is_refused(sidecar_data, docs, monkeypatch, train_script):
    write_shard(sidecar_data / "sc_val_bytes_000000.bin", docs["bytes"][:-1])
    n = docs["tokens"].size
    with pytest.raises(ValueError, match=rf"sc_val_bytes_000000\.bin: {n - 1} byte counts, but sc_val_000000\.bin has"):
        write_manifest(sidecar_data, "sc", {"kind": "test"}, sidecar_data / "tok.model", "sc")

    # The script refuses it too (VAL_BYTES_FILES given by hand).
    args = small_args(train_script, val_files=str(sidecar_data / "sc_val_000000.bin"))
    monkeypatch.setenv("VAL_BYTES_FILES", str(sidecar_data / "sc_val_bytes_*.bin"))
    with pytest.raises(ValueError, match=rf"sc_val_bytes_000000\.bin: {n - 1} byte counts, but .*sc_val_000000\.bin"):
        train_script.load_val_bytes(docs["tokens"], args)
    monkeypatch.setenv("VAL_BYTES_FILES", str(sidecar_data / "nothing_*.bin"))
    with pytest.raises(FileNotFoundError, match="no validation byte sidecar shards match"):
        train_script.load_val_bytes(docs["tokens"], args)


def test_val_bpb_from_the_sidecar_equals_val_bpb_from_the_pieces(sidecar_data, docs, monkeypatch, train_script):
    mod = train_script
    env = stages.data_env(sidecar_data / "manifest.json")
    limit = 1200  # VAL_TOKENS_LIMIT: the sidecar is cut with the tokens
    args = small_args(mod, vocab_size=1024, val_files=env["VAL_FILES"], bigram_vocab_size=64, val_tokens_limit=limit)
    tokens = mod.load_val_tokens(args)
    monkeypatch.setenv("VAL_BYTES_FILES", env["VAL_BYTES_FILES"])
    sidecar = mod.load_val_bytes(tokens, args)
    assert sidecar.tolist() == read_shard(sidecar_data / "sc_val_bytes_000000.bin")[:limit].tolist()
    monkeypatch.setenv("VAL_BYTES_FILES", "")
    assert mod.load_val_bytes(tokens, args) is None

    torch.manual_seed(0)
    model = mod.GPT(args)
    rt = mod.Runtime()
    pieces = mod.byte_luts(docs["sp"], 1024)
    with_sidecar = mod.byte_luts(docs["sp"], 1024, sidecar)
    assert mod.target_bytes(tokens, with_sidecar).tolist() == mod.target_bytes(tokens, pieces).tolist()
    scores = {}
    for stride in (16, 8):
        a = mod.evaluate(model, tokens, pieces, args, rt, stride)
        b = mod.evaluate(model, tokens, with_sidecar, args, rt, stride)
        assert a["bytes"] == b["bytes"] == int(docs["bytes"][1:limit].sum())
        assert a["val_bpb"] == b["val_bpb"] and a["val_loss"] == b["val_loss"]
        scores[stride] = a

    # The sidecar is what counts: other counts, another score (the pieces' luts are not consulted).
    doubled = mod.byte_luts(docs["sp"], 1024, sidecar * 2)
    c = mod.evaluate(model, tokens, doubled, args, rt, 16)
    a = scores[16]
    assert c["bytes"] == 2 * a["bytes"] and c["val_bpb"] == pytest.approx(a["val_bpb"] / 2, rel=1e-12)
    with pytest.raises(ValueError, match="byte sidecar has"):
        mod.evaluate(model, tokens[:-3], with_sidecar, args, rt, 16)
