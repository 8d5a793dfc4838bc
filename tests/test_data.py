"""Tests for pgolf.data: shards, tokenizer, documents -> shards, manifest, and the hub download (fake local hub)."""

from __future__ import annotations

import argparse
import glob
import gzip
import hashlib
import json
import lzma
import re
import threading
import unicodedata
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest
import sentencepiece as spm

from pgolf import data
from pgolf.data import (
    HEADER_BYTES,
    SHARD_MAGIC,
    docs_to_shards,
    download_from_hub,
    load_manifest,
    read_shard,
    shard_token_count,
    train_tokenizer,
    write_manifest,
    write_shard,
)

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

    spec = {f: raw for f, raw, _ in data._pb_fields(_trainer_spec(tokenizer.read_bytes()))}
    assert 1 not in spec and 2 not in spec and 16 not in spec  # no input/temp path/thread count recorded
    assert b"nmt_nfkc" in tokenizer.read_bytes()


def _trainer_spec(model: bytes) -> bytes:
    return next(payload for f, _, payload in data._pb_fields(model) if f == 2)


def test_tokenizer_spec_matches_official_sp1024(tokenizer):
    """Every trainer setting the official sp1024 model records is the same in ours (needs ../shared)."""
    official = OFFICIAL / "fineweb_1024_bpe.model"
    if not official.is_file():
        pytest.skip(f"{official} not present (../shared is absent)")
    theirs = {f: raw for f, raw, _ in data._pb_fields(_trainer_spec(official.read_bytes())) if f != 2}
    ours = {f: raw for f, raw, _ in data._pb_fields(_trainer_spec(tokenizer.read_bytes()))}
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
    stats = docs_to_shards(docs_file, tokenizer, out, "demo", val_docs=20, shard_tokens=20_000)
    sp = spm.SentencePieceProcessor(model_file=str(tokenizer))
    assert stats["docs"] == N_DOCS and stats["val_docs"] == 20 and stats["train_docs"] == N_DOCS - 20
    assert stats["val_files"] == ["demo_val_000000.bin"]
    assert len(stats["train_files"]) > 1
    assert stats["train_files"] == [f"demo_train_{i:06d}.bin" for i in range(len(stats["train_files"]))]

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


def test_docs_to_shards_reproducible_and_removes_stale(tmp_path, docs_file, tokenizer):
    a, b = tmp_path / "a", tmp_path / "b"
    b.mkdir()
    write_shard(b / "demo_train_000099.bin", np.array([1, 2, 3]))  # stale leftover of an older, larger run
    (b / "manifest.json").write_text("{}")
    sa = docs_to_shards(docs_file, tokenizer, a, "demo", val_docs=10, shard_tokens=30_000)
    sb = docs_to_shards(docs_file, tokenizer, b, "demo", val_docs=10, shard_tokens=30_000, threads=1)
    assert sa["train_files"] == sb["train_files"]
    assert sorted(p.name for p in b.iterdir()) == sorted(sa["val_files"] + sa["train_files"])
    for name in sa["val_files"] + sa["train_files"]:
        assert (a / name).read_bytes() == (b / name).read_bytes()


def test_docs_to_shards_max_docs_and_errors(tmp_path, docs_file, tokenizer):
    stats = docs_to_shards(docs_file, tokenizer, tmp_path / "m", "demo", val_docs=5, max_docs=12)
    assert (stats["val_docs"], stats["train_docs"]) == (5, 7)
    with pytest.raises(ValueError, match="val_docs"):
        docs_to_shards(docs_file, tokenizer, tmp_path / "e", "demo", val_docs=N_DOCS)
    with pytest.raises(ValueError, match="prefix"):
        docs_to_shards(docs_file, tokenizer, tmp_path / "e", "bad/name", val_docs=5)
    with pytest.raises(FileNotFoundError, match="absent.model"):
        docs_to_shards(docs_file, tmp_path / "absent.model", tmp_path / "e", "demo", val_docs=5)


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


# --------------------------------------------------------------------------------------------------------------------
# Hub download against a fake hub on 127.0.0.1


class _FakeHub:
    """Serves ``root/<path>`` as ``/datasets/<repo_id>/resolve/<revision>/<path>`` (HEAD and GET), like the hub."""

    COMMIT = "0123456789abcdef0123456789abcdef01234567"

    def __init__(self, root: Path, repo_id: str):
        self.root, self.repo_id = root, repo_id
        self.requests: list[tuple[str, str]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_HEAD(self):  # noqa: N802
                self._serve(body=False)

            def do_GET(self):  # noqa: N802
                self._serve(body=True)

            def _serve(self, body: bool) -> None:
                path = unquote(urlsplit(self.path).path)
                hub.requests.append((self.command, path))
                m = re.fullmatch(r"/datasets/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
                if not m or m.group(1) != hub.repo_id:
                    return self._error(404, "RepoNotFound", "Repository not found")
                file = hub.root / m.group(3)
                if not file.is_file():
                    return self._error(404, "EntryNotFound", "Entry not found")
                payload = file.read_bytes()
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("ETag", f'"{hashlib.sha256(payload).hexdigest()}"')
                self.send_header("X-Repo-Commit", hub.COMMIT)
                self.end_headers()
                if body:
                    self.wfile.write(payload)

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
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def gets(self) -> list[str]:
        return [p for method, p in self.requests if method == "GET"]


REPO_ID = "someone/fake-golf"


@pytest.fixture
def fake_hub(tmp_path, monkeypatch, tokenizer):
    """A hub with remote_root 'datasets', variant sp1024: our tokenizer under the official name, 3 train shards."""
    import huggingface_hub.constants as hf_constants

    hf_home = tmp_path / "hf_home"
    for key, value in {
        "HF_HOME": str(hf_home),
        "HF_HUB_OFFLINE": "0",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "NO_PROXY": "127.0.0.1,localhost",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)  # these two are read at import time
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(hf_home / "hub"))

    root = tmp_path / "hub_repo"
    (root / "datasets" / "tokenizers").mkdir(parents=True)
    shards = root / "datasets" / "datasets" / "fineweb10B_sp1024"
    shards.mkdir(parents=True)
    (root / "datasets" / "tokenizers" / "fineweb_1024_bpe.model").write_bytes(tokenizer.read_bytes())
    (root / "datasets" / "tokenizers" / "fineweb_1024_bpe.vocab").write_bytes(
        tokenizer.with_suffix(".vocab").read_bytes()
    )
    rng = np.random.default_rng(0)
    for name, n in [("fineweb_val_000000.bin", 500)] + [(f"fineweb_train_{i:06d}.bin", 1000 + i) for i in range(3)]:
        toks = rng.integers(0, 1024, size=n, dtype=np.uint16)
        toks[0] = 1
        write_shard(shards / name, toks)

    hub = _FakeHub(root, REPO_ID)
    hub.thread.start()
    hub.cache_dir = hf_home / "hub"
    yield hub
    hub.server.shutdown()
    hub.server.server_close()


def test_download_from_fake_hub(tmp_path, fake_hub):
    out = tmp_path / "fineweb"
    result = download_from_hub(
        out, repo_id=REPO_ID, train_shards=3, endpoint=fake_hub.endpoint, cache_dir=fake_hub.cache_dir, max_workers=3
    )
    expected = ["fineweb_1024_bpe.model", "fineweb_1024_bpe.vocab", "fineweb_val_000000.bin"]
    expected += [f"fineweb_train_{i:06d}.bin" for i in range(3)]
    assert result["downloaded"] == sorted(expected) and result["present"] == []
    assert sorted(p.name for p in out.iterdir()) == sorted(expected + ["manifest.json"])  # flat, no staging left
    remote = fake_hub.root / "datasets" / "datasets" / "fineweb10B_sp1024"
    for name in expected[2:]:
        assert (out / name).read_bytes() == (remote / name).read_bytes()
    assert "/datasets/someone/fake-golf/resolve/main/datasets/tokenizers/fineweb_1024_bpe.model" in fake_hub.gets()

    m = load_manifest(out)
    assert m["name"] == "fineweb10B_sp1024" and m["prefix"] == "fineweb" and m["vocab_size"] == 1024
    assert m["source"]["repo_id"] == REPO_ID and m["source"]["endpoint"] == fake_hub.endpoint
    assert m["train_tokens"] == 1000 + 1001 + 1002 and m["val_tokens"] == 500
    assert m["train_glob"] == str(out.resolve() / "fineweb_train_*.bin")

    # Second run: everything present and valid -> no GET; a damaged shard is fetched again.
    fake_hub.requests.clear()
    again = download_from_hub(out, repo_id=REPO_ID, train_shards=3, endpoint=fake_hub.endpoint)
    assert again["downloaded"] == [] and fake_hub.gets() == []
    (out / "fineweb_train_000001.bin").write_bytes(b"garbage")
    again = download_from_hub(out, repo_id=REPO_ID, train_shards=3, endpoint=fake_hub.endpoint)
    assert again["downloaded"] == ["fineweb_train_000001.bin"]
    assert (out / "fineweb_train_000001.bin").read_bytes() == (remote / "fineweb_train_000001.bin").read_bytes()


def test_download_missing_remote_file(tmp_path, fake_hub):
    out = tmp_path / "fineweb"
    with pytest.raises(RuntimeError, match=r"fineweb_train_00000[34]\.bin.*someone/fake-golf"):
        download_from_hub(
            out, repo_id=REPO_ID, train_shards=5, endpoint=fake_hub.endpoint, cache_dir=fake_hub.cache_dir
        )
    assert not (out / "manifest.json").exists()
    assert not (out / ".hub-staging").exists()
    for path in out.iterdir():  # whatever did arrive is complete and valid
        assert path.name.startswith("fineweb_")
        if path.suffix == ".bin":
            shard_token_count(path)

    with pytest.raises(RuntimeError, match=r"fineweb_2048_bpe\.model.*someone/fake-golf"):
        download_from_hub(tmp_path / "other", repo_id=REPO_ID, variant="sp2048", endpoint=fake_hub.endpoint)
    with pytest.raises(ValueError, match="variant"):
        download_from_hub(tmp_path / "other", variant="byte260")


def test_cli_hub(tmp_path, fake_hub, capsys):
    parser = argparse.ArgumentParser(prog="pgolf")
    data.register(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "cli_hub"
    args = parser.parse_args(
        ["data", "hub", "--out", str(out), "--repo-id", REPO_ID, "--train-shards", "2", "--endpoint", fake_hub.endpoint]
        + ["--name", "tiny"]
    )
    assert args.func(args) == 0
    assert "2 train shards" in capsys.readouterr().out
    assert load_manifest(out)["name"] == "tiny"
