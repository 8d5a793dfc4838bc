"""The documents source with a record's own prepare script: shards made by the script a record ships (e.g. the
CaseOps records' ``prepare_caseops_data.py``, with the tokenizer in their folder), run as shipped, not copied.

Such a script reads JSON lines (``--docs``), writes ``fineweb_{train,val}_NNNNNN.bin`` and, for CaseOps, the
validation byte sidecar ``fineweb_val_bytes_NNNNNN.bin`` somewhere under ``--out``, tokenizing with ``--sp``; the
first ``--val-docs`` documents are validation. This step:

- writes the documents (the first ``max_docs`` of the config's file, .xz/.gz/plain) as a plain JSON lines file and
  checks the audit's first point on the text: no document (its exact text) both in validation and in training;
- runs the script with this interpreter, its output into the data log;
- moves its shards into the data folder under the data set's name, with a copy of the tokenizer, and checks the
  products: one BOS per document in each split (a prep that writes validation documents into training too, as the
  leaky prep of upstream #2127/#2146 did, shows more training documents than it was given), the script's own
  ``done. docs=... train_shards=... val_shards=...`` line against the files;
- records the provenance in the manifest (sha256 of the script, its helper modules, the tokenizer and the documents;
  the counts) and what the record's log will print (``train_shards: N``), which ``pgolf run-upstream`` checks.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pgolf.data.common import check_name
from pgolf.data.common import log as _log
from pgolf.data.documents import iter_documents
from pgolf.data.manifest import MANIFEST_NAME, write_manifest
from pgolf.data.shards import read_shard
from pgolf.data.tokenizer import load_tokenizer
from pgolf.fsio import sha256_file

BOS_ID = 1
_UPSTREAM_RE = re.compile(r"^fineweb_(train|val|val_bytes)_(\d{6})\.bin$")
_DONE_RE = re.compile(r"done\.\s+docs=(\d+)\s+train_shards=(\d+)\s+val_shards=(\d+)")
# APIs a record's prepare script may call that a newer sentencepiece no longer has: (text in the output, advice)
_KNOWN_FAILURES = (
    (
        "encode_as_immutable_proto",
        "sentencepiece {version} has no SentencePieceProcessor.encode_as_immutable_proto (0.2.3 removed it); the"
        " CaseOps prepare scripts call it: run the data step with sentencepiece 0.2.1, the project's pin (pip install"
        " sentencepiece==0.2.1)",
    ),
    (
        "immutable_proto is deprecated",
        "sentencepiece {version} refuses SentencePieceProcessor.encode_as_immutable_proto (0.2.2 deprecated it, 0.2.3"
        " removed it); the CaseOps prepare scripts call it: run the data step with sentencepiece 0.2.1, the project's"
        " pin (pip install sentencepiece==0.2.1)",
    ),
)


def _sentencepiece_version() -> str:
    try:
        import sentencepiece

        return str(getattr(sentencepiece, "__version__", "unknown"))
    except ImportError:
        return "not installed"


def _helpers(script: Path) -> dict[str, str]:
    """sha256 of the Python modules beside the script (what it imports from its folder, e.g. lossless_caps.py)."""
    return {p.name: sha256_file(p) for p in sorted(script.parent.glob("*.py")) if p.resolve() != script.resolve()}


def write_documents(
    docs: str | os.PathLike, dest: Path, val_docs: int, max_docs: int | None
) -> dict[str, int | str | None]:
    """The documents as plain JSON lines ``{"text": ...}`` in ``dest`` (what the prepare script reads), the first
    ``val_docs`` being validation; ValueError when a document's text is in both splits or there is no train
    document. Returns the counts and the first overlap (None)."""
    val_hashes: dict[bytes, int] = {}
    train_hashes: set[bytes] = set()
    overlap: list[tuple[int, int]] = []
    n = 0
    text_bytes = 0
    with open(dest, "w", encoding="utf-8") as f:
        for n, text in enumerate(iter_documents(docs, max_docs), start=1):
            digest = hashlib.sha256(text.encode("utf-8")).digest()
            if n <= val_docs:
                val_hashes.setdefault(digest, n)
            else:
                train_hashes.add(digest)
                if digest in val_hashes:
                    overlap.append((val_hashes[digest], n))
            text_bytes += len(text.encode("utf-8"))
            f.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
    if n <= val_docs:
        raise ValueError(
            f"{docs}: {n} documents, but data.documents.val_docs is {val_docs}: no document is left for training"
        )
    if overlap:
        first = ", ".join(f"validation document {v} = training document {t}" for v, t in overlap[:3])
        raise ValueError(
            f"{docs}: {len(overlap)} training documents have the text of a validation document ({first}; numbered"
            " from 1 in file order): the audit requires that no document be in both; deduplicate the file"
        )
    return {"docs": n, "val_docs": val_docs, "train_docs": n - val_docs, "text_bytes": text_bytes}


def _run_script(cmd: list[str], cwd: Path, script: Path, log: Callable[[str], None]) -> list[str]:
    log("+ " + " ".join(cmd))
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        log(f"  {script.name}: {line.rstrip()}")
    code = proc.wait()
    if code != 0:
        text = "\n".join(lines)
        hints = [advice.format(version=_sentencepiece_version()) for key, advice in _KNOWN_FAILURES if key in text]
        tail = "\n".join(f"  {x}" for x in lines[-6:])
        raise RuntimeError(
            f"{script} failed with exit code {code} (config data.documents.prepare_script); its last lines:\n{tail}"
            + (f"\n{hints[0]}" if hints else "")
        )
    return lines


def _collect(tmp_out: Path, script: Path) -> dict[str, list[Path]]:
    """The script's shards under tmp_out, by split, in order; one folder only."""
    found = [p for p in tmp_out.rglob("fineweb_*.bin") if _UPSTREAM_RE.match(p.name)]
    folders = sorted({p.parent for p in found})
    if len(folders) != 1:
        raise RuntimeError(
            f"{script} wrote {'no' if not folders else len(folders)} folders of fineweb_*_NNNNNN.bin shards"
            f"{': ' + ', '.join(map(str, folders)) if folders else ''} (expected one)"
        )
    splits: dict[str, list[Path]] = {"train": [], "val": [], "val_bytes": []}
    for p in sorted(found):
        m = _UPSTREAM_RE.match(p.name)
        assert m
        splits[m.group(1)].append(p)
    for split, files in splits.items():
        numbers = [int(_UPSTREAM_RE.match(p.name).group(2)) for p in files]  # type: ignore[union-attr]
        if numbers != list(range(len(files))):
            raise RuntimeError(f"{script}: its {split} shards are not numbered 0..{len(files) - 1}: {numbers}")
    if not splits["train"] or not splits["val"]:
        raise RuntimeError(f"{script} wrote {len(splits['train'])} train and {len(splits['val'])} val shards")
    return splits


def _bos_count(files: list[Path]) -> int:
    return int(sum(int(np.count_nonzero(read_shard(p, mmap=True) == BOS_ID)) for p in files))


def build_with_prepare_script(
    docs: str | os.PathLike,
    out: str | os.PathLike,
    name: str,
    val_docs: int,
    prepare_script: str | os.PathLike,
    tokenizer: str | os.PathLike,
    vocab_size: int,
    max_docs: int | None = None,
    log: Callable[[str], None] = _log,
) -> dict:
    """Build data folder ``out`` with a record's prepare script (see the module's doc); returns the manifest."""
    out, script, tok = Path(out), Path(prepare_script), Path(tokenizer)
    check_name(name, "config data.name")
    if not script.is_file():
        raise FileNotFoundError(f"{script}: prepare script not found (config data.documents.prepare_script)")
    if not tok.is_file():
        raise FileNotFoundError(f"{tok}: tokenizer not found (config data.documents.tokenizer)")
    sp_vocab = int(load_tokenizer(tok).vocab_size())
    if sp_vocab != vocab_size:
        raise ValueError(f"config data.documents.vocab_size is {vocab_size}, but {tok} has {sp_vocab} pieces")
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST_NAME).unlink(missing_ok=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=".prepare-", dir=out) as tmp_name:
        tmp = Path(tmp_name).resolve()  # the script runs in it: every path it gets is absolute
        docs_jsonl = tmp / "docs.jsonl"
        counts = write_documents(docs, docs_jsonl, val_docs, max_docs)
        log(f"{docs}: {counts['docs']} documents ({counts['val_docs']} validation), no text in both splits")
        cmd = [sys.executable, str(script.resolve()), "--docs", str(docs_jsonl), "--out", str(tmp / "out")]
        cmd += ["--sp", str(tok.resolve()), "--val-docs", str(val_docs)]
        t1 = time.perf_counter()
        lines = _run_script(cmd, tmp, script, log)
        script_s = time.perf_counter() - t1
        splits = _collect(tmp / "out", script)
        if splits["val_bytes"] and len(splits["val_bytes"]) != len(splits["val"]):
            raise RuntimeError(
                f"{script} wrote {len(splits['val_bytes'])} byte sidecar shards for {len(splits['val'])} val shards"
            )
        bos = {split: _bos_count(splits[split]) for split in ("train", "val")}
        if bos != {"train": counts["train_docs"], "val": counts["val_docs"]}:
            raise RuntimeError(
                f"{script}: its shards hold {bos['val']} validation and {bos['train']} training documents (BOS"
                f" tokens), but it was given {counts['val_docs']} and {counts['train_docs']}: a prep whose training"
                " shards hold validation documents (upstream #2127/#2146) or that drops documents"
            )
        done = next((m for m in map(_DONE_RE.search, reversed(lines)) if m), None)
        if done:
            said = tuple(int(x) for x in done.groups())
            have = (counts["docs"], len(splits["train"]), len(splits["val"]))
            if said != have:
                raise RuntimeError(
                    f"{script} said docs={said[0]} train_shards={said[1]} val_shards={said[2]}, but the files are"
                    f" docs={have[0]} train_shards={have[1]} val_shards={have[2]}"
                )
        for old in out.glob(f"{name}_*.bin"):
            old.unlink()
        for split, files in splits.items():
            for i, path in enumerate(files):
                os.replace(path, out / f"{name}_{split}_{i:06d}.bin")
        tok_copy = out / tok.name
        if not tok_copy.exists() or sha256_file(tok_copy) != sha256_file(tok):
            shutil.copyfile(tok, tok_copy)
    source = {
        "kind": "documents",
        "docs": str(docs),
        "docs_sha256": sha256_file(docs),
        "max_docs": max_docs,
        "val_docs": val_docs,
        "docs_read": counts["docs"],
        "train_docs": counts["train_docs"],
        "text_bytes": counts["text_bytes"],
        "split_overlap_docs": 0,
        "prepare_script": str(script),
        "prepare_script_sha256": sha256_file(script),
        "prepare_helpers_sha256": _helpers(script),
        "tokenizer": str(tok),
        "tokenizer_sha256": sha256_file(tok),
        "vocab_size": vocab_size,
        "python": sys.version.split()[0],
        "sentencepiece": _sentencepiece_version(),
        "prepare_seconds": round(script_s, 1),
        "train_shards": len(splits["train"]),
        "val_shards": len(splits["val"]),
        "byte_sidecar": bool(splits["val_bytes"]),
        # what an upstream script's log prints about this data set (pgolf run-upstream checks it)
        "expected_log": {"train_shards": len(splits["train"])},
    }
    manifest = write_manifest(out, name, source, tok_copy, name)
    log(
        f"{out / MANIFEST_NAME}: {name}: {counts['docs']} docs -> {manifest['train']['tokens']} train tokens"
        f" ({len(splits['train'])} shards) + {manifest['val']['tokens']} val tokens ({len(splits['val'])} shards)"
        f"{', byte sidecar' if splits['val_bytes'] else ''}, by {script.name} in {script_s:.1f} s;"
        f" elapsed {time.perf_counter() - t0:.1f} s; the log will print train_shards: {len(splits['train'])}"
    )
    return manifest
