"""The config's ``data`` section: narrowed to what its source uses (what the data rule passes as ``--data-json``, so
that only a change there re-runs the step), checked with errors naming the config key, and resolved into the
arguments of the hub download or the documents build. Paths in it are relative to the repository (``root``)."""

from __future__ import annotations

import os
import re
from typing import Any

from pgolf.data.common import check_name

DEFAULT_LOCK = "config/data.lock.json"
_COMMIT_RE = re.compile(r"[0-9a-f]{40}")


def _mapping(value: Any, key: str) -> dict:
    if not isinstance(value, dict):
        raise ValueError(f"config {key} must be a mapping, got {value!r}")
    return value


def _count(value: Any, key: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"config {key} must be an integer of at least {minimum}, got {value!r}")
    return value


def _optional_count(value: Any, key: str) -> int | None:
    """A positive count, or None for a missing / null / 0 value (the config's "no limit")."""
    return _count(value, key) if value else None


def _string(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"config {key} must be a non-empty string, got {value!r}")
    return value


def repo_relative(root: str | os.PathLike, path: str) -> str:
    """``path`` from the config (relative to the repository unless absolute) as seen from the working folder, where
    ``root`` is the repository as seen from there: what ``repo_path`` of workflow/rules/common.smk gives."""
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(root, path))


def used_section(data: Any) -> dict:
    """The part of the data section its source uses: ``source``, ``name`` and that source's subsection, for the hub
    with only the variant's entry of ``repos``. ValueError naming the config key when it cannot work (an unknown
    variant, no train shards, a ``verified`` revision that is no commit, a value of the wrong type)."""
    used = _narrow(data)
    if used["source"] == "hub":
        hub_arguments(used)
    elif used["source"] == "local":
        local_arguments(used)
    else:
        documents_arguments(used)
    return used


def _narrow(data: Any) -> dict:
    _mapping(data, "data")
    source = data.get("source")
    if source not in ("hub", "documents", "local"):
        raise ValueError(f"config data.source must be hub, documents or local, got {source!r}")
    name = check_name(_string(data.get("name"), "data.name"), "config data.name")
    if source == "local":  # a folder of the hub data set the hub section names: both sections are used
        local = dict(_mapping(data.get("local"), "data.local"))
        narrowed = _narrow({**data, "source": "hub"})
        return {"source": "local", "name": name, "local": local, "hub": narrowed["hub"]}
    sub = dict(_mapping(data.get(source), f"data.{source}"))
    if source == "hub":
        variant = _string(sub.get("variant"), "data.hub.variant")
        repos = sub.get("repos") or {}
        if variant not in repos:
            raise ValueError(
                f"config data.hub.repos has no entry for data.hub.variant {variant!r}"
                f" (it has: {', '.join(sorted(repos)) or 'none'});"
                f" add {variant}: {{repo_id: ..., revision: ...}}"
            )
        sub["repos"] = {variant: repos[variant]}
    return {"source": source, "name": name, source: sub}


def hub_arguments(data: Any, root: str | os.PathLike = ".") -> dict:
    """Keyword arguments of ``download_from_hub`` for a hub data section; the lock's path is joined to ``root``."""
    d = _narrow(data)
    if d["source"] not in ("hub", "local"):
        raise ValueError(f"config data.source is {d['source']!r}, not 'hub'")
    h = d["hub"]
    variant = h["variant"]
    repo = _mapping(h["repos"][variant], f"data.hub.repos.{variant}")
    shards = h.get("train_shards") or repo.get("train_shards")
    if not shards:
        raise ValueError(f"config data.hub.train_shards is null and data.hub.repos.{variant} has no train_shards")
    key = "data.hub.train_shards" if h.get("train_shards") else f"data.hub.repos.{variant}.train_shards"
    revision = str(repo.get("revision", ""))
    if repo.get("verified") and not _COMMIT_RE.fullmatch(revision):
        raise ValueError(
            f"config data.hub.repos.{variant}: verified is true but revision {repo.get('revision')!r} is not a"
            " 40-hex commit (a branch can move: pin the commit the data log printed)"
        )
    timeout = h.get("timeout_s", 30)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise ValueError(f"config data.hub.timeout_s must be a positive number of seconds, got {timeout!r}")
    lock = h.get("lock", DEFAULT_LOCK)
    return {
        "name": d["name"],
        "variant": variant,
        "train_shards": _count(shards, key),
        "repo_id": _string(repo.get("repo_id"), f"data.hub.repos.{variant}.repo_id"),
        "revision": _string(revision, f"data.hub.repos.{variant}.revision"),
        "remote_root": str(repo.get("remote_root", h.get("remote_root", "datasets"))),
        "max_workers": _count(h.get("max_workers", 8), "data.hub.max_workers"),
        "timeout": float(timeout),
        "retries": _count(h.get("retries", 5), "data.hub.retries", minimum=0),
        "endpoint": h.get("endpoint") or None,
        "lock_path": repo_relative(root, _string(lock, "data.hub.lock")) if lock else None,
        "update_lock": bool(h.get("update_lock")),
    }


def documents_arguments(data: Any, root: str | os.PathLike = ".") -> dict:
    """Keyword arguments of ``build_from_documents`` for a documents data section; its path is joined to ``root``."""
    d = _narrow(data)
    if d["source"] != "documents":
        raise ValueError(f"config data.source is {d['source']!r}, not 'documents'")
    doc = d["documents"]
    prepare = {}
    if doc.get("prepare_script") is not None:  # a record's own prepare script and tokenizer (pgolf.data.prepare)
        for key in ("prepare_script", "tokenizer"):
            prepare[key] = repo_relative(root, _string(doc.get(key), f"data.documents.{key}"))
        if doc.get("tokenizer_max_docs"):
            raise ValueError(
                "config data.documents.tokenizer_max_docs goes without prepare_script: the record's tokenizer"
                " (data.documents.tokenizer) is used, none is trained"
            )
    elif doc.get("tokenizer") is not None:
        raise ValueError("config data.documents.tokenizer is set without data.documents.prepare_script")
    return prepare | {
        "docs": repo_relative(root, _string(doc.get("path"), "data.documents.path")),
        "name": d["name"],
        "vocab_size": _count(doc.get("vocab_size"), "data.documents.vocab_size"),
        "val_docs": _count(doc.get("val_docs"), "data.documents.val_docs"),
        "shard_tokens": _optional_count(doc.get("shard_tokens"), "data.documents.shard_tokens") or 100_000_000,
        "max_docs": _optional_count(doc.get("max_docs"), "data.documents.max_docs"),
        "tokenizer_max_docs": _optional_count(doc.get("tokenizer_max_docs"), "data.documents.tokenizer_max_docs"),
    }


def local_arguments(data: Any, root: str | os.PathLike = ".") -> dict:
    """Keyword arguments of ``link_local`` for a local data section: the folder ``data.local.path`` (relative to the
    repository unless absolute) and the identity, lock and shard count of the hub section's variant."""
    d = _narrow(data)
    if d["source"] != "local":
        raise ValueError(f"config data.source is {d['source']!r}, not 'local'")
    path = _string(d["local"].get("path"), "data.local.path")
    hub = hub_arguments({**d, "source": "hub"}, root)
    keep = ("name", "repo_id", "revision", "variant", "train_shards", "remote_root", "lock_path", "update_lock")
    return {"path": repo_relative(root, path), **{k: hub[k] for k in keep}}
