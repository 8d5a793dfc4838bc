"""Challenge data: shard files, documents, the SentencePiece tokenizer, documents -> shards, the manifest, the hub
download and the ``pgolf data`` command line, one module each.

- ``shards``: the shard format (defined once; train_gpt.py's copy is tested against it), writing and reading shards
- ``documents``: documents files (JSON lines with a ``text`` field), read whole or in chunks
- ``tokenizer``: training the challenge-style SentencePiece tokenizer; the protobuf editor that makes it reproducible
- ``encode``: documents -> shards by a pool of spawned worker processes
- ``build``: the documents source: tokenizer, shards, then the manifest
- ``manifest``: the data folder's manifest (written last), loaded and verified before use
- ``lock``: the data lock file (sha256 of every hub file)
- ``hubfiles``: the files of a hub data set and their checks; ``hubclient``: requests to the hub; ``hub``: the download
- ``section``: the config's data section (what the data rule passes as JSON) resolved into the steps' arguments
- ``cli``: ``pgolf data``

A data folder is complete when its ``manifest.json`` exists: it is always written last. Hub downloads are checked
against a lock file (sha256 of every file, keyed by repo@revision/variant): see ``download_from_hub``.

The names below are the package's interface: other modules import them from ``pgolf.data``.
"""

from pgolf.data.build import build_from_documents
from pgolf.data.cli import register
from pgolf.data.common import FILE_MODE, cpu_count
from pgolf.data.documents import iter_documents
from pgolf.data.encode import CHUNK_BYTES, CHUNK_DOCS, CHUNKS_IN_FLIGHT_PER_WORKER, bounded_map, docs_to_shards
from pgolf.data.hub import PARTIAL_DIR, download_from_hub
from pgolf.data.hubclient import PROGRESS_INTERVAL_S, HubError
from pgolf.data.hubfiles import (
    DEFAULT_REPO_ID,
    HubFile,
    check_revision,
    hub_files,
    hub_offline,
    is_commit,
    variant_vocab_size,
)
from pgolf.data.lock import LOCK_FORMAT, LOCK_VERSION, lock_key, read_lock
from pgolf.data.manifest import (
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    MANIFEST_VERSION,
    SIDECAR_SPLIT,
    VERIFY_BLOCK_BYTES,
    DataMismatch,
    load_manifest,
    verify_manifest,
    write_manifest,
)
from pgolf.data.section import documents_arguments, hub_arguments, used_section
from pgolf.data.shards import (
    BOS_ID,
    HEADER_BYTES,
    HEADER_WORDS,
    MAX_SHARD_TOKENS,
    SHARD_FORMAT,
    SHARD_MAGIC,
    SHARD_VERSION,
    read_shard,
    shard_token_count,
    write_shard,
)
from pgolf.data.tokenizer import (
    DEFAULT_TOKENIZER_MAX_DOCS,
    TOKENIZER_MAX_SENTENCE_BYTES,
    tokenizer_settings,
    train_tokenizer,
)

__all__ = [
    "BOS_ID",
    "CHUNKS_IN_FLIGHT_PER_WORKER",
    "CHUNK_BYTES",
    "CHUNK_DOCS",
    "DEFAULT_REPO_ID",
    "DEFAULT_TOKENIZER_MAX_DOCS",
    "FILE_MODE",
    "HEADER_BYTES",
    "HEADER_WORDS",
    "LOCK_FORMAT",
    "LOCK_VERSION",
    "MANIFEST_FORMAT",
    "MANIFEST_NAME",
    "MANIFEST_VERSION",
    "MAX_SHARD_TOKENS",
    "PARTIAL_DIR",
    "PROGRESS_INTERVAL_S",
    "SHARD_FORMAT",
    "SHARD_MAGIC",
    "SHARD_VERSION",
    "SIDECAR_SPLIT",
    "TOKENIZER_MAX_SENTENCE_BYTES",
    "VERIFY_BLOCK_BYTES",
    "DataMismatch",
    "HubError",
    "HubFile",
    "bounded_map",
    "build_from_documents",
    "check_revision",
    "cpu_count",
    "docs_to_shards",
    "documents_arguments",
    "download_from_hub",
    "hub_arguments",
    "hub_files",
    "hub_offline",
    "is_commit",
    "iter_documents",
    "load_manifest",
    "lock_key",
    "read_lock",
    "read_shard",
    "register",
    "shard_token_count",
    "tokenizer_settings",
    "train_tokenizer",
    "used_section",
    "variant_vocab_size",
    "verify_manifest",
    "write_manifest",
    "write_shard",
]
