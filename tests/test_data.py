"""Tests for pgolf.data: shards, tokenizer, documents -> shards, manifest, and the hub download (a fake hub on
127.0.0.1 exercising the real download code: resume, corrupted files, the lock file, the offline cache, errors)."""

from __future__ import annotations

import argparse
import glob
import gzip
import hashlib
import json
import lzma
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest
import sentencepiece as spm
import yaml
from conftest import data_rule_arguments, private_hf_home

from pgolf import data
from pgolf.data import (
    HEADER_BYTES,
    SHARD_MAGIC,
    HubError,
    bounded_map,
    docs_to_shards,
    download_from_hub,
    encode,
    hubclient,
    load_manifest,
    read_lock,
    read_shard,
    shard_token_count,
    train_tokenizer,
    write_manifest,
    write_shard,
)
from pgolf.data import tokenizer as tokenizer_module

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared"
DEMO = REPO / "demo" / "wiki_vital_en.jsonl.xz"
OFFICIAL = SHARED / "data" / "fineweb_sp1024_official"
N_DOCS = 300


def _demo_texts(n: int) -> list[str]:
    if not DEMO.is_file():
        pytest.skip(f"demo corpus {DEMO} not present")
    texts = []
    with lzma.open(DEMO, "rt", encoding="utf-8") as f:
        for line in f:
            texts.append(json.loads(line)["text"])
            if len(texts) == n:
                break
    return texts


def _write_docs(path: Path, texts: list[str]) -> Path:
    opener = {".xz": lzma.open, ".gz": gzip.open}.get(path.suffix, open)
    with opener(path, "wt", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps({"text": t, "id": len(t)}) + "\n")
    return path


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return _demo_texts(N_DOCS)


@pytest.fixture(scope="module")
def docs_file(tmp_path_factory, texts) -> Path:
    return _write_docs(tmp_path_factory.mktemp("docs") / "docs.jsonl", texts)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory, docs_file) -> Path:
    return train_tokenizer(docs_file, tmp_path_factory.mktemp("tok") / "tok_sp1024", vocab_size=1024)


def _split_docs(tokens: np.ndarray) -> list[np.ndarray]:
    """Split a token stream at BOS into documents (each without its BOS)."""
    starts = np.flatnonzero(tokens == 1)
    assert starts.size and starts[0] == 0, "stream must start with BOS"
    return [tokens[a + 1 : b] for a, b in zip(starts, list(starts[1:]) + [tokens.size], strict=True)]


# --------------------------------------------------------------------------------------------------------------------
# Shards


def test_shard_round_trip(tmp_path):
    tokens = np.array([1, 0, 5, 1023, 65535, 7], dtype=np.int64)
    path = tmp_path / "a" / "x_train_000000.bin"
    write_shard(path, tokens)
    raw = path.read_bytes()
    assert len(raw) == HEADER_BYTES + 2 * tokens.size
    header = np.frombuffer(raw[:HEADER_BYTES], dtype="<i4")
    assert header[0] == SHARD_MAGIC and header[1] == 1 and header[2] == tokens.size and not header[3:].any()
    assert np.frombuffer(raw[HEADER_BYTES:], dtype="<u2").tolist() == tokens.tolist()
    for mmap in (False, True):
        back = read_shard(path, mmap=mmap)
        assert back.dtype == np.uint16
        assert back.tolist() == tokens.tolist()
    assert shard_token_count(path) == tokens.size
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left

    write_shard(tmp_path / "empty.bin", np.zeros(0, dtype=np.uint16))
    assert read_shard(tmp_path / "empty.bin").size == 0
    assert read_shard(tmp_path / "empty.bin", mmap=True).size == 0


@pytest.mark.parametrize("bad", [np.array([0, 65536]), np.array([-1, 3]), np.array([0.5]), np.zeros((2, 2), int)])
def test_write_shard_rejects_bad_tokens(tmp_path, bad):
    path = tmp_path / "bad_shard.bin"
    with pytest.raises(ValueError, match="bad_shard.bin"):
        write_shard(path, bad)
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def _corrupt(path: Path, how: str) -> None:
    raw = bytearray(path.read_bytes())
    if how == "truncated":
        del raw[-3:]
    elif how == "extra":
        raw += b"\x00\x00"
    elif how == "magic":
        raw[0:4] = np.array([12345], dtype="<i4").tobytes()
    elif how == "version":
        raw[4:8] = np.array([2], dtype="<i4").tobytes()
    elif how == "count":
        raw[8:12] = np.array([11], dtype="<i4").tobytes()
    elif how == "short":
        del raw[100:]
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize(
    "how, problem",
    [
        ("truncated", "truncated"),
        ("extra", "extra bytes"),
        ("magic", "bad magic"),
        ("version", "version"),
        ("count", "truncated"),
        ("short", "too short"),
    ],
)
def test_read_shard_rejects_bad_files(tmp_path, how, problem):
    path = tmp_path / f"shard_{how}.bin"
    write_shard(path, np.arange(10, dtype=np.uint16))
    _corrupt(path, how)
    for call in (lambda: read_shard(path), lambda: read_shard(path, mmap=True), lambda: shard_token_count(path)):
        with pytest.raises(ValueError, match=rf"shard_{how}\.bin.*{problem}"):
            call()


def test_read_shard_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.bin"):
        read_shard(tmp_path / "nothing.bin")


def test_official_val_prefix_reads():
    """The official sp1024 val prefix (from ../shared) parses as a shard and starts with BOS."""
    path = OFFICIAL / "fineweb_val_prefix_sp1024.bin"
    if not path.is_file():
        pytest.skip(f"{path} not present (../shared is absent)")
    tokens = read_shard(path, mmap=True)
    assert tokens.size == 1_040_298 and tokens[0] == 1 and int(tokens.max()) < 1024


# --------------------------------------------------------------------------------------------------------------------
# Documents and tokenizer


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.xz", ".jsonl.gz"])
def test_iter_documents_reads_compressed_files(tmp_path, suffix):
    texts = ["one", "two\nlines", "ünïcode ✓"]
    path = _write_docs(tmp_path / f"docs{suffix}", texts)
    assert list(data.iter_documents(path)) == texts
    assert list(data.iter_documents(path, max_docs=2)) == texts[:2]


def test_document_without_text_names_file_and_line(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"text": "fine"}\n\n{"title": "no text"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"broken\.jsonl:3"):
        list(data.iter_documents(path))
    path.write_text('{"text": "fine"}\n{"text": 5}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"broken\.jsonl:2"):
        list(data.iter_documents(path))
    path.write_text('{"text": "fine"}\nnot json\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"broken\.jsonl:2"):
        train_tokenizer(path, tmp_path / "tok", vocab_size=1024)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.jsonl"]  # no model, no temp folder


def test_tokenizer_follows_the_sp1024_spec(tokenizer):
    sp = spm.SentencePieceProcessor(model_file=str(tokenizer))
    assert sp.vocab_size() == 1024
    assert (sp.pad_id(), sp.bos_id(), sp.eos_id(), sp.unk_id()) == (0, 1, 2, 3)
    assert [sp.id_to_piece(i) for i in range(4)] == ["<pad>", "<s>", "</s>", "<unk>"]
    byte_ids = [i for i in range(sp.vocab_size()) if sp.is_byte(i)]
    assert byte_ids == list(range(4, 260))
    assert sp.id_to_piece(4) == "<0x00>" and sp.id_to_piece(259) == "<0xFF>"
    pieces = sp.encode("In 1987 cats", out_type=str)
    assert not pieces[0].startswith("▁")  # add_dummy_prefix=False
    digits = [p.lstrip("▁") for p in pieces if any(c.isdigit() for c in p)]
    assert digits == ["1", "9", "8", "7"]  # split_digits
    assert sp.decode(sp.encode("漢")) == "漢"  # rare characters fall back to bytes
    assert tokenizer.with_suffix(".vocab").read_text(encoding="utf-8").count("\n") == 1024

    spec = {f: raw for f, raw, _ in tokenizer_module._pb_fields(_trainer_spec(tokenizer.read_bytes()))}
    assert 1 not in spec and 2 not in spec and 16 not in spec  # no input/temp path/thread count recorded
    assert b"nmt_nfkc" in tokenizer.read_bytes()


def _trainer_spec(model: bytes) -> bytes:
    return next(payload for f, _, payload in tokenizer_module._pb_fields(model) if f == 2)


def test_tokenizer_spec_matches_official_sp1024(tokenizer):
    """Every trainer setting the official sp1024 model records is the same in ours (needs ../shared)."""
    official = OFFICIAL / "fineweb_1024_bpe.model"
    if not official.is_file():
        pytest.skip(f"{official} not present (../shared is absent)")
    theirs = {f: raw for f, raw, _ in tokenizer_module._pb_fields(_trainer_spec(official.read_bytes())) if f != 2}
    ours = {f: raw for f, raw, _ in tokenizer_module._pb_fields(_trainer_spec(tokenizer.read_bytes()))}
    assert {f: ours.get(f) for f in theirs} == theirs
    sp = spm.SentencePieceProcessor(model_file=str(official))
    mine = spm.SentencePieceProcessor(model_file=str(tokenizer))
    assert [sp.id_to_piece(i) for i in range(260)] == [mine.id_to_piece(i) for i in range(260)]


def test_tokenizer_is_reproducible(tmp_path, docs_file, tokenizer):
    again = train_tokenizer(docs_file, tmp_path / "elsewhere" / "other_name", vocab_size=1024, threads=1)
    assert again.read_bytes() == tokenizer.read_bytes()
    assert again.with_suffix(".vocab").read_bytes() == tokenizer.with_suffix(".vocab").read_bytes()
    assert sorted(p.name for p in again.parent.iterdir()) == ["other_name.model", "other_name.vocab"]


def test_tokenizer_max_docs(tmp_path, docs_file):
    small = train_tokenizer(docs_file, tmp_path / "small", vocab_size=512, max_docs=50)
    assert spm.SentencePieceProcessor(model_file=str(small)).vocab_size() == 512


# --------------------------------------------------------------------------------------------------------------------
# Documents -> shards


def test_docs_to_shards_decode_back(tmp_path, docs_file, tokenizer, texts):
    out = tmp_path / "shards"
    stats = docs_to_shards(docs_file, tokenizer, out, "demo", val_docs=20, shard_tokens=20_000, chunk_docs=32)
    sp = spm.SentencePieceProcessor(model_file=str(tokenizer))
    assert stats["docs"] == N_DOCS and stats["val_docs"] == 20 and stats["train_docs"] == N_DOCS - 20
    assert stats["val_files"] == ["demo_val_000000.bin"]
    assert len(stats["train_files"]) > 1
    assert stats["train_files"] == [f"demo_train_{i:06d}.bin" for i in range(len(stats["train_files"]))]
    assert stats["text_bytes"] == sum(len(t.encode("utf-8")) for t in texts)
    assert stats["docs_per_s"] > 0 and stats["tokens_per_s"] > 0 and stats["text_mb_per_s"] > 0

    val = np.concatenate([read_shard(out / f) for f in stats["val_files"]])
    train_shards = [read_shard(out / f) for f in stats["train_files"]]
    assert all(s.size == 20_000 for s in train_shards[:-1]) and 0 < train_shards[-1].size <= 20_000
    train = np.concatenate(train_shards)
    assert val.size == stats["val_tokens"] and train.size == stats["train_tokens"]
    assert val[0] == 1 and train[0] == 1
    assert not np.isin([2, 0], np.concatenate([val, train])).any()  # no EOS, no pad
    docs = _split_docs(val) + _split_docs(train)
    assert len(docs) == N_DOCS
    for text, ids in zip(texts, docs, strict=True):
        assert ids.tolist() == sp.encode(text)
        assert sp.decode(ids.tolist()) == sp.normalize(text).replace("▁", " ")
    plain = [i for i, t in enumerate(texts) if unicodedata.normalize("NFKC", t) == t and re.fullmatch(r"\S+( \S+)*", t)]
    assert len(plain) > N_DOCS // 2
    assert all(sp.decode(docs[i].tolist()) == texts[i] for i in plain)  # text normalization leaves these unchanged


def test_docs_to_shards_same_with_1_and_2_workers(tmp_path, docs_file, tokenizer, monkeypatch):
    """Two worker processes and small chunks (one straddling the val boundary in file order) give the bytes that one
    in-process encoder gives; the chunks are streamed through a bounded window; stale shards are removed."""
    windows: list[int] = []
    ahead: list[int] = []

    def spy(submit, items, window):
        pulled = 0

        def counted():
            nonlocal pulled
            for item in items:
                pulled += 1
                yield item

        windows.append(window)
        for done, result in enumerate(bounded_map(submit, counted(), window), start=1):
            ahead.append(pulled - done)
            yield result

    monkeypatch.setattr(encode, "bounded_map", spy)
    a, b = tmp_path / "a", tmp_path / "b"
    b.mkdir()
    write_shard(b / "demo_train_000099.bin", np.array([1, 2, 3]))  # stale leftover of an older, larger run
    (b / "manifest.json").write_text("{}")
    sa = docs_to_shards(docs_file, tokenizer, a, "demo", val_docs=10, shard_tokens=30_000, threads=2, chunk_docs=7)
    assert windows == [4] and len(ahead) == (N_DOCS - 10 + 6) // 7 + 2 and max(ahead) <= 4
    sb = docs_to_shards(docs_file, tokenizer, b, "demo", val_docs=10, shard_tokens=30_000, threads=1)
    assert windows == [4]  # one worker: encoded in this process, no pool
    assert sa["train_files"] == sb["train_files"] and (sa["val_docs"], sb["val_docs"]) == (10, 10)
    assert sorted(p.name for p in b.iterdir()) == sorted(sa["val_files"] + sa["train_files"])
    for name in sa["val_files"] + sa["train_files"]:
        assert (a / name).read_bytes() == (b / name).read_bytes()


def test_bounded_map_reads_ahead_at_most_window():
    pulled = 0

    def items():
        nonlocal pulled
        for i in range(50):
            pulled += 1
            yield i

    with ThreadPoolExecutor(4) as pool:
        results = []
        for r in bounded_map(lambda i: pool.submit(lambda: i * i), items(), window=3):
            assert pulled - len(results) <= 3  # never more than 3 items read but not yet consumed
            results.append(r)
    assert results == [i * i for i in range(50)]
    with pytest.raises(ValueError, match="window"):
        list(bounded_map(lambda i: None, [1], window=0))


def test_docs_to_shards_max_docs_and_errors(tmp_path, docs_file, tokenizer, texts):
    stats = docs_to_shards(docs_file, tokenizer, tmp_path / "m", "demo", val_docs=5, max_docs=12)
    assert (stats["val_docs"], stats["train_docs"]) == (5, 7)
    with pytest.raises(ValueError, match="val_docs"):
        docs_to_shards(docs_file, tokenizer, tmp_path / "e", "demo", val_docs=N_DOCS)
    with pytest.raises(ValueError, match="prefix"):
        docs_to_shards(docs_file, tokenizer, tmp_path / "e", "bad/name", val_docs=5)
    with pytest.raises(FileNotFoundError, match="absent.model"):
        docs_to_shards(docs_file, tmp_path / "absent.model", tmp_path / "e", "demo", val_docs=5)
    broken = tmp_path / "broken.jsonl"
    broken.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts[:40]) + '{"title": 1}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"broken\.jsonl:41: expected a JSON object"):  # raised in a worker process
        docs_to_shards(broken, tokenizer, tmp_path / "e", "demo", val_docs=5, threads=2, chunk_docs=8)


# --------------------------------------------------------------------------------------------------------------------
# Manifest


@pytest.fixture
def dataset(tmp_path, docs_file, tokenizer) -> Path:
    out = tmp_path / "ds"
    docs_to_shards(docs_file, tokenizer, out, "demo", val_docs=20, shard_tokens=25_000)
    write_manifest(out, "demo-set", {"kind": "test"}, tokenizer, "demo")
    return out


def test_manifest_round_trip(dataset, tokenizer):
    m = json.loads((dataset / "manifest.json").read_text())
    assert m["name"] == "demo-set" and m["prefix"] == "demo" and m["source"] == {"kind": "test"}
    assert m["tokenizer"]["vocab_size"] == 1024
    assert m["tokenizer"]["sha256"] == hashlib.sha256(tokenizer.read_bytes()).hexdigest()
    for split in ("train", "val"):
        for entry in m[split]["files"]:
            assert not Path(entry["path"]).is_absolute()
            raw = (dataset / entry["path"]).read_bytes()
            assert entry["bytes"] == len(raw) == HEADER_BYTES + 2 * entry["tokens"]
            assert entry["sha256"] == hashlib.sha256(raw).hexdigest()

    loaded = load_manifest(dataset / "manifest.json")
    assert load_manifest(dataset)["train_files"] == loaded["train_files"]
    assert loaded["tokenizer_path"] == str(tokenizer.resolve())
    assert loaded["vocab_size"] == 1024
    assert loaded["train_files"] == [str((dataset / e["path"]).resolve()) for e in m["train"]["files"]]
    assert loaded["val_files"] == [str((dataset / "demo_val_000000.bin").resolve())]
    for split in ("train", "val"):
        assert Path(loaded[f"{split}_glob"]).is_absolute()
        assert sorted(glob.glob(loaded[f"{split}_glob"])) == loaded[f"{split}_files"]
        assert loaded[f"{split}_tokens"] == sum(read_shard(f).size for f in loaded[f"{split}_files"])
    assert m["totals"]["tokens"] == loaded["train_tokens"] + loaded["val_tokens"]


def test_manifest_errors(dataset, tokenizer):
    manifest = dataset / "manifest.json"
    m = json.loads(manifest.read_text())

    (dataset / "demo_train_000001.bin").rename(dataset / "moved.bin")
    with pytest.raises(FileNotFoundError, match=r"manifest\.json.*demo_train_000001\.bin"):
        load_manifest(manifest)
    (dataset / "moved.bin").rename(dataset / "demo_train_000001.bin")

    for bad in ({k: v for k, v in m.items() if k != "train"}, {**m, "format": "other"}, {**m, "tokenizer": 3}):
        manifest.write_text(json.dumps(bad))
        with pytest.raises(ValueError, match=r"manifest\.json"):
            load_manifest(manifest)
    manifest.write_text(json.dumps(m))
    load_manifest(manifest)

    write_shard(dataset / "demo_train_000077.bin", np.array([1, 5]))  # a stray shard the glob would pick up
    with pytest.raises(ValueError, match=r"manifest\.json.*glob"):
        load_manifest(manifest)
    with pytest.raises(ValueError, match="demo_train_000077.bin"):
        write_manifest(dataset, "demo-set", "test", tokenizer, "demo")  # numbering gap
    (dataset / "demo_train_000077.bin").unlink()

    with pytest.raises(FileNotFoundError, match="manifest.json"):
        load_manifest(dataset / "sub" / "manifest.json")


def test_write_manifest_rejects_ids_beyond_vocab(tmp_path, tokenizer):
    write_shard(tmp_path / "x_val_000000.bin", np.array([1, 5, 6]))
    write_shard(tmp_path / "x_train_000000.bin", np.array([1, 5, 1024]))
    with pytest.raises(ValueError, match=r"x_train_000000\.bin.*1024"):
        write_manifest(tmp_path, "x", "test", tokenizer, "x")
    assert not (tmp_path / "manifest.json").exists()
    (tmp_path / "x_val_000000.bin").unlink()
    write_shard(tmp_path / "x_train_000000.bin", np.array([1, 5]))
    with pytest.raises(ValueError, match="no x_val"):
        write_manifest(tmp_path, "x", "test", tokenizer, "x")


def test_cli_documents(tmp_path, docs_file, capsys):
    parser = argparse.ArgumentParser(prog="pgolf")
    data.register(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "cli"
    argv = ["data", "documents", "--docs", str(docs_file), "--out", str(out), "--name", "wiki", "--vocab-size", "1024"]
    args = parser.parse_args(argv + ["--val-docs", "25", "--shard-tokens", "40000", "--tokenizer-max-docs", "250"])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "tokens/s" in printed and "manifest.json" in printed
    m = load_manifest(out)
    assert Path(m["tokenizer_path"]).name == "tokenizer_sp1024.model"
    assert m["source"]["kind"] == "documents" and m["source"]["tokenizer_max_docs"] == 250
    assert len(m["train_files"]) > 1 and Path(m["val_files"][0]).name == "wiki_val_000000.bin"


def _data_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pgolf")
    data.register(parser.add_subparsers(dest="command", required=True))
    return parser


def test_cli_data_json_builds_what_the_documents_subcommand_builds(tmp_path, docs_file, capsys):
    """`pgolf data --data-json` (the data rule): the section's relative documents path starts at --root; the data set
    is the one `pgolf data documents` with the same settings as flags builds, file for file."""
    section = {
        "source": "documents",
        "name": "wiki",
        "documents": {"path": docs_file.name, "vocab_size": 1024, "val_docs": 25, "shard_tokens": 40000},
    }
    section["documents"] |= {"max_docs": None, "tokenizer_max_docs": 250}
    argv = ["data", "--data-json", json.dumps(section), "--root", str(docs_file.parent), "--out", str(tmp_path / "a")]
    args = _data_parser().parse_args(argv + ["--threads", "2"])
    assert args.func(args) == 0
    assert "tokens/s" in capsys.readouterr().out
    argv = ["data", "documents", "--docs", str(docs_file), "--out", str(tmp_path / "b"), "--name", "wiki"]
    argv += ["--vocab-size", "1024", "--val-docs", "25", "--shard-tokens", "40000", "--tokenizer-max-docs", "250"]
    args = _data_parser().parse_args(argv + ["--threads", "2"])
    assert args.func(args) == 0
    a, b = load_manifest(tmp_path / "a"), load_manifest(tmp_path / "b")
    assert a["source"]["docs"] == str(docs_file) and a["source"] == b["source"]
    assert a["tokenizer"] == b["tokenizer"] and a["train"] == b["train"] and a["val"] == b["val"]


def test_cli_data_json_errors_name_the_key(tmp_path):
    parser = _data_parser()
    hub = {"variant": "sp2048", "repos": {"sp1024": {"repo_id": "a/b", "revision": "main"}}}
    args = parser.parse_args(["data", "--data-json", json.dumps({"source": "hub", "name": "x", "hub": hub})])
    args.out = str(tmp_path / "x")
    with pytest.raises(
        ValueError, match=r"data.hub.repos has no entry for data.hub.variant 'sp2048' \(it has: sp1024\)"
    ):
        args.func(args)
    args = parser.parse_args(["data", "--data-json", "{not json", "--out", str(tmp_path / "x")])
    with pytest.raises(ValueError, match="--data-json is not valid JSON"):
        args.func(args)
    section = {"source": "documents", "name": "x", "documents": {"path": "d.jsonl", "vocab_size": "big", "val_docs": 1}}
    args = parser.parse_args(["data", "--data-json", json.dumps(section), "--out", str(tmp_path / "x")])
    with pytest.raises(
        ValueError, match="config data.documents.vocab_size must be an integer of at least 1, got 'big'"
    ):
        args.func(args)
    args = parser.parse_args(["data", "--data-json", "{}"])
    with pytest.raises(SystemExit):  # --out missing
        args.func(args)
    args = parser.parse_args(["data", "--data-json", "{}", "hub", "--out", str(tmp_path / "x")])
    with pytest.raises(ValueError, match="--data-json goes without a subcommand"):
        args.func(args)
    assert not (tmp_path / "x").exists()


def test_the_data_section_is_narrowed_to_what_its_source_uses():
    from pgolf.data import documents_arguments, hub_arguments, used_section

    repos = {
        "sp1024": {"repo_id": "a/one", "revision": "0" * 40, "train_shards": 80, "verified": True},
        "sp8192": {"repo_id": "b/two", "revision": "main", "train_shards": 128, "remote_root": "x"},
    }
    hub = {"variant": "sp8192", "train_shards": None, "repos": repos, "lock": "config/l.json", "timeout_s": 30}
    docs = {"path": "/abs/docs.jsonl", "vocab_size": 1024, "val_docs": 5}
    section = {"source": "hub", "name": "n", "hub": hub, "documents": docs}
    used = used_section(section)
    assert used == {"source": "hub", "name": "n", "hub": {**hub, "repos": {"sp8192": repos["sp8192"]}}}
    args = hub_arguments(used, "../repo")
    assert (args["repo_id"], args["revision"], args["train_shards"], args["remote_root"]) == ("b/two", "main", 128, "x")
    assert args["lock_path"] == "../repo/config/l.json" and args["endpoint"] is None and args["update_lock"] is False
    assert hub_arguments({**section, "hub": {**hub, "lock": None}})["lock_path"] is None
    assert hub_arguments({**section, "hub": {**hub, "train_shards": 2}})["train_shards"] == 2
    used = used_section({**section, "source": "documents"})
    assert used == {"source": "documents", "name": "n", "documents": docs}
    assert documents_arguments(used, "../repo")["docs"] == "/abs/docs.jsonl"  # absolute paths stay
    assert documents_arguments({**used, "documents": {**docs, "path": "d/docs.jsonl"}}, ".")["docs"] == "d/docs.jsonl"
    with pytest.raises(ValueError, match="data.hub.repos.sp8192: verified is true but revision 'main' is not a 40-hex"):
        used_section({**section, "hub": {**hub, "repos": {"sp8192": {**repos["sp8192"], "verified": True}}}})
    with pytest.raises(ValueError, match="data.hub.train_shards is null and data.hub.repos.sp8192 has no train_shards"):
        used_section({**section, "hub": {**hub, "repos": {"sp8192": {"repo_id": "b/two", "revision": "main"}}}})
    with pytest.raises(ValueError, match="config data.source must be hub, documents or local, got 'ftp'"):
        used_section({**section, "source": "ftp"})


# --------------------------------------------------------------------------------------------------------------------
# Hub download against a fake hub on 127.0.0.1


class _FakeHub:
    """Serves ``root/<path>`` as ``/datasets/<repo_id>/resolve/<revision>/<path>`` (HEAD and GET) like the hub: ETag =
    sha256 of the file (as for LFS files), X-Repo-Commit, range requests (206), X-Error-Code on 404s. Faults on demand:
    ``cut[name] = n`` drops the connection after n bytes of the next GET of that file; ``corrupt`` files are served
    with one byte changed (and the true ETag)."""

    COMMIT = "0123456789abcdef0123456789abcdef01234567"

    def __init__(self, root: Path, repo_id: str):
        self.root, self.repo_id = root, repo_id
        self.requests: list[tuple[str, str, str | None]] = []  # method, path, Range header
        self.served: dict[str, int] = {}  # body bytes sent, per file name
        self.cut: dict[str, int] = {}
        self.corrupt: set[str] = set()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_HEAD(self):  # noqa: N802
                self._serve(body=False)

            def do_GET(self):  # noqa: N802
                self._serve(body=True)

            def _serve(self, body: bool) -> None:
                path = unquote(urlsplit(self.path).path)
                rng = self.headers.get("Range")
                hub.requests.append((self.command, path, rng))
                m = re.fullmatch(r"/datasets/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
                if not m or m.group(1) != hub.repo_id:
                    return self._error(404, "RepoNotFound", "Repository not found")
                if m.group(2) not in ("main", hub.COMMIT):
                    return self._error(404, "RevisionNotFound", "Revision not found")
                file = hub.root / m.group(3)
                if not file.is_file():
                    return self._error(404, "EntryNotFound", "Entry not found")
                payload = bytearray(file.read_bytes())
                etag = hashlib.sha256(payload).hexdigest()
                if file.name in hub.corrupt:
                    payload[-2] ^= 0x01  # the low byte of the last token: still a valid shard, other content
                start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1)) if rng else 0
                chunk = bytes(payload[start:])
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(payload) - 1}/{len(payload)}")
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(chunk)))
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("ETag", f'"{etag}"')
                self.send_header("X-Repo-Commit", hub.COMMIT)
                self.end_headers()
                if not body:
                    return
                cut = hub.cut.pop(file.name, None)
                if cut is not None:
                    chunk = chunk[:cut]
                self.wfile.write(chunk)
                self.wfile.flush()
                hub.served[file.name] = hub.served.get(file.name, 0) + len(chunk)
                if cut is not None:  # hang up in the middle of the body
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)

            def _error(self, status: int, code: str, message: str) -> None:
                payload = json.dumps({"error": message}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("X-Error-Code", code)
                self.send_header("X-Error-Message", message)
                self.send_header("X-Repo-Commit", hub.COMMIT)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def gets(self, name: str | None = None) -> list[str]:
        return [p for method, p, _ in self.requests if method == "GET" and (name is None or p.endswith("/" + name))]

    def remote(self, name: str) -> Path:
        return next(self.root.rglob(name))


REPO_ID = "someone/fake-golf"
SHARDS = ["fineweb_val_000000.bin"] + [f"fineweb_train_{i:06d}.bin" for i in range(3)]
FILES = ["fineweb_1024_bpe.model", "fineweb_1024_bpe.vocab", *SHARDS]
SHARD_DIR = "datasets/datasets/fineweb10B_sp1024"


def _shard(rng: np.random.Generator, n: int) -> np.ndarray:
    toks = rng.integers(4, 1024, size=n, dtype=np.uint16)
    toks[0] = 1
    return toks


@pytest.fixture
def fake_hub(tmp_path, monkeypatch, tokenizer):
    """A hub repo with remote_root 'datasets', variant sp1024: our tokenizer under the official name, 3 train shards
    and the challenge's manifest.json listing them; downloads here retry fast."""
    cache_dir = private_hf_home(tmp_path, monkeypatch)

    root = tmp_path / "hub_repo"
    (root / "datasets" / "tokenizers").mkdir(parents=True)
    (root / SHARD_DIR).mkdir(parents=True)
    (root / "datasets" / "tokenizers" / "fineweb_1024_bpe.model").write_bytes(tokenizer.read_bytes())
    (root / "datasets" / "tokenizers" / "fineweb_1024_bpe.vocab").write_bytes(
        tokenizer.with_suffix(".vocab").read_bytes()
    )
    rng = np.random.default_rng(0)
    for name, n in zip(SHARDS, [1500, 2000, 2001, 2002], strict=True):
        write_shard(root / SHARD_DIR / name, _shard(rng, n))
    manifest = {
        "datasets": [{"name": "fineweb10B_sp1024", "tokenizer_name": "sp1024", "stats": {"files_train": 3}}],
        "tokenizers": [
            {
                "name": "sp1024",
                "model_path": "tokenizers/fineweb_1024_bpe.model",
                "vocab_path": "tokenizers/fineweb_1024_bpe.vocab",
            }
        ],
    }
    (root / "datasets" / "manifest.json").write_text(json.dumps(manifest))

    hub = _FakeHub(root, REPO_ID)
    hub.thread.start()
    hub.cache_dir = cache_dir
    hub.fast = {"endpoint": hub.endpoint, "repo_id": REPO_ID, "timeout": 5.0, "retries": 1, "max_workers": 3}
    yield hub
    hub.server.shutdown()
    hub.server.server_close()


def _download(out: Path, hub: _FakeHub, **kwargs) -> tuple[dict, list[str]]:
    lines: list[str] = []
    args = {**hub.fast, "train_shards": 3, "cache_dir": hub.cache_dir, "log": lines.append, **kwargs}
    return download_from_hub(out, **args), lines


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_download_from_fake_hub_writes_and_checks_the_lock(tmp_path, fake_hub):
    out, lock = tmp_path / "fineweb", tmp_path / "data.lock.json"
    result, lines = _download(out, fake_hub, lock_path=lock)
    assert result["downloaded"] == sorted(FILES) and result["present"] == [] and result["from_cache"] == []
    assert _listing(out) == sorted(FILES + ["manifest.json"])  # flat, no partial folder left
    for name in FILES:
        assert (out / name).read_bytes() == fake_hub.remote(name).read_bytes()
    assert "/datasets/someone/fake-golf/resolve/main/datasets/tokenizers/fineweb_1024_bpe.model" in fake_hub.gets()
    assert any(re.match(r"fetched fineweb_train_000002\.bin: 5,028 bytes, 5,028 in .* MB/s\)$", x) for x in lines)
    assert any(f"is commit {fake_hub.COMMIT}" in x for x in lines)  # a branch: the log names its commit

    m = load_manifest(out)
    assert m["name"] == "fineweb10B_sp1024" and m["prefix"] == "fineweb" and m["vocab_size"] == 1024
    assert m["source"]["repo_id"] == REPO_ID and m["source"]["commit"] == fake_hub.COMMIT
    assert m["train_tokens"] == 2000 + 2001 + 2002 and m["val_tokens"] == 1500
    assert m["train_glob"] == str(out.resolve() / "fineweb_train_*.bin")

    # The lock: written on first download, the sha256 of every file under repo@revision/variant.
    entry = read_lock(lock)["datasets"][f"{REPO_ID}@main/sp1024"]
    assert entry["commit"] == fake_hub.COMMIT and entry["variant"] == "sp1024"
    assert entry["files"] == {
        str(fake_hub.remote(n).relative_to(fake_hub.root).as_posix()): hashlib.sha256(
            (out / n).read_bytes()
        ).hexdigest()
        for n in FILES
    }
    before = lock.read_bytes()

    # Second run: everything present and verified -> no download, the lock unchanged.
    fake_hub.requests.clear()
    again, lines = _download(out, fake_hub, lock_path=lock)
    assert again["downloaded"] == [] and again["present"] == sorted(FILES)
    assert [p for p in fake_hub.gets() if p.endswith(".bin") or "bpe" in p] == []
    assert lock.read_bytes() == before and any("all 6 files match" in x for x in lines)

    # A damaged file, and one with a valid header but other content (only the lock tells): both fetched again.
    (out / "fineweb_train_000001.bin").write_bytes(b"garbage")
    write_shard(out / "fineweb_train_000002.bin", _shard(np.random.default_rng(5), 2002))
    again, lines = _download(out, fake_hub, lock_path=lock)
    assert again["downloaded"] == again["removed"] == ["fineweb_train_000001.bin", "fineweb_train_000002.bin"]
    assert any(re.match(r"removed .*fineweb_train_000002\.bin: sha256 \w+ differs from the lock", x) for x in lines)
    for name in FILES:
        assert (out / name).read_bytes() == fake_hub.remote(name).read_bytes()
    assert lock.read_bytes() == before


def test_changed_hub_file_is_an_error_unless_update_lock(tmp_path, fake_hub):
    out, lock = tmp_path / "fineweb", tmp_path / "data.lock.json"
    _download(out, fake_hub, lock_path=lock)
    before = lock.read_bytes()
    write_shard(fake_hub.remote("fineweb_train_000000.bin"), _shard(np.random.default_rng(9), 2000))  # upstream change
    (out / "fineweb_train_000000.bin").unlink()
    with pytest.raises(HubError, match=r"fineweb_train_000000\.bin: sha256 \w+ does not match the lock .*update_lock"):
        _download(out, fake_hub, lock_path=lock)
    assert not (out / "fineweb_train_000000.bin").exists()  # the bad file is never used
    assert not (out / "manifest.json").exists() and lock.read_bytes() == before
    assert _listing(out / data.PARTIAL_DIR) == []

    result, lines = _download(out, fake_hub, lock_path=lock, update_lock=True)
    assert result["downloaded"] == ["fineweb_train_000000.bin"] and result["lock_recorded"] == [
        f"{SHARD_DIR}/fineweb_train_000000.bin"
    ]
    new = hashlib.sha256(fake_hub.remote("fineweb_train_000000.bin").read_bytes()).hexdigest()
    assert (
        read_lock(lock)["datasets"][f"{REPO_ID}@main/sp1024"]["files"][f"{SHARD_DIR}/fineweb_train_000000.bin"] == new
    )
    assert any("replaces" in x for x in lines)


def test_pinned_revision_and_prepinned_hash(tmp_path, fake_hub):
    """A commit revision is what the requests name and what keys the lock; a hash pinned beforehand is enforced."""
    out, lock = tmp_path / "fineweb", tmp_path / "data.lock.json"
    key = f"{REPO_ID}@{fake_hub.COMMIT}/sp1024"
    model = "datasets/tokenizers/fineweb_1024_bpe.model"
    lock.write_text(
        json.dumps({"format": "pgolf-data-lock", "version": 1, "datasets": {key: {"files": {model: "0" * 64}}}})
    )
    with pytest.raises(HubError, match=r"fineweb_1024_bpe\.model: sha256 .* does not match the lock"):
        _download(out, fake_hub, lock_path=lock, revision=fake_hub.COMMIT)
    assert not (out / "fineweb_1024_bpe.model").exists() and not (out / "manifest.json").exists()
    assert all(f"/resolve/{fake_hub.COMMIT}/" in p for p in fake_hub.gets())

    true = hashlib.sha256(fake_hub.remote("fineweb_1024_bpe.model").read_bytes()).hexdigest()
    lock.write_text(
        json.dumps({"format": "pgolf-data-lock", "version": 1, "datasets": {key: {"files": {model: true}}}})
    )
    result, lines = _download(out, fake_hub, lock_path=lock, revision=fake_hub.COMMIT)
    assert len(result["lock_recorded"]) == len(FILES) - 1  # all but the pinned one are new
    assert not any("not a commit" in x or "is commit" in x for x in lines)
    with pytest.raises(HubError, match="revision 'v9' not found"):
        _download(tmp_path / "other", fake_hub, revision="v9")
    with pytest.raises(ValueError, match="revision"):
        _download(tmp_path / "other", fake_hub, revision="bad..name")


def test_interrupted_download_resumes_with_a_range_request(tmp_path, fake_hub):
    out = tmp_path / "fineweb"
    name = "fineweb_train_000001.bin"
    size = fake_hub.remote(name).stat().st_size
    fake_hub.cut[name] = 1500
    with pytest.raises(HubError, match=rf"{name}: download .* failed after 1 attempts.* 1,500 bytes received"):
        _download(out, fake_hub, retries=0)
    part = out / data.PARTIAL_DIR / f"{name}.part"
    assert part.stat().st_size == 1500  # kept for the next run, outside the data set's files
    assert not (out / name).exists() and not (out / "manifest.json").exists()

    fake_hub.requests.clear()
    fake_hub.served.clear()
    result, lines = _download(out, fake_hub, retries=0)  # a new run (as after a killed job) resumes
    assert name in result["downloaded"]
    assert ("GET", f"/datasets/{REPO_ID}/resolve/main/{SHARD_DIR}/{name}", "bytes=1500-") in fake_hub.requests
    assert fake_hub.served[name] == size - 1500
    assert any("resumed at 1,500 bytes" in x for x in lines)
    assert (out / name).read_bytes() == fake_hub.remote(name).read_bytes()
    assert not (out / data.PARTIAL_DIR).exists()
    load_manifest(out)

    # Within one run: a dropped connection is resumed by the retry.
    (out / name).unlink()
    fake_hub.cut[name] = 700
    fake_hub.requests.clear()
    result, lines = _download(out, fake_hub, retries=2)
    assert result["downloaded"] == [name] and any("resuming at 700 bytes" in x for x in lines)
    assert [r for _, p, r in fake_hub.requests if p.endswith(name) and r] == ["bytes=700-"]
    assert (out / name).read_bytes() == fake_hub.remote(name).read_bytes()


def test_corrupted_transfer_is_rejected(tmp_path, fake_hub):
    out = tmp_path / "fineweb"
    fake_hub.corrupt.add("fineweb_train_000002.bin")
    with pytest.raises(HubError, match=r"fineweb_train_000002\.bin .* not valid .* differs from the hub's ETag"):
        _download(out, fake_hub)
    assert not (out / "fineweb_train_000002.bin").exists() and not (out / "manifest.json").exists()
    assert not list((out / data.PARTIAL_DIR).glob("fineweb_train_000002.bin.part"))

    # A shard the tokenizer cannot have produced (ids beyond the vocabulary) is rejected by its content.
    fake_hub.corrupt.clear()
    bad = np.array([1, 5, 2000], dtype=np.uint16)
    write_shard(fake_hub.remote("fineweb_train_000002.bin"), bad)
    with pytest.raises(HubError, match=r"fineweb_train_000002\.bin .* token id 2000 is not below the vocabulary"):
        _download(out, fake_hub)
    assert not (out / "fineweb_train_000002.bin").exists()


def test_too_many_shards_is_an_error_before_any_download(tmp_path, fake_hub):
    out = tmp_path / "fineweb"
    with pytest.raises(HubError, match=r"manifest\.json lists 3 train shards of fineweb10B_sp1024, asked for 5"):
        _download(out, fake_hub, train_shards=5)
    assert fake_hub.gets() == [f"/datasets/{REPO_ID}/resolve/main/datasets/manifest.json"] and not out.exists()

    (fake_hub.root / "datasets" / "manifest.json").unlink()  # no manifest.json: a 404 tells
    fake_hub.requests.clear()
    with pytest.raises(HubError, match=r"fineweb_train_000003\.bin not found: the repo has 3 train shards"):
        _download(out, fake_hub, train_shards=6)
    assert not [p for p in fake_hub.gets() if p.endswith(".bin")] and not out.exists()

    with pytest.raises(HubError, match=r"not found: datasets/tokenizers/fineweb_2048_bpe\.model"):
        _download(tmp_path / "other", fake_hub, variant="sp2048")
    with pytest.raises(ValueError, match="variant"):
        download_from_hub(tmp_path / "other", variant="byte260")


def test_unreachable_hub_fails_fast_with_a_clear_error(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    out = tmp_path / "fineweb"
    t0 = time.perf_counter()
    with pytest.raises(HubError, match=r"manifest\.json: cannot reach dataset a/b@main on http://127.*2 attempts.*"):
        download_from_hub(out, repo_id="a/b", endpoint=dead, timeout=2, retries=1, cache_dir=tmp_path / "c", log=print)
    assert time.perf_counter() - t0 < 10
    assert not out.exists()

    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        t0 = time.perf_counter()
        with pytest.raises(HubError, match=r"cannot reach .* timeout 0\.5 s; last error \w*Timeout"):
            download_from_hub(
                out,
                repo_id="a/b",
                endpoint=f"http://127.0.0.1:{silent.getsockname()[1]}",
                timeout=0.5,
                retries=0,
                cache_dir=tmp_path / "c",
                log=print,
            )
        assert time.perf_counter() - t0 < 10


def _fill_cache(hub: _FakeHub, names: list[str]) -> None:
    """Put repo files into the local Hugging Face cache the way huggingface_hub itself does."""
    from huggingface_hub import hf_hub_download

    for path in sorted(hub.root.rglob("*")):
        if path.is_file() and (path.name in names or path.name == "manifest.json"):
            remote = path.relative_to(hub.root).as_posix()
            hf_hub_download(REPO_ID, remote, repo_type="dataset", endpoint=hub.endpoint, cache_dir=hub.cache_dir)


def test_offline_from_the_hugging_face_cache(tmp_path, fake_hub, monkeypatch):
    import huggingface_hub.constants as hf_constants

    _fill_cache(fake_hub, FILES)
    fake_hub.requests.clear()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    out, lock = tmp_path / "fineweb", tmp_path / "data.lock.json"
    result, lines = _download(out, fake_hub, lock_path=lock, endpoint="http://127.0.0.1:9")
    assert fake_hub.requests == []  # no network at all
    assert result["from_cache"] == sorted(FILES) and result["downloaded"] == []
    blob = Path(hubclient.cached_file(REPO_ID, f"{SHARD_DIR}/fineweb_train_000000.bin", "main", fake_hub.cache_dir))
    assert (out / "fineweb_train_000000.bin").stat().st_ino == blob.resolve().stat().st_ino  # linked, not copied
    assert load_manifest(out)["train_tokens"] == 2000 + 2001 + 2002
    assert load_manifest(out)["source"]["commit"] == fake_hub.COMMIT  # the branch, resolved by the cache's snapshot
    assert len(read_lock(lock)["datasets"][f"{REPO_ID}@main/sp1024"]["files"]) == len(FILES)
    assert any("offline" in x for x in lines)

    # A file missing from the cache cannot come from anywhere: a clear error, nothing written.
    shutil.rmtree(fake_hub.cache_dir)
    fake_hub.requests.clear()
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    _fill_cache(fake_hub, FILES[:-1])
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubError, match=r"offline \(HF_HUB_OFFLINE\): 1 files .* cache .*/fineweb_train_000002\.bin$"):
        _download(tmp_path / "other", fake_hub)
    assert not (tmp_path / "other").exists()


def test_cli_data_json_downloads_from_the_hub(tmp_path, fake_hub, capsys):
    """The hub section as the data rule passes it: the variant's repo, its train shards, the lock under --root."""
    repos = {"sp1024": {"repo_id": REPO_ID, "revision": "main", "remote_root": "datasets", "train_shards": 2}}
    hub = {"variant": "sp1024", "train_shards": None, "repos": repos, "lock": "config/lock.json", "update_lock": False}
    hub |= {"endpoint": fake_hub.endpoint, "max_workers": 2, "timeout_s": 5, "retries": 1}
    section = json.dumps({"source": "hub", "name": "tiny", "hub": hub})
    out = tmp_path / "json_hub"
    args = _data_parser().parse_args(["data", "--data-json", section, "--root", str(tmp_path), "--out", str(out)])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "2 train shards" in printed and "fetched fineweb_val_000000.bin" in printed
    m = load_manifest(out)
    assert m["name"] == "tiny" and m["source"]["lock"] == str(tmp_path / "config" / "lock.json")
    assert len(m["train_files"]) == 2 and m["source"]["endpoint"] == fake_hub.endpoint
    assert read_lock(tmp_path / "config" / "lock.json")["datasets"][f"{REPO_ID}@main/sp1024"]["commit"]


def test_cli_hub(tmp_path, fake_hub, capsys):
    parser = argparse.ArgumentParser(prog="pgolf")
    data.register(parser.add_subparsers(dest="command", required=True))
    out, lock = tmp_path / "cli_hub", tmp_path / "lock.json"
    argv = ["data", "hub", "--out", str(out), "--repo-id", REPO_ID, "--train-shards", "2"]
    argv += ["--endpoint", fake_hub.endpoint, "--name", "tiny", "--lock", str(lock), "--timeout", "5", "--retries", "1"]
    argv += ["--cache-dir", str(fake_hub.cache_dir), "--threads", "2", "--max-workers", "2"]
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "2 train shards" in printed and "fetched fineweb_val_000000.bin" in printed
    assert load_manifest(out)["name"] == "tiny" and lock.is_file()
    with pytest.raises(SystemExit):
        parser.parse_args(["data", "hub", "--out", "x", "--revision", "no good"])


# --------------------------------------------------------------------------------------------------------------------
# The production configuration: pinned revision, pre-pinned hashes, the variant's repo chosen by the config

KNOWN = {
    "datasets/tokenizers/fineweb_1024_bpe.model": "4f5e8adb109c66b4886963bc75a7befd73bda36d27fd7102df8e9e66503b0e2a",
    "datasets/datasets/fineweb10B_sp1024/fineweb_val_000000.bin": (
        "4860ad80c0516a150b6917ee9ed17be5d27a0726a0b44ba9fe28c323b527c86f"
    ),
}


def test_production_config_pins_revision_and_known_hashes():
    hub = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["data"]["hub"]
    repo = hub["repos"][hub["variant"]]
    assert data.is_commit(repo["revision"]), "the production data revision must be a pinned commit"
    lock = read_lock(REPO / hub["lock"])
    files = lock["datasets"][data.lock_key(repo["repo_id"], repo["revision"], hub["variant"])]["files"]
    assert {k: files[k] for k in KNOWN} == KNOWN
    official = OFFICIAL / "fineweb_1024_bpe.model"
    if official.is_file():  # the official tokenizer (../shared) has the pinned hash
        assert hashlib.sha256(official.read_bytes()).hexdigest() == KNOWN["datasets/tokenizers/fineweb_1024_bpe.model"]


def _dry_run(tmp_path: Path, overlay: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path), "-n", "-p"]
    cmd += ["--until", "data"]
    if overlay is not None:
        path = tmp_path / "overlay.yaml"
        path.write_text(yaml.safe_dump(overlay))
        cmd += ["--configfile", str(path)]
    return subprocess.run(cmd, capture_output=True, text=True)


def test_data_rule_command_follows_the_config(tmp_path):
    proc = _dry_run(tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    args = data_rule_arguments(proc.stdout + proc.stderr)
    assert args["repo_id"] == "willdepueoai/parameter-golf" and args["revision"] and args["variant"] == "sp1024"
    # the lock's path, relative to the repository in the config, as seen from the working folder
    assert os.path.normpath(tmp_path.resolve() / args["lock_path"]) == str(REPO / "config" / "data.lock.json")
    assert args["train_shards"] == 80

    proc = _dry_run(tmp_path, {"data": {"name": "fineweb10B_sp8192", "hub": {"variant": "sp8192"}}})
    args = data_rule_arguments(proc.stdout + proc.stderr)
    assert args["repo_id"] == "kevclark/parameter-golf" and args["variant"] == "sp8192"

    proc = _dry_run(tmp_path, {"data": {"hub": {"variant": "sp2048"}}})
    assert proc.returncode != 0
    assert "data.hub.repos has no entry for data.hub.variant 'sp2048'" in proc.stdout + proc.stderr
