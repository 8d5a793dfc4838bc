"""The SentencePiece tokenizer: trained challenge-style on a documents file, its model's bytes made independent of the
machine (a minimal protobuf editor drops the temp path and thread count), and loaded with errors naming the file."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import sentencepiece as spm

from pgolf.data.common import cpu_count
from pgolf import fsio
from pgolf.data.documents import iter_documents

# Tokenizer training reads at most this many documents unless told otherwise (bounds the trainer's memory).
DEFAULT_TOKENIZER_MAX_DOCS = 1_000_000
# Documents longer than this (UTF-8 bytes) are left out of tokenizer training (SentencePiece skips them).
TOKENIZER_MAX_SENTENCE_BYTES = 1 << 20

# ---------------------------------------------------------------------------------------------------------------------
# Protobuf editor (just enough of the wire format for a SentencePiece ModelProto)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    """Decode the protobuf varint at data[i:]; return (value, index after it)."""
    value = shift = 0
    while True:
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return value, i


def _pb_fields(data: bytes) -> Iterator[tuple[int, bytes, bytes]]:
    """Split a protobuf message into (field number, raw key+value bytes, payload of length-delimited fields)."""
    i = 0
    while i < len(data):
        start = i
        key, i = _read_varint(data, i)
        field, wire = key >> 3, key & 7
        payload = b""
        if wire == 0:
            _, i = _read_varint(data, i)
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        elif wire == 2:
            length, i = _read_varint(data, i)
            payload = data[i : i + length]
            i += length
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if i > len(data):
            raise ValueError("truncated protobuf message")
        yield field, data[start:i], payload


# TrainerSpec fields that record where/how the trainer ran, not what it learned: input, model_prefix, num_threads.
_MACHINE_SPECIFIC_TRAINER_FIELDS = {1, 2, 16}


def _strip_machine_specific(model: bytes) -> bytes:
    """Drop the temp path and thread count from a model's TrainerSpec so its bytes depend only on data + settings."""
    out = bytearray()
    for field, raw, payload in _pb_fields(model):
        if field != 2:  # ModelProto.trainer_spec
            out += raw
            continue
        spec = b"".join(r for f, r, _ in _pb_fields(payload) if f not in _MACHINE_SPECIFIC_TRAINER_FIELDS)
        out += _varint((2 << 3) | 2) + _varint(len(spec)) + spec
    return bytes(out)


# ---------------------------------------------------------------------------------------------------------------------
# Training and loading


def tokenizer_settings(vocab_size: int, input_sentence_size: int, threads: int) -> dict:
    """SentencePiece trainer options of the challenge's sp tokenizers (sp1024 at vocab 1024)."""
    return {
        "model_type": "bpe",
        "vocab_size": vocab_size,
        "character_coverage": 0.999,
        "byte_fallback": True,
        "split_digits": True,
        "normalization_rule_name": "nmt_nfkc",
        "add_dummy_prefix": False,
        "pad_id": 0,
        "bos_id": 1,
        "eos_id": 2,
        "unk_id": 3,
        "hard_vocab_limit": False,
        # Deterministic input: file order, no sampling (sentencepiece wants 0 = no limit, or a limit above 100).
        "input_sentence_size": input_sentence_size if input_sentence_size > 100 else 0,
        "shuffle_input_sentence": False,
        "max_sentence_length": TOKENIZER_MAX_SENTENCE_BYTES,
        "num_threads": threads,
    }


def train_tokenizer(
    docs_path: str | os.PathLike,
    model_prefix: str | os.PathLike,
    vocab_size: int = 1024,
    max_docs: int | None = None,
    threads: int | None = None,
) -> Path:
    """Train the challenge-style SentencePiece BPE tokenizer on a documents file; return ``{model_prefix}.model``.

    Each document is one training sentence, read in file order (the first ``max_docs``, or at most
    DEFAULT_TOKENIZER_MAX_DOCS). The model and ``.vocab`` are trained in a temp folder and renamed into place; the
    model's bytes do not depend on the temp path or the thread count.
    """
    docs_path = Path(docs_path)
    model_prefix = Path(model_prefix)
    if not 260 <= vocab_size <= 65536:
        raise ValueError(f"vocab_size {vocab_size} must be in 260..65536 (4 specials + 256 bytes; uint16 ids)")
    if not docs_path.is_file():
        raise FileNotFoundError(f"{docs_path}: documents file not found")
    limit = max_docs if max_docs is not None else DEFAULT_TOKENIZER_MAX_DOCS
    if limit <= 0:
        raise ValueError(f"max_docs must be positive, got {max_docs}")
    threads = threads or cpu_count()

    errors: list[Exception] = []
    count = 0

    def sentences() -> Iterator[str]:
        nonlocal count
        try:
            for text in iter_documents(docs_path, limit):
                count += 1
                yield text
        except Exception as e:  # re-raised below: the trainer would only report a bare failure
            errors.append(e)

    model_prefix.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{model_prefix.name}.", suffix=".train", dir=model_prefix.parent))
    try:
        tmp_prefix = tmp_dir / "sp"
        spm.set_random_generator_seed(0)
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=sentences(),
                model_prefix=str(tmp_prefix),
                minloglevel=1,
                **tokenizer_settings(vocab_size, limit, threads),
            )
        except RuntimeError as e:
            if errors:
                raise errors[0] from None
            # SentencePiece's failed write (a full disk) reads "INTERNAL: ... WriteLine": not the documents' fault
            if "Write" in str(e) or shutil.disk_usage(tmp_dir).free < 1 << 20:
                raise fsio.disk_full(f"{model_prefix}.model", "tokenizer", e) from None
            raise ValueError(f"{docs_path}: SentencePiece training failed ({count} documents read): {e}") from None
        if errors:
            raise errors[0]
        model_tmp, vocab_tmp = tmp_prefix.with_suffix(".model"), tmp_prefix.with_suffix(".vocab")
        model_tmp.write_bytes(_strip_machine_specific(model_tmp.read_bytes()))
        sp = spm.SentencePieceProcessor(model_file=str(model_tmp))
        if sp.vocab_size() != vocab_size:  # hard_vocab_limit=False lets a too-small corpus fall short
            raise ValueError(f"{docs_path}: trained vocab has {sp.vocab_size()} pieces, asked for {vocab_size}")
        model_path = model_prefix.parent / f"{model_prefix.name}.model"
        os.replace(vocab_tmp, model_prefix.parent / f"{model_prefix.name}.vocab")
        os.replace(model_tmp, model_path)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return model_path


def load_tokenizer(path: Path) -> spm.SentencePieceProcessor:
    """The SentencePiece model at ``path`` (FileNotFoundError / ValueError naming the file otherwise)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: tokenizer model not found")
    try:
        return spm.SentencePieceProcessor(model_file=str(path))
    except (OSError, RuntimeError) as e:
        raise ValueError(f"{path}: not a SentencePiece model ({e})") from None
