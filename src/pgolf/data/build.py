"""The documents source: a tokenizer trained on a documents file, the file encoded into shards, then the manifest."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from pgolf.data.common import check_name
from pgolf.data.common import log as _log
from pgolf.data.encode import docs_to_shards
from pgolf.data.manifest import MANIFEST_NAME, write_manifest
from pgolf.data.tokenizer import train_tokenizer
from pgolf.fsio import sha256_file


def build_from_documents(
    docs: str | os.PathLike,
    out: str | os.PathLike,
    name: str,
    val_docs: int,
    vocab_size: int = 1024,
    shard_tokens: int = 100_000_000,
    max_docs: int | None = None,
    tokenizer_max_docs: int | None = None,
    threads: int | None = None,
    log: Callable[[str], None] = _log,
    prepare_script: str | os.PathLike | None = None,
    tokenizer: str | os.PathLike | None = None,
) -> dict:
    """Build data folder ``out`` from a documents file: ``tokenizer_sp<vocab_size>.model`` trained on its first
    ``tokenizer_max_docs`` documents, shards ``{name}_{val,train}_NNNNNN.bin`` (the first ``val_docs`` documents are
    val), and the manifest (written last; the old one is removed first). Returns the manifest. With
    ``prepare_script`` (a record's own, e.g. prepare_caseops_data.py) and its ``tokenizer``, that script makes the
    shards instead (``pgolf.data.prepare``; shard_tokens is the script's own)."""
    if prepare_script is not None:
        if tokenizer is None:
            raise ValueError("config data.documents.tokenizer is required with data.documents.prepare_script")
        from pgolf.data.prepare import build_with_prepare_script

        return build_with_prepare_script(
            docs, out, name, val_docs, prepare_script, tokenizer, vocab_size, max_docs=max_docs, log=log
        )
    out = Path(out)
    check_name(name, "--name")
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST_NAME).unlink(missing_ok=True)
    t0 = time.perf_counter()
    model = train_tokenizer(docs, out / f"tokenizer_sp{vocab_size}", vocab_size, tokenizer_max_docs, threads)
    t_tok = time.perf_counter() - t0
    log(f"{model}: tokenizer trained in {t_tok:.1f} s")
    stats = docs_to_shards(docs, model, out, name, val_docs, shard_tokens, max_docs, threads=threads)
    source = {
        "kind": "documents",
        "docs": str(docs),
        "docs_sha256": sha256_file(docs),
        "vocab_size": vocab_size,
        "val_docs": val_docs,
        "max_docs": max_docs,
        "tokenizer_max_docs": tokenizer_max_docs,
        "shard_tokens": shard_tokens,
        "docs_read": stats["docs"],
        "text_bytes": stats["text_bytes"],
        "val_bytes_per_token": round(stats["val_bytes_per_token"], 6),
    }
    manifest = write_manifest(out, name, source, model, name)
    elapsed = time.perf_counter() - t0
    log(
        f"{out / MANIFEST_NAME}: {name}: {stats['docs']} docs -> {manifest['train']['tokens']} train tokens"
        f" ({len(stats['train_files'])} shards) + {manifest['val']['tokens']} val tokens"
        f" ({len(stats['val_files'])} shards), vocab {manifest['tokenizer']['vocab_size']},"
        f" {stats['val_bytes_per_token']:.3f} val bytes/token"
    )
    log(
        f"elapsed {elapsed:.1f} s (tokenizer {t_tok:.1f} s, shards {stats['elapsed_s']:.1f} s:"
        f" {stats['docs_per_s']:,.0f} docs/s, {stats['tokens_per_s']:,.0f} tokens/s,"
        f" {stats['text_mb_per_s']:.2f} MB/s of text on {stats['threads']} processes)"
    )
    return manifest
