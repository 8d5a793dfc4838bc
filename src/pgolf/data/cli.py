"""The ``pgolf data`` command line: the config's data section as JSON (what the data rule runs), or the hub download
and the documents build with one flag per setting (``pgolf data hub ...``, ``pgolf data documents ...``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pgolf.data.build import build_from_documents
from pgolf.data.common import log
from pgolf.data.hub import download_from_hub
from pgolf.data.hubfiles import DEFAULT_REPO_ID, check_revision
from pgolf.data.manifest import MANIFEST_NAME
from pgolf.data.local import link_local
from pgolf.data.section import documents_arguments, hub_arguments, local_arguments


def _report_hub(out: str, result: dict) -> None:
    m = result["manifest"]
    log(
        f"{Path(out) / MANIFEST_NAME}: {m['name']}: {len(m['train']['files'])} train shards"
        f" ({m['train']['tokens']} tokens) + {len(m['val']['files'])} val ({m['val']['tokens']} tokens);"
        f" downloaded {len(result['downloaded'])} files ({result['bytes_downloaded']:,} bytes),"
        f" {len(result['from_cache'])} from the Hugging Face cache, {len(result['present'])} already present;"
        f" {result['elapsed_s']:.1f} s"
    )


def _section_command(parser: argparse.ArgumentParser):
    """``pgolf data --data-json ... --out ...``: the section's source (hub or documents) into ``--out``."""

    def run(args: argparse.Namespace) -> int:
        if args.data_json is None or args.out is None:
            parser.error("--data-json and --out are required (or a subcommand: documents, hub)")
        try:
            section = json.loads(args.data_json)
        except json.JSONDecodeError as e:
            raise ValueError(f"--data-json is not valid JSON ({e})") from None
        if isinstance(section, dict) and section.get("source") == "hub":
            result = download_from_hub(args.out, threads=args.threads, **hub_arguments(section, args.root))
            _report_hub(args.out, result)
        elif isinstance(section, dict) and section.get("source") == "local":
            link_local(args.out, threads=args.threads, **local_arguments(section, args.root))
        else:
            build_from_documents(out=args.out, threads=args.threads, **documents_arguments(section, args.root))
        return 0

    return run


def _no_section(args: argparse.Namespace) -> None:
    if args.data_json is not None:
        raise ValueError(f"--data-json goes without a subcommand ({args.data_command}): its data.source picks one")


def _cmd_documents(args: argparse.Namespace) -> int:
    _no_section(args)
    build_from_documents(
        args.docs,
        args.out,
        args.name,
        args.val_docs,
        vocab_size=args.vocab_size,
        shard_tokens=args.shard_tokens,
        max_docs=args.max_docs,
        tokenizer_max_docs=args.tokenizer_max_docs,
        threads=args.threads,
    )
    return 0


def _cmd_hub(args: argparse.Namespace) -> int:
    _no_section(args)
    result = download_from_hub(
        args.out,
        repo_id=args.repo_id,
        revision=args.revision,
        variant=args.variant,
        train_shards=args.train_shards,
        remote_root=args.remote_root,
        endpoint=args.endpoint,
        max_workers=args.max_workers,
        name=args.name,
        cache_dir=args.cache_dir,
        lock_path=args.lock,
        update_lock=args.update_lock,
        offline=True if args.offline else None,
        timeout=args.timeout,
        retries=args.retries,
        threads=args.threads,
    )
    _report_hub(args.out, result)
    return 0


def _positive_int(value: str) -> int:
    n = int(value)
    if n <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return n


def _count(value: str) -> int:
    n = int(value)
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {value}")
    return n


def _seconds(value: str) -> float:
    x = float(value)
    if not x > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {value}")
    return x


def _revision(value: str) -> str:
    try:
        return check_revision(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _add_documents(sub) -> None:
    docs = sub.add_parser("documents", help="train a tokenizer on a documents file and write shards + manifest")
    docs.add_argument("--docs", required=True, help="JSON lines with a 'text' field (.xz / .gz / plain)")
    docs.add_argument("--out", required=True, help="output data folder")
    docs.add_argument("--name", required=True, help="data set name, also the shard file prefix")
    docs.add_argument("--vocab-size", type=_positive_int, default=1024)
    docs.add_argument("--val-docs", type=_positive_int, required=True, help="the first N documents form val")
    docs.add_argument("--shard-tokens", type=_positive_int, default=100_000_000)
    docs.add_argument("--max-docs", type=_positive_int, default=None, help="read only the first N documents")
    docs.add_argument("--tokenizer-max-docs", type=_positive_int, default=None, help="train on the first N documents")
    docs.add_argument("--threads", type=_positive_int, default=None, help="CPUs to use (default: all available)")
    docs.set_defaults(func=_cmd_documents)


def _add_hub(sub) -> None:
    hub = sub.add_parser("hub", help="download the challenge's shards + tokenizer from the Hugging Face hub")
    hub.add_argument("--out", required=True, help="output data folder (files are placed flat)")
    hub.add_argument("--repo-id", default=DEFAULT_REPO_ID, help="dataset repo holding the variant")
    hub.add_argument("--revision", type=_revision, default="main", help="a 40-hex commit (pinned) or a branch/tag")
    hub.add_argument("--variant", default="sp1024", help="sp<vocab>: the fineweb10B_<variant> shards")
    hub.add_argument("--train-shards", type=_positive_int, default=80)
    hub.add_argument("--remote-root", default="datasets", help="folder of the data inside the repo")
    hub.add_argument("--endpoint", default=None, help="hub URL (default: huggingface_hub's, i.e. HF_ENDPOINT)")
    hub.add_argument("--max-workers", type=_positive_int, default=8, help="parallel downloads")
    hub.add_argument("--name", default=None, help="data set name (default fineweb10B_<variant>)")
    hub.add_argument("--lock", default=None, help="lock file: sha256 of every file, checked, recorded when new")
    hub.add_argument(
        "--update-lock", action="store_true", help="accept files whose sha256 differs from the lock and record it"
    )
    hub.add_argument("--offline", action="store_true", help="no network: the folder and the HF cache only")
    hub.add_argument("--cache-dir", default=None, help="Hugging Face cache (default: HF_HUB_CACHE)")
    hub.add_argument("--timeout", type=_seconds, default=30.0, help="seconds to wait for the hub per request")
    hub.add_argument("--retries", type=_count, default=5, help="retries of a failed request or dropped download")
    hub.add_argument("--threads", type=_positive_int, default=None, help="CPUs for verification (default: all)")
    hub.set_defaults(func=_cmd_hub)


def register(subparsers) -> None:
    """Add the ``data`` subcommand: ``pgolf data --data-json ... --out ...`` (the data rule), ``pgolf data documents
    ...`` and ``pgolf data hub ...``."""
    parser = subparsers.add_parser(
        "data",
        help="build or download a tokenized data set (shards + manifest)",
        description="Build (source: documents), download (source: hub) or check and link (source: local) the data set"
        " that a data section of the config describes, or use a subcommand to give each setting as a flag.",
    )
    parser.add_argument(
        "--data-json",
        default=None,
        help="the config's data section as JSON (data.source picks hub, local or documents)",
    )
    parser.add_argument("--out", default=None, help="output data folder")
    parser.add_argument(
        "--root", default=".", help="the folder that the section's relative paths start from (the repository)"
    )
    parser.add_argument("--threads", type=_positive_int, default=None, help="CPUs to use (default: all available)")
    parser.set_defaults(func=_section_command(parser))
    sub = parser.add_subparsers(dest="data_command", metavar="{documents,hub}")
    _add_documents(sub)
    _add_hub(sub)
