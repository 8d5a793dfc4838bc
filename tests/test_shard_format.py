"""The shard format is defined once, in pgolf.data.shards; the training script ships as one self-contained file and
carries its own copy (SHARD_MAGIC, SHARD_VERSION, SHARD_HEADER_WORDS, load_shard). Both must agree: the constants,
and every shard the package writes reads the same in the script, and the other way round for shards written to the
challenge's spec (the script writes none), the official one included; both refuse the same broken files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED

from pgolf.data import shards

OFFICIAL_VAL = SHARED / "data" / "fineweb_sp1024_official" / "fineweb_val_prefix_sp1024.bin"


def test_the_script_and_the_package_share_the_constants(train_script):
    assert train_script.SHARD_MAGIC == shards.SHARD_MAGIC == 20240520
    assert train_script.SHARD_VERSION == shards.SHARD_VERSION == 1
    assert train_script.SHARD_HEADER_WORDS == shards.HEADER_WORDS == 256
    assert 4 * train_script.SHARD_HEADER_WORDS == shards.HEADER_BYTES
    assert shards.SHARD_FORMAT == {
        "magic": train_script.SHARD_MAGIC,
        "version": train_script.SHARD_VERSION,
        "header_bytes": 4 * train_script.SHARD_HEADER_WORDS,
        "dtype": "<u2",
        "bos_id": 1,
    }


@pytest.mark.parametrize("tokens", [[], [1], [1, 2, 3, 65535, 0], list(range(1, 5000))])
def test_a_shard_the_package_writes_reads_the_same_in_the_script(tmp_path, train_script, tokens):
    path = tmp_path / "x_train_000000.bin"
    shards.write_shard(path, np.array(tokens, dtype=np.int64))
    theirs = train_script.load_shard(str(path))
    assert theirs.dtype.itemsize == 2 and theirs.dtype.kind == "u"
    assert theirs.tolist() == tokens == shards.read_shard(path).tolist()


def _spec_shard(path: Path, tokens: np.ndarray, magic: int = 20240520, version: int = 1, count: int | None = None):
    """A shard written by hand from the challenge's description (docs/challenge.md), not by either implementation."""
    header = np.zeros(256, dtype="<i4")
    header[:3] = magic, version, tokens.size if count is None else count
    path.write_bytes(header.tobytes() + tokens.astype("<u2").tobytes())
    return path


def test_a_shard_written_to_the_spec_reads_the_same_in_both(tmp_path, train_script):
    tokens = np.random.default_rng(0).integers(0, 1 << 16, size=3001).astype(np.uint16)
    path = _spec_shard(tmp_path / "spec.bin", tokens)
    assert np.array_equal(train_script.load_shard(str(path)), tokens)
    assert np.array_equal(shards.read_shard(path), tokens)
    assert np.array_equal(shards.read_shard(path, mmap=True), tokens)
    assert shards.shard_token_count(path) == tokens.size


def test_the_official_shard_reads_the_same_in_both(train_script):
    if not OFFICIAL_VAL.is_file():
        pytest.skip(f"{OFFICIAL_VAL} not present (../shared)")
    ours = shards.read_shard(OFFICIAL_VAL)
    assert ours.size > 0 and ours[0] == shards.BOS_ID
    assert np.array_equal(train_script.load_shard(str(OFFICIAL_VAL)), ours)


@pytest.mark.parametrize(
    "broken",
    [
        {"magic": 20240521},
        {"version": 2},
        {"count": 11},  # the header promises more tokens than the file holds
        {"count": 9},  # the file holds more tokens than the header says
    ],
)
def test_both_refuse_the_same_broken_shards(tmp_path, train_script, broken):
    path = _spec_shard(tmp_path / "broken.bin", np.arange(10, dtype=np.uint16), **broken)
    with pytest.raises(ValueError, match="broken.bin"):
        train_script.load_shard(str(path))
    with pytest.raises(ValueError, match="broken.bin"):
        shards.read_shard(path)


def test_both_refuse_a_file_shorter_than_the_header(tmp_path, train_script):
    path = tmp_path / "short.bin"
    path.write_bytes(np.array([20240520, 1, 0], dtype="<i4").tobytes())
    with pytest.raises(ValueError, match="short.bin"):
        train_script.load_shard(str(path))
    with pytest.raises(ValueError, match="short.bin"):
        shards.read_shard(path)
