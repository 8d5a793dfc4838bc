"""Parameter Golf training script: train, quantize, compress and score a small GPT in one file.

Run as the challenge runs it (train -> artifact -> reload from disk -> score):
    torchrun --standalone --nproc_per_node=8 train_gpt.py
or one stage at a time, as the pgolf pipeline does, so that a quantization or evaluation change never re-trains:
    torchrun ... train_gpt.py --stage train    --checkpoint ckpt.pt --logfile train.log --summary train.json
    python train_gpt.py --stage quantize --checkpoint ckpt.pt --artifact model.ptz --logfile q.log --summary q.json
    torchrun ... train_gpt.py --stage eval     --artifact model.ptz --logfile eval.log --summary eval.json
Hyperparameters come from environment variables (see Hyperparameters). Imports: stdlib, numpy, torch,
sentencepiece, zstandard and brotli (optional: lzma otherwise), FlashAttention 3 or 4 when installed, and Triton (part
of CUDA builds of torch) for one fused MLP kernel.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import glob
import json
import lzma
import math
import os
import platform
import random
import shutil
import sys
import time
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np
import sentencepiece as spm
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

try:
    import zstandard
except ImportError:  # the artifact falls back to xz
    zstandard = None
try:
    import brotli
except ImportError:  # brotli is one of the candidate compressors when installed
    brotli = None
try:
    from flash_attn_interface import flash_attn_func as fa3_attn
except ImportError:
    fa3_attn = None
try:  # Triton ships with CUDA builds of torch: the fused MLP kernel below; CPU builds fall back to torch ops
    import triton
    import triton.language as tl
    import triton.testing
except ImportError:
    triton = None
try:  # FlashAttention 4 (CuTe DSL, package flash-attn-4): its kernel entry points, wrapped as custom ops below
    from flash_attn.cute.interface import _flash_attn_bwd as fa4_bwd_kernel
    from flash_attn.cute.interface import _flash_attn_fwd as fa4_fwd_kernel
except ImportError:
    fa4_fwd_kernel = fa4_bwd_kernel = None

PROCESS_START = time.perf_counter()  # the stage's start-up (imports, data, compile, warm-up) is measured from here
ARTIFACT_CAP_BYTES = 16_000_000
ARTIFACT_FORMAT = "pgolf-artifact-v1"
SHARD_MAGIC, SHARD_VERSION, SHARD_HEADER_WORDS = 20240520, 1, 256


# ----------------------------------------------------------------------------------------------------------------
# Hyperparameters: every knob in one place, each overridable by an environment variable of the same name.
# Defaults are the production recipe (11 layers, 786K tokens/step, 600 s on 8xH100).


STAGES = ("run", "data", "train", "quantize", "eval", "runtime")  # runtime: how fast, never what is computed


def knob(default, stage: str, arch: bool = False):
    """A hyperparameter: its default, the stage that owns it (one of STAGES) and whether it describes the model's
    architecture (only those travel in the checkpoint and the artifact)."""
    assert stage in STAGES, stage
    return dataclasses.field(default=default, metadata={"stage": stage, "arch": arch})


def parse_knob(name: str, raw: str, default):
    try:
        if isinstance(default, bool):
            if raw.strip().lower() in ("1", "true", "yes", "on"):
                return True
            if raw.strip().lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        return type(default)(raw)
    except ValueError:
        raise SystemExit(f"hyperparameter {name.upper()}={raw!r}: expected {type(default).__name__}") from None


@dataclasses.dataclass(frozen=True)
class Hyperparameters:
    """Every knob in one place: the environment variable is the name upper-cased, the config key (in the section of
    the knob's stage) the name itself. Built once from the environment (`from_env`), never mutated (`replace`)."""

    # data
    data_path: str = knob("./data/datasets/fineweb10B_sp1024", "data")
    train_files: str = knob("", "data")  # "" = DATA_PATH/fineweb_train_*.bin
    val_files: str = knob("", "data")  # "" = DATA_PATH/fineweb_val_*.bin
    tokenizer_path: str = knob("./data/tokenizers/fineweb_1024_bpe.model", "data")
    run_id: str = knob("", "run")  # "" = a random id
    seed: int = knob(1337, "run")
    # schedule
    iterations: int = knob(9000, "train")
    max_wallclock_seconds: float = knob(600.0, "train")  # 0 = no cap
    warmup_steps: int = knob(20, "train")  # compile warm-up steps, undone before the timed run
    lr_warmup_steps: int = knob(0, "train")
    warmdown_iters: int = knob(3000, "train")
    train_batch_tokens: int = knob(786_432, "train")
    train_seq_len: int = knob(2048, "train", arch=True)
    grad_accum_steps: int = knob(0, "train")  # 0 = 8 // world_size, so any of 1/2/4/8 GPUs runs one batch
    train_log_every: int = knob(100, "train")
    val_loss_every: int = knob(0, "train")
    # model
    vocab_size: int = knob(1024, "data", arch=True)  # the tokenizer's (the data manifest's)
    num_layers: int = knob(11, "train", arch=True)
    model_dim: int = knob(512, "train", arch=True)
    num_heads: int = knob(8, "train", arch=True)
    num_kv_heads: int = knob(4, "train", arch=True)
    mlp_mult: float = knob(3.0, "train", arch=True)
    relu_slope: float = knob(0.0, "train", arch=True)  # 0 = relu^2; 0.5 = LeakyReLU(0.5)^2
    logit_softcap: float = knob(30.0, "train", arch=True)
    rope_base: float = knob(10000.0, "train", arch=True)
    rope_dims: int = knob(16, "train", arch=True)  # partial RoPE: rotate this many of each head's dims
    qk_gain_init: float = knob(1.5, "train", arch=True)
    xsa_last_n: int = knob(4, "train", arch=True)  # exclusive self-attention on the last N layers
    bigram_vocab_size: int = knob(2048, "train", arch=True)  # BigramHash buckets; 0 = off
    bigram_dim: int = knob(128, "train", arch=True)
    smear_gate: bool = knob(True, "train", arch=True)
    ln_scale: bool = knob(True, "train", arch=True)  # scale block inputs by 1/sqrt(layer+1)
    unet_skips: bool = knob(True, "train", arch=True)
    parallel_residual: bool = knob(True, "train", arch=True)  # attention and MLP read the same block input
    residual_bf16: bool = knob(True, "train", arch=True)  # under bf16 autocast, the residual stream in bf16 (not fp32)
    recur_layers: str = knob("", "train", arch=True)  # depth recurrence: "4,5" runs blocks 4-5 twice (shared weights)
    tied_embed_init_std: float = knob(0.005, "train", arch=True)
    # optimizer
    matrix_lr: float = knob(0.025, "train")
    scalar_lr: float = knob(0.025, "train")
    tied_embed_lr: float = knob(0.035, "train")
    muon_momentum: float = knob(0.99, "train")
    muon_momentum_warmup_start: float = knob(0.92, "train")
    muon_momentum_warmup_steps: int = knob(1500, "train")
    muon_backend_steps: int = knob(5, "train")
    muon_polar_express: bool = knob(False, "train")  # Newton-Schulz with Polar Express's per-step coefficients
    muon_wd: float = knob(0.04, "train")
    adam_wd: float = knob(0.04, "train")
    beta1: float = knob(0.9, "train")
    beta2: float = knob(0.95, "train")
    adam_eps: float = knob(1e-8, "train")
    grad_clip_norm: float = knob(0.3, "train")
    ema_enabled: bool = knob(True, "train")
    ema_decay: float = knob(0.997, "train")
    late_qat: bool = knob(True, "train")
    qat_threshold: float = knob(0.1, "train")  # QAT switches on once the LR scale falls below this
    qat_bits: int = knob(6, "train")  # late QAT's fake-quantization of the matrices (the export's bits are its own)
    qat_bits_mlp: int = knob(0, "train")  # 0 = QAT_BITS
    gptq_calib_batches: int = knob(8, "train")  # GPTQ Hessians: training micro-batches per rank; 0 = none
    gptq_reserve_seconds: float = knob(10.0, "train")  # of MAX_WALLCLOCK_SECONDS, kept for the Hessian collection
    fused_mlp: bool = knob(True, "runtime")  # relu^2 MLP training step: relu^2 in the matmul epilogues (Triton, CUDA)
    fused_qk: bool = knob(True, "runtime")  # q/k RMSNorm + RoPE + q_gain (and v's copy) as one Triton pass (CUDA)
    # export
    quant_bits_matrix: int = knob(6, "quantize")
    quant_bits_mlp: int = knob(0, "quantize")  # 0 = QUANT_BITS_MATRIX; 5 = int5 MLP
    quant_bits_embed: int = knob(8, "quantize")
    quant_keep_float_numel: int = knob(65_536, "quantize")
    quant_clip_search: bool = knob(True, "quantize")  # per-row clip ratio search (else absmax)
    gptq: bool = knob(True, "quantize")  # GPTQ with the Hessians collected at the end of training (else rounding)
    gptq_block: int = knob(128, "quantize")
    gptq_damp: float = knob(0.01, "quantize")
    compressor: str = knob("auto", "quantize")  # auto (smallest of those installed) | zstd | brotli | xz
    quant_layout: str = knob("auto", "quantize")  # auto | plain | shuffle | packed | packed_shuffle
    compress_level: int = knob(22, "quantize")  # zstd level (brotli: quality 11, xz: 9e)
    compress_chunk: int = knob(1 << 20, "quantize")  # bytes per independently compressed chunk; 0 = one chunk
    encode_sample_chunks: int = knob(4, "quantize")  # chunks of each candidate encoding that rank them; 0 = all
    quant_fit_mlp_bits: int = knob(5, "quantize")  # over the cap: the MLP at this many bits before pruning (0 = off)
    prune_max_frac: float = knob(0.1, "quantize")  # prune-to-fit: most of the nonzero matrix weights to zero
    enforce_cap: bool = knob(False, "quantize")
    # eval
    val_tokens_limit: int = knob(0, "eval")  # 0 = the whole validation split
    eval_seq_len: int = knob(0, "eval")  # 0 = TRAIN_SEQ_LEN
    eval_stride: int = knob(64, "eval")  # >= EVAL_SEQ_LEN: plain non-overlapping chunks
    eval_batch_seqs: int = knob(64, "eval")
    ttt_epochs: int = knob(0, "eval")  # legal score-first TTT: SGD steps per scored chunk; 0 = off
    ttt_lr: float = knob(0.002, "eval")
    ttt_chunk_tokens: int = knob(32768, "eval")  # targets scored between two rounds of updates
    ttt_params: str = knob("", "eval")  # comma-separated substrings of the trained tensors' names; "" = all
    ttt_reset_chunks: int = knob(0, "eval")  # back to the artifact's weights every N chunks (a phase); 0 = never
    live_eval_stride: int = knob(0, "train")  # end-of-training score of the live weights: 0 = plain chunks
    # runtime
    compile: str = knob("auto", "runtime")  # auto = on CUDA only
    attn_backend: str = knob("auto", "runtime")  # auto | fa3 | fa4 | sdpa | sdpa_flash | sdpa_cudnn | sdpa_efficient

    def __post_init__(self):  # defaults that depend on other knobs, derived again by replace() unless given
        object.__setattr__(self, "_given", {k: getattr(self, k) for k in ("train_files", "val_files", "eval_seq_len")})
        derived = {
            "train_files": self.train_files or os.path.join(self.data_path, "fineweb_train_*.bin"),
            "val_files": self.val_files or os.path.join(self.data_path, "fineweb_val_*.bin"),
            "run_id": self.run_id or str(uuid.uuid4()),
            "eval_seq_len": self.eval_seq_len or self.train_seq_len,
        }
        for k, v in derived.items():
            object.__setattr__(self, k, v)

    @classmethod
    def from_env(cls, environ=None) -> Hyperparameters:
        environ = os.environ if environ is None else environ
        given = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(f.name.upper())
            if raw is not None and raw != "":
                given[f.name] = parse_knob(f.name, raw, f.default)
        return cls(**given)

    @classmethod
    def knobs(cls, stage: str | None = None, arch: bool | None = None) -> list[str]:
        """The knobs' names, those of one stage and/or only the architecture's (or only the others')."""
        return [
            f.name
            for f in dataclasses.fields(cls)
            if (stage is None or f.metadata["stage"] == stage) and (arch is None or f.metadata["arch"] == arch)
        ]

    @property
    def loop_seconds(self) -> float:
        """The training loop's wall-clock cap (0 = none): MAX_WALLCLOCK_SECONDS less GPTQ_RESERVE_SECONDS when GPTQ
        Hessians are collected after the loop, since reading training data for them counts as training time."""
        if self.max_wallclock_seconds > 0 and self.gptq_calib_batches > 0:
            return self.max_wallclock_seconds - self.gptq_reserve_seconds
        return self.max_wallclock_seconds

    def replace(self, **changes) -> Hyperparameters:
        return dataclasses.replace(self, **{**self._given, **changes})

    def as_dict(self, names=None) -> dict:
        return {k: getattr(self, k) for k in (names or self.knobs())}

    def model(self) -> dict:
        """The architecture knobs: what the checkpoint and the artifact carry."""
        return self.as_dict(self.knobs(arch=True))

    def with_model(self, model: dict, what: str) -> Hyperparameters:
        """These hyperparameters with the architecture of a checkpoint or artifact (`what` names it): its keys, and
        only those, replace ours."""
        missing = [k for k in self.knobs(arch=True) if k not in model]
        if missing:
            raise SystemExit(f"{what}: no {', '.join(missing)} in its model description")
        return self.replace(**{k: model[k] for k in self.knobs(arch=True)})


# ----------------------------------------------------------------------------------------------------------------
# Distributed setup and logging


class Runtime:
    def __init__(self):
        self.distributed = "RANK" in os.environ and "WORLD_SIZE" in os.environ
        self.rank = int(os.environ.get("RANK", 0))
        self.world_size = int(os.environ.get("WORLD_SIZE", 1))
        self.local_rank = int(os.environ.get("LOCAL_RANK", 0))
        if torch.cuda.is_available():
            self.device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(self.device)
            backend = "nccl"
        else:
            self.device = torch.device("cpu")
            backend = "gloo"
        if self.distributed and not dist.is_initialized():
            dist.init_process_group(backend=backend, device_id=self.device if backend == "nccl" else None)
        self.master = self.rank == 0
        self.logfile: Path | None = None

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def log(self, msg: str = "", console: bool = True) -> None:
        if not self.master:
            return
        if console:
            print(msg, flush=True)
        if self.logfile is not None:
            with open(self.logfile, "a", encoding="utf-8") as f:
                print(msg, file=f)

    def all_reduce(self, t: torch.Tensor, op=None) -> torch.Tensor:
        if self.distributed:
            dist.all_reduce(t, op=op or dist.ReduceOp.SUM)
        return t

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def autocast(rt: Runtime):
    # bf16 on GPU; fp32 on CPU (bf16 matmuls are slow there and the CPU run only has to be right)
    return torch.autocast(device_type="cuda", dtype=torch.bfloat16) if rt.cuda else torch.autocast("cpu", enabled=False)


# The knobs each stage reads (the training run's own end-of-training scores use the eval knobs too).
STAGE_KNOBS = {
    "train": ("run", "data", "train", "eval", "runtime"),
    "quantize": ("run", "quantize"),
    "eval": ("run", "data", "eval", "runtime"),
    "all": STAGES,
}


def log_environment(rt: Runtime, args: Hyperparameters, stage: str) -> None:
    rt.log("=" * 100, console=False)
    rt.log(f"Running Python {sys.version}")
    rt.log(f"Running PyTorch {torch.__version__} (CUDA {torch.version.cuda})")
    rt.log(f"platform:{platform.platform()} world_size:{rt.world_size} device:{device_name(rt)}")
    rt.log(
        f"attention_backend:{attention_backend(rt, args)} fa3:{package_version(fa3_attn, 'flash_attn_3')} "
        f"fa4:{package_version(fa4_fwd_kernel, 'flash-attn-4')}"
    )
    rt.log("Hyperparameters:")  # those this stage reads; the architecture of a checkpoint or artifact is logged apart
    used = [k for group in STAGE_KNOBS[stage] for k in args.knobs(group)]
    for k, v in sorted(args.as_dict(used).items()):
        rt.log(f"  {k}: {v}")
    rt.log("=" * 100, console=False)


def device_name(rt: Runtime) -> str:
    return torch.cuda.get_device_name(rt.device) if rt.cuda else "cpu"


def package_version(imported: object, dist: str) -> str | None:
    """The installed version of distribution `dist`, or None when its import (`imported`) failed."""
    if imported is None:
        return None
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:
        return "unknown"


# ----------------------------------------------------------------------------------------------------------------
# Data: challenge shards (256 x int32 header, uint16 tokens)


def load_shard(path: str) -> np.ndarray:
    header = np.fromfile(path, dtype="<i4", count=SHARD_HEADER_WORDS)
    if header.size != SHARD_HEADER_WORDS or header[0] != SHARD_MAGIC or header[1] != SHARD_VERSION:
        raise ValueError(f"{path}: not a challenge shard (bad header)")
    count = int(header[2])
    if os.path.getsize(path) != 4 * SHARD_HEADER_WORDS + 2 * count:
        raise ValueError(f"{path}: size does not match the header's token count {count}")
    return np.fromfile(path, dtype="<u2", count=count, offset=4 * SHARD_HEADER_WORDS)


def shard_paths(pattern: str, what: str) -> list[str]:
    files = sorted(glob.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no {what} shards match {pattern}")
    return files


class TokenStream:
    """Reads the shards in order, wrapping around; take(n) returns the next n tokens."""

    def __init__(self, pattern: str):
        self.files = shard_paths(pattern, "train")
        self.file_idx, self.pos = 0, 0
        self.tokens = load_shard(self.files[0])

    def take(self, n: int) -> np.ndarray:
        parts, need = [], n
        while need > 0:
            if self.pos >= self.tokens.size:
                self.file_idx = (self.file_idx + 1) % len(self.files)
                self.tokens, self.pos = load_shard(self.files[self.file_idx]), 0
            k = min(need, self.tokens.size - self.pos)
            parts.append(self.tokens[self.pos : self.pos + k])
            self.pos += k
            need -= k
        return np.concatenate(parts)


class DistributedTokenLoader:
    """Every rank reads the same stream and keeps its own slice, so the global batch is rank-count independent."""

    def __init__(self, pattern: str, rt: Runtime):
        self.stream, self.rt = TokenStream(pattern), rt

    def next_batch(self, micro_tokens: int, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        span = micro_tokens + 1
        chunk = self.stream.take(span * self.rt.world_size)
        local = torch.from_numpy(chunk[self.rt.rank * span : (self.rt.rank + 1) * span].astype(np.int64))
        if self.rt.cuda:  # from pinned memory the copy is asynchronous: the host does not wait for the GPU to drain
            local = local.pin_memory()
        x, y = local[:-1].view(-1, seq_len), local[1:].view(-1, seq_len)
        return x.to(self.rt.device, non_blocking=True), y.to(self.rt.device, non_blocking=True)


def load_val_tokens(args: Hyperparameters, limit: int | None = None) -> np.ndarray:
    tokens = np.concatenate([load_shard(p) for p in shard_paths(args.val_files, "validation")])
    tokens = tokens[: (args.val_tokens_limit if limit is None else limit) or None]
    if tokens.size < 2:
        raise ValueError(f"validation split {args.val_files} has fewer than 2 tokens")
    return tokens


def load_val_bytes(tokens: np.ndarray, args: Hyperparameters) -> np.ndarray | None:
    """The validation byte sidecar named by VAL_BYTES_FILES (``fineweb_val_bytes_*.bin``: the val shards' layout, one
    uint16 count of original UTF-8 bytes per token, 0 for BOS), aligned with ``tokens``; None when unset (bytes then
    come from the tokenizer's pieces). Each sidecar file must have exactly as many entries as its val shard."""
    pattern = os.environ.get("VAL_BYTES_FILES", "")
    if not pattern:
        return None
    val = shard_paths(args.val_files, "validation")
    side = shard_paths(pattern, "validation byte sidecar")
    if len(side) != len(val):
        raise ValueError(f"VAL_BYTES_FILES={pattern}: {len(side)} sidecar files for {len(val)} validation shards")
    parts = []
    for v, b in zip(val, side, strict=True):
        counts = load_shard(b)
        n = int(np.fromfile(v, dtype="<i4", count=SHARD_HEADER_WORDS)[2])
        if counts.size != n:
            raise ValueError(f"{b}: {counts.size} byte counts, but {v} has {n} tokens")
        parts.append(counts)
    return np.concatenate(parts)[: tokens.size].astype(np.int64)


class ByteLuts(NamedTuple):
    base: np.ndarray
    space: np.ndarray
    boundary: np.ndarray
    val_bytes: np.ndarray | None = None  # the sidecar's counts per val token; they replace the pieces' when given


def byte_luts(sp: spm.SentencePieceProcessor, vocab_size: int, val_bytes: np.ndarray | None = None) -> ByteLuts:
    """Per-token UTF-8 byte counts for val_bpb: piece bytes without the leading '▁', +1 for the '▁' unless the
    previous token is a boundary (control/unknown/unused, e.g. BOS); byte-fallback pieces count 1. With
    ``val_bytes`` (``load_val_bytes``) the evaluator counts the sidecar's bytes instead."""
    n = max(sp.get_piece_size(), vocab_size)
    base = np.zeros(n, dtype=np.int64)
    space = np.zeros(n, dtype=bool)
    boundary = np.ones(n, dtype=bool)
    for i in range(sp.get_piece_size()):
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
            continue
        boundary[i] = False
        if sp.is_byte(i):
            base[i] = 1
            continue
        piece = sp.id_to_piece(i)
        if piece.startswith("\u2581"):
            space[i], piece = True, piece[1:]
        base[i] = len(piece.encode("utf-8"))
    return ByteLuts(base, space, boundary, val_bytes)


def token_bytes(prev: np.ndarray, tgt: np.ndarray, luts) -> np.ndarray:
    base, space, boundary = luts[:3]
    return base[tgt] + (space[tgt] & ~boundary[prev])


def load_val(args: Hyperparameters, rt: Runtime) -> tuple[np.ndarray, ByteLuts]:
    """(the validation tokens scored, their byte tables); logs val_scope: the tokens read (VAL_TOKENS_LIMIT: a
    prefix; every one but the first is a scored target) and the bytes of their targets, and those of the whole split
    (its token count is the manifest's val_tokens)."""
    sp = spm.SentencePieceProcessor(model_file=args.tokenizer_path)
    if sp.get_piece_size() > args.vocab_size:
        raise SystemExit(f"{args.tokenizer_path}: {sp.get_piece_size()} pieces > VOCAB_SIZE={args.vocab_size}")
    full = load_val_tokens(args, 0)
    tokens = full[: args.val_tokens_limit or None]
    vb = load_val_bytes(full, args)
    b, n = target_bytes(full, byte_luts(sp, args.vocab_size, vb)), tokens.size
    rt.log(f"val_bytes:{'pieces' if vb is None else 'sidecar ' + os.environ['VAL_BYTES_FILES']}")
    rt.log(
        f"val_scope: scored_tokens:{n} scored_bytes:{b[: n - 1].sum()} split_tokens:{full.size} split_bytes:{b.sum()}"
    )
    return tokens, byte_luts(sp, args.vocab_size, vb if vb is None else vb[:n])


def target_bytes(tokens: np.ndarray, luts) -> np.ndarray:
    """Bytes of each target tokens[1:]: the sidecar's when ``luts`` carries one, else the pieces'."""
    val_bytes = getattr(luts, "val_bytes", None)
    if val_bytes is None:
        return token_bytes(tokens[:-1], tokens[1:], luts)
    if val_bytes.size != tokens.size:
        raise ValueError(f"byte sidecar has {val_bytes.size} counts for {tokens.size} validation tokens")
    return val_bytes[1:]


# ----------------------------------------------------------------------------------------------------------------
# Kernels: the fused Triton passes and the FlashAttention 4 entry points, as torch custom ops (opaque to
# torch.compile, with fake shapes and their own backward). Off CUDA, or without Triton, the model runs the plain
# torch code beside each (qk_prep_plain, the unfused MLP); tests check each op against it.


# q/k preparation as one pass (CUDA, Triton): the fused q|k|v projection output -> RMS-normed, RoPE'd q (times
# q_gain) and k, and a contiguous v, in the attention kernels' (B, T, heads, head_dim) layout; the backward reads
# dq, dk, dv and writes the projection's gradient in one pass, the q_gain gradient as per-row sums. Eager and compiled,
# the same math is several passes over q and k plus copies for v and for the gradient's concatenation.
if triton is not None:

    @triton.jit
    def qk_rope_load(src, rows, col0, W, T, eps, M, NH: tl.constexpr, D: tl.constexpr, R: tl.constexpr,
                     cos_ptr, sin_ptr):  # fmt: skip
        """Rows x NH heads x D of src at column col0: the RMS-normed heads n, n at each lane's RoPE partner
        (d <-> d +- R/2 in the first R dims; itself beyond), 1/rms, cos, and sin signed for the partner's term
        (0 beyond R), so RoPE(n) = n * cos + n_partner * sin; then the mask and the row, head, dim indices."""
        h, d = tl.arange(0, NH)[None, :, None], tl.arange(0, D)[None, None, :]
        r = rows[:, None, None]
        mask = r < M
        x = tl.load(src + r * W + col0 + h * D + d, mask=mask, other=0.0).to(tl.float32)
        rstd = tl.rsqrt(tl.sum(x * x, axis=2) / D + eps)[:, :, None]
        HALF: tl.constexpr = R // 2
        partner = tl.where(d < HALF, d + HALF, tl.where(d < R, d - HALF, d))
        xp = tl.load(src + r * W + col0 + h * D + partner, mask=mask, other=0.0).to(tl.float32)
        rope = mask & (d < R)
        cs = (r % T) * HALF + d % HALF
        c = tl.load(cos_ptr + cs, mask=rope, other=1.0).to(tl.float32)
        s = tl.load(sin_ptr + cs, mask=rope, other=0.0).to(tl.float32)
        sign = tl.where(d < HALF, 1.0, -1.0)
        return x * rstd, xp * rstd, rstd, c, s * sign, mask, r, h, d

    @triton.autotune(
        configs=[triton.Config({"BM": bm}, num_warps=w) for bm in (8, 16, 32) for w in (4, 8)],
        key=["W", "H", "KV", "D", "R"],
    )
    @triton.jit
    def qk_prep_kernel(qkv, cos_ptr, sin_ptr, gain_ptr, q_ptr, k_ptr, v_ptr, M, T, W, eps, H: tl.constexpr,
                       KV: tl.constexpr, D: tl.constexpr, R: tl.constexpr, BM: tl.constexpr):  # fmt: skip
        rows = tl.program_id(0) * BM + tl.arange(0, BM)
        n, npart, _, c, s, mask, r, h, d = qk_rope_load(qkv, rows, 0, W, T, eps, M, H, D, R, cos_ptr, sin_ptr)
        q = (n * c + npart * s) * tl.load(gain_ptr + h)
        tl.store(q_ptr + r * (H * D) + h * D + d, q.to(q_ptr.dtype.element_ty), mask=mask)
        n, npart, _, c, s, mask, r, h, d = qk_rope_load(qkv, rows, H * D, W, T, eps, M, KV, D, R, cos_ptr, sin_ptr)
        tl.store(k_ptr + r * (KV * D) + h * D + d, (n * c + npart * s).to(k_ptr.dtype.element_ty), mask=mask)
        v = tl.load(qkv + r * W + (H + KV) * D + h * D + d, mask=mask)
        tl.store(v_ptr + r * (KV * D) + h * D + d, v, mask=mask)

    @triton.jit
    def qk_prep_head_bwd(dout, dqkv, rows, col0, W, T, eps, M, NH: tl.constexpr, D: tl.constexpr, R: tl.constexpr,
                         qkv, cos_ptr, sin_ptr, gain_ptr, gain_rows, GAIN: tl.constexpr):  # fmt: skip
        """d(input) of NH heads of y = RoPE(rmsnorm(x)) * gain, from dy; with GAIN, also the per-row sums of
        dy * RoPE(rmsnorm(x)) (the gain's gradient before the sum over rows)."""
        n, npart, rstd, c, s, mask, r, h, d = qk_rope_load(qkv, rows, col0, W, T, eps, M, NH, D, R, cos_ptr, sin_ptr)
        HALF: tl.constexpr = R // 2
        partner = tl.where(d < HALF, d + HALF, tl.where(d < R, d - HALF, d))
        g = tl.load(dout + r * (NH * D) + h * D + d, mask=mask, other=0.0).to(tl.float32)
        gp = tl.load(dout + r * (NH * D) + h * D + partner, mask=mask, other=0.0).to(tl.float32)
        if GAIN:
            tl.store(gain_rows + r * NH + h, tl.sum(g * (n * c + npart * s), axis=2)[:, :, None], mask=mask)
            gain = tl.load(gain_ptr + h)
            g, gp = g * gain, gp * gain
        dn = g * c - gp * s  # RoPE is a rotation: its transpose rotates back (the partner's sine has the other sign)
        dx = rstd * (dn - n * (tl.sum(dn * n, axis=2) / D)[:, :, None])
        tl.store(dqkv + r * W + col0 + h * D + d, dx.to(dqkv.dtype.element_ty), mask=mask)

    @triton.autotune(
        configs=[triton.Config({"BM": bm}, num_warps=w) for bm in (8, 16, 32) for w in (4, 8)],
        key=["W", "H", "KV", "D", "R"],
    )
    @triton.jit
    def qk_prep_bwd_kernel(dq, dk, dv, qkv, cos_ptr, sin_ptr, gain_ptr, dqkv, gain_rows, M, T, W, eps,
                           H: tl.constexpr, KV: tl.constexpr, D: tl.constexpr, R: tl.constexpr,
                           BM: tl.constexpr):  # fmt: skip
        rows = tl.program_id(0) * BM + tl.arange(0, BM)
        qk_prep_head_bwd(dq, dqkv, rows, 0, W, T, eps, M, H, D, R, qkv, cos_ptr, sin_ptr, gain_ptr, gain_rows, True)
        qk_prep_head_bwd(dk, dqkv, rows, H * D, W, T, eps, M, KV, D, R, qkv, cos_ptr, sin_ptr, gain_ptr, gain_rows,
                         False)  # fmt: skip
        r, h, d = rows[:, None, None], tl.arange(0, KV)[None, :, None], tl.arange(0, D)[None, None, :]
        g = tl.load(dv + r * (KV * D) + h * D + d, mask=r < M)
        tl.store(dqkv + r * W + (H + KV) * D + h * D + d, g, mask=r < M)


def qk_prep_fusable(heads: int, kv_heads: int, head_dim: int, rope_dims: int) -> bool:
    """The Triton q/k kernels index heads and head dims with power-of-two ranges."""
    return (
        triton is not None
        and all(n > 0 and n & (n - 1) == 0 for n in (heads, kv_heads, head_dim))
        and (rope_dims % 2 == 0 and 0 < rope_dims <= head_dim)
    )


def qk_prep_plain(qkv, cos, sin, gain, heads, kv_heads, eps=None):
    """qk_prep in plain torch ops, differentiated by autograd and compiled by Inductor: the module path, and the
    reference the fused op is checked against. q and k are RMS-normed per head (F.rms_norm's eps by default), RoPE'd on
    their first 2 cos.shape[-1] dims; v is a view of qkv."""
    B, T, W = qkv.shape
    D = W // (heads + 2 * kv_heads)
    q, k, v = qkv.view(B, T, -1, D).split((heads, kv_heads, kv_heads), dim=2)
    q, k = F.rms_norm(q, (D,), eps=eps), F.rms_norm(k, (D,), eps=eps)
    if cos.shape[-1]:
        cos, sin, R = cos[None, :, None], sin[None, :, None], 2 * cos.shape[-1]
        q, k = apply_rotary(q, cos, sin, R), apply_rotary(k, cos, sin, R)
    return q * gain.to(q.dtype)[None, None, :, None], k, v


def qk_prep_torch(qkv, cos, sin, gain, heads, kv_heads, grads=None):
    """What the Triton kernels compute, in torch ops (at least fp32), partner lanes and all: (q, k, v), or with
    grads = (dq, dk, dv) the gradients (d qkv, d gain)."""
    B, T, W = qkv.shape
    ct = torch.promote_types(qkv.dtype, torch.float32)
    D, R = W // (heads + 2 * kv_heads), 2 * cos.shape[-1]
    x = qkv.to(ct).view(B, T, -1, D)
    xs = x[:, :, : heads + kv_heads]
    rstd = torch.rsqrt(xs.square().mean(-1, keepdim=True) + torch.finfo(qkv.dtype).eps)
    n = xs * rstd
    one = torch.ones(T, D - R, device=qkv.device, dtype=ct)
    c = torch.cat((cos.to(ct), cos.to(ct), one), -1)[None, :, None]
    s = torch.cat((sin.to(ct), -sin.to(ct), 0 * one), -1)[None, :, None]  # the sign of the partner's term
    partner = torch.cat((torch.arange(R // 2, R), torch.arange(R // 2), torch.arange(R, D))).to(qkv.device)
    rot = n * c + n[..., partner] * s
    g_all = torch.cat((gain.to(ct), torch.ones(kv_heads, device=qkv.device, dtype=ct)))[:, None]
    if grads is None:
        y = (rot * g_all).to(qkv.dtype)
        v = x[:, :, heads + kv_heads :].to(qkv.dtype)
        return tuple(t.clone(memory_format=torch.contiguous_format) for t in (y[:, :, :heads], y[:, :, heads:], v))
    dq, dk, dv = grads
    g = torch.cat((dq, dk), 2).to(ct)
    dgain = (g * rot)[:, :, :heads].sum((0, 1, 3))
    g = g * g_all
    dn = g * c - g[..., partner] * s
    dx = rstd * (dn - n * (dn * n).mean(-1, keepdim=True))
    return torch.cat((dx, dv.to(ct)), 2).reshape(B, T, W).to(qkv.dtype), dgain.to(gain.dtype)


@torch.library.custom_op("pgolf::qk_prep", mutates_args=())
def qk_prep(
    qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, gain: torch.Tensor, heads: int, kv_heads: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q|k|v (B, T, (heads + 2 kv_heads) D) -> q = RoPE(rmsnorm(q)) * gain, k = RoPE(rmsnorm(k)), v, as contiguous
    (B, T, heads or kv_heads, D); RoPE on the first 2 cos.shape[-1] dims, cos and sin (T, R/2); rmsnorm's epsilon is
    that of qkv's dtype, as F.rms_norm's. One Triton kernel on CUDA, torch ops elsewhere."""
    B, T, W = qkv.shape
    D = W // (heads + 2 * kv_heads)
    if triton is None or not qkv.is_cuda:
        return qk_prep_torch(qkv, cos, sin, gain, heads, kv_heads)
    qkv = qkv.contiguous()
    q = qkv.new_empty((B, T, heads, D))
    k, v = qkv.new_empty((B, T, kv_heads, D)), qkv.new_empty((B, T, kv_heads, D))
    eps, R = torch.finfo(qkv.dtype).eps, 2 * cos.shape[-1]
    grid = lambda meta: (triton.cdiv(B * T, meta["BM"]),)  # noqa: E731
    qk_prep_kernel[grid](qkv, cos.contiguous(), sin.contiguous(), gain.float(), q, k, v, B * T, T, W, eps,
                         heads, kv_heads, D, R)  # fmt: skip
    return q, k, v


@qk_prep.register_fake
def _(qkv, cos, sin, gain, heads, kv_heads):
    B, T, W = qkv.shape
    D = W // (heads + 2 * kv_heads)
    return qkv.new_empty((B, T, heads, D)), qkv.new_empty((B, T, kv_heads, D)), qkv.new_empty((B, T, kv_heads, D))


@torch.library.custom_op("pgolf::qk_prep_bwd", mutates_args=())
def qk_prep_bwd(
    dq: torch.Tensor, dk: torch.Tensor, dv: torch.Tensor, qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
    gain: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    heads, kv_heads = dq.shape[2], dk.shape[2]
    if triton is None or not qkv.is_cuda:
        return qk_prep_torch(qkv, cos, sin, gain, heads, kv_heads, (dq, dk, dv))
    B, T, W = qkv.shape
    dqkv = torch.empty_like(qkv)
    gain_rows = torch.empty((B * T, heads), device=qkv.device, dtype=torch.float32)
    grid = lambda meta: (triton.cdiv(B * T, meta["BM"]),)  # noqa: E731
    qk_prep_bwd_kernel[grid](dq.contiguous(), dk.contiguous(), dv.contiguous(), qkv, cos.contiguous(),
                             sin.contiguous(), gain.float(), dqkv, gain_rows, B * T, T, W,
                             torch.finfo(qkv.dtype).eps, heads, kv_heads, W // (heads + 2 * kv_heads),
                             2 * cos.shape[-1])  # fmt: skip
    return dqkv, gain_rows.sum(0).to(gain.dtype)


@qk_prep_bwd.register_fake
def _(dq, dk, dv, qkv, cos, sin, gain):
    return qkv.new_empty(qkv.shape), gain.new_empty(gain.shape)


def _qk_prep_setup(ctx, inputs, output):
    qkv, cos, sin, gain = inputs[:4]
    ctx.save_for_backward(qkv, cos, sin, gain)


def _qk_prep_backward(ctx, dq, dk, dv):
    qkv, cos, sin, gain = ctx.saved_tensors
    dqkv, dgain = qk_prep_bwd(dq, dk, dv, qkv.contiguous(), cos, sin, gain)
    return dqkv, None, None, dgain, None, None


qk_prep.register_autograd(_qk_prep_backward, setup_context=_qk_prep_setup)


# FA4's own autograd.Function is not traceable by torch.compile; as custom ops (forward and backward, causal,
# contiguous (B, T, H, D) bf16, GQA native) it is opaque to the compiler, whose fake implementations give the shapes.
@torch.library.custom_op("pgolf::fa4_fwd", mutates_args=())
def fa4_fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    out, lse = fa4_fwd_kernel(q, k, v, causal=True, return_lse=True)[:2]  # later betas return more
    return out, lse


@fa4_fwd.register_fake
def _(q, k, v):
    B, T, H, _ = q.shape
    return q.new_empty(q.shape), q.new_empty((B, H, T), dtype=torch.float32)


@torch.library.custom_op("pgolf::fa4_bwd", mutates_args=())
def fa4_bwd(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, dout: torch.Tensor, lse: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    dq, dk, dv = fa4_bwd_kernel(q, k, v, out, dout, lse, causal=True)[:3]
    return dq, dk, dv


@fa4_bwd.register_fake
def _(q, k, v, out, dout, lse):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _fa4_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs, *output)
    ctx.mark_non_differentiable(output[1])  # the log-sum-exp is kept for the backward, never used downstream


def _fa4_backward(ctx, dout, dlse):
    q, k, v, out, lse = ctx.saved_tensors
    return fa4_bwd(q, k, v, out, dout.contiguous(), lse)


fa4_fwd.register_autograd(_fa4_backward, setup_context=_fa4_setup)


if triton is not None:

    @triton.autotune(  # K is small (the model width): few pipeline stages leave room for 2-3 blocks per SM
        configs=[
            triton.Config({"BM": bm, "BN": bn, "BK": 64, "GROUP": 8, "PREFETCH": pre}, num_warps=w, num_stages=st)
            for bm, bn, w, st in [
                (128, 256, 8, 3),
                (256, 128, 8, 3),
                (128, 256, 8, 2),
                (256, 128, 8, 2),
                (128, 128, 8, 4),
                (128, 128, 4, 4),
                (128, 128, 4, 3),
                (128, 128, 4, 2),
                (128, 128, 8, 2),
            ]
            for pre in (False, True)
        ],
        key=["M", "N", "K", "EPILOGUE"],
    )
    @triton.heuristics({"EVEN": lambda a: a["M"] % a["BM"] == 0 and a["N"] % a["BN"] == 0})
    @triton.jit
    def relu2_mm_kernel(a_ptr, b_ptr, c_ptr, aux_ptr, M, N, K, s_am, s_ak, s_bk, s_bn,
                        EPILOGUE: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
                        GROUP: tl.constexpr, PREFETCH: tl.constexpr, EVEN: tl.constexpr):  # fmt: skip
        """C = A @ B (row-major C and aux, M x N), then C = relu(C)^2 (EPILOGUE 0) or C = 2 sqrt(aux) * C (1).
        PREFETCH issues aux's loads before the product, so they are in flight while it runs."""
        pid = tl.program_id(0)
        grid_m, grid_n = tl.cdiv(M, BM), tl.cdiv(N, BN)
        width = GROUP * grid_n  # grouped order: consecutive programs share A's rows in L2
        first_m = (pid // width) * GROUP
        rows = min(grid_m - first_m, GROUP)
        pid_m, pid_n = first_m + (pid % width) % rows, (pid % width) // rows
        rm, rn, rk = pid_m * BM + tl.arange(0, BM), pid_n * BN + tl.arange(0, BN), tl.arange(0, BK)
        a = a_ptr + rm[:, None] * s_am + rk[None, :] * s_ak
        b = b_ptr + rk[:, None] * s_bk + rn[None, :] * s_bn
        acc = tl.zeros((BM, BN), dtype=tl.float32)
        mask = (rm[:, None] < M) & (rn[None, :] < N)
        offs = rm[:, None] * N + rn[None, :]
        if EPILOGUE == 1 and PREFETCH:
            aux = tl.load(aux_ptr + offs, mask=mask, other=0.0)
        for _ in range(0, K, BK):  # K % BK == 0 (checked by the caller)
            if EVEN:
                acc = tl.dot(tl.load(a), tl.load(b), acc)
            else:
                acc = tl.dot(tl.load(a, mask=rm[:, None] < M, other=0.0), tl.load(b, mask=rn[None, :] < N), acc)
            a += BK * s_ak
            b += BK * s_bk
        if EPILOGUE == 0:
            acc = tl.maximum(acc, 0.0)
            acc = acc * acc
        elif PREFETCH:
            acc = 2.0 * tl.sqrt(aux.to(tl.float32)) * acc
        elif EVEN:
            acc = 2.0 * tl.sqrt(tl.load(aux_ptr + offs).to(tl.float32)) * acc
        else:
            acc = 2.0 * tl.sqrt(tl.load(aux_ptr + offs, mask=mask, other=0.0).to(tl.float32)) * acc
        if EVEN:
            tl.store(c_ptr + offs, acc.to(c_ptr.dtype.element_ty))
        else:
            tl.store(c_ptr + offs, acc.to(c_ptr.dtype.element_ty), mask=mask)

    @triton.autotune(
        configs=[
            triton.Config({"BM": bm, "BN": bn, "BK": 64, "GROUP": 8, "SUBTILE": sub}, num_warps=w, num_stages=st)
            for bm, bn, w in [(128, 256, 8), (256, 128, 8), (128, 128, 8), (128, 128, 4)]
            for st in (3, 4)
            for sub in (False, True)
        ],
        key=["M", "N", "K", "EPILOGUE", "B_NK"],
    )
    @triton.jit
    def relu2_mm_tma_kernel(a_ptr, b_ptr, c_ptr, aux_ptr, M, N, K, EPILOGUE: tl.constexpr, B_NK: tl.constexpr,
                            NUM_SMS: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
                            GROUP: tl.constexpr, SUBTILE: tl.constexpr):  # fmt: skip
        """relu2_mm_kernel for Hopper and newer: persistent, tensor-memory-accelerator loads and stores, the tile loop
        flattened into the K loop so one tile's epilogue overlaps the next tile's loads. B is (N, K) when B_NK."""
        a_desc = tl.make_tensor_descriptor(a_ptr, shape=[M, K], strides=[K, 1], block_shape=[BM, BK])
        if B_NK:
            b_desc = tl.make_tensor_descriptor(b_ptr, shape=[N, K], strides=[K, 1], block_shape=[BN, BK])
        else:
            b_desc = tl.make_tensor_descriptor(b_ptr, shape=[K, N], strides=[N, 1], block_shape=[BK, BN])
        CN: tl.constexpr = BN // 2 if SUBTILE else BN
        c_desc = tl.make_tensor_descriptor(c_ptr, shape=[M, N], strides=[N, 1], block_shape=[BM, CN])
        x_desc = tl.make_tensor_descriptor(aux_ptr, shape=[M, N], strides=[N, 1], block_shape=[BM, CN])
        grid_m, grid_n = tl.cdiv(M, BM), tl.cdiv(N, BN)
        width = GROUP * grid_n
        tile_c = tl.program_id(0) - NUM_SMS
        for tile in tl.range(tl.program_id(0), grid_m * grid_n, NUM_SMS, flatten=True):
            first_m = (tile // width) * GROUP
            rows = min(grid_m - first_m, GROUP)
            om, on = (first_m + (tile % width) % rows) * BM, ((tile % width) // rows) * BN
            acc = tl.zeros((BM, BN), dtype=tl.float32)
            for k in range(0, K, BK):
                if B_NK:
                    acc = tl.dot(a_desc.load([om, k]), b_desc.load([on, k]).T, acc)
                else:
                    acc = tl.dot(a_desc.load([om, k]), b_desc.load([k, on]), acc)
            tile_c += NUM_SMS  # the epilogue's tile, recomputed so the flattened loop can be pipelined
            first_m = (tile_c // width) * GROUP
            rows = min(grid_m - first_m, GROUP)
            om, on = (first_m + (tile_c % width) % rows) * BM, ((tile_c % width) // rows) * BN
            if SUBTILE:
                h0, h1 = tl.split(tl.permute(tl.reshape(acc, (BM, 2, BN // 2)), (0, 2, 1)))
                c_desc.store([om, on], relu2_epilogue(h0, x_desc, om, on, EPILOGUE).to(c_ptr.dtype.element_ty))
                h1 = relu2_epilogue(h1, x_desc, om, on + CN, EPILOGUE)
                c_desc.store([om, on + CN], h1.to(c_ptr.dtype.element_ty))
            else:
                c_desc.store([om, on], relu2_epilogue(acc, x_desc, om, on, EPILOGUE).to(c_ptr.dtype.element_ty))

    @triton.jit
    def relu2_epilogue(h, x_desc, om, on, EPILOGUE: tl.constexpr):
        if EPILOGUE == 0:
            h = tl.maximum(h, 0.0)
            return h * h
        else:
            return 2.0 * tl.sqrt(x_desc.load([om, on]).to(tl.float32)) * h

    def _tma_scratch(size: int, alignment: int, stream):  # where the kernels build their TMA descriptors
        return torch.empty(size, device="cuda", dtype=torch.int8)

    @functools.cache
    def tma_sms(device_index: int) -> int:
        """The multiprocessor count when the device has TMA (Hopper or newer), else 0; looked up once per device,
        not at each of the MLP's 2 x layers x micro-steps calls per training step."""
        if torch.cuda.get_device_capability(device_index)[0] < 9:
            return 0
        triton.set_allocator(_tma_scratch)
        return torch.cuda.get_device_properties(device_index).multi_processor_count


RELU2_BACKWARD_KERNEL: dict[tuple, str] = {}  # (shape, dtype, strides) -> the faster kernel, timed at first use


def relu2_mm(a: torch.Tensor, b: torch.Tensor, aux: torch.Tensor | None = None, kernel: str = "auto") -> torch.Tensor:
    """relu(a @ b)^2, or with aux: 2 sqrt(aux) * (a @ b) (the relu^2 backward, since relu(h) = sqrt(relu(h)^2)).
    One Triton kernel on CUDA: the product never reaches memory before its epilogue. On Hopper and newer relu^2 uses
    the persistent TMA kernel (608 TFLOP/s on the H100; cuBLAS: 629 without the epilogue). For the backward form,
    whose epilogue reads aux, the TMA and the tiled kernel trade places from one H100 to the next
    (benchmarks/mlp.py), so the first call of each shape times both and keeps the faster. kernel="tma" or "tiled"
    forces one. Torch ops elsewhere."""
    if triton is None or not a.is_cuda or a.shape[1] % 64:
        with torch.autocast(a.device.type, enabled=False):
            ct = torch.promote_types(a.dtype, torch.float32)  # at least fp32, as the kernel accumulates
            c = a.to(ct) @ b.to(ct)
            return (F.relu(c).square() if aux is None else 2 * aux.to(ct).sqrt() * c).to(a.dtype)
    (M, K), N = a.shape, b.shape[1]
    c = a.new_empty((M, N))
    aux = c if aux is None else aux.contiguous()
    sms = tma_sms(a.device.index if a.device.index is not None else torch.cuda.current_device())
    hopper = sms > 0 and a.is_contiguous()
    if kernel == "auto":
        kernel = "tma" if hopper and aux is c else "tiled"
        if hopper and aux is not c:
            key = (M, N, K, a.dtype, b.stride())
            if key not in RELU2_BACKWARD_KERNEL:
                ms = {k: triton.testing.do_bench(lambda k=k: relu2_mm(a, b, aux, kernel=k)) for k in ("tma", "tiled")}
                RELU2_BACKWARD_KERNEL[key] = min(ms, key=ms.get)
            kernel = RELU2_BACKWARD_KERNEL[key]
    if kernel == "tma":
        if not hopper:
            raise ValueError("relu2_mm: kernel='tma' needs a contiguous input on a Hopper or newer GPU")
        b_nk = b.stride(0) == 1  # b = w.t() of a row-major (N, K) weight: read w by rows
        b = b.t().contiguous() if b_nk else b.contiguous()
        grid = lambda meta: (min(sms, triton.cdiv(M, meta["BM"]) * triton.cdiv(N, meta["BN"])),)  # noqa: E731
        relu2_mm_tma_kernel[grid](a, b, c, aux, M, N, K, int(aux is not c), b_nk, sms)
        return c
    grid = lambda meta: (triton.cdiv(M, meta["BM"]) * triton.cdiv(N, meta["BN"]),)  # noqa: E731
    relu2_mm_kernel[grid](a, b, c, aux, M, N, K, *a.stride(), *b.stride(), int(aux is not c))
    return c


@torch.library.custom_op("pgolf::relu2_mlp", mutates_args=())
def relu2_mlp(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(relu(x w1^T)^2 w2^T, relu(x w1^T)^2) for 2-D x: the hidden activation is kept for the backward instead of
    the pre-activation, and neither relu^2 nor its backward is a pass of its own over the 3x-wide hidden tensor."""
    a = relu2_mm(x, w1.t())
    return a @ w2.t(), a


@relu2_mlp.register_fake
def _(x, w1, w2):
    return x.new_empty((x.shape[0], w2.shape[0])), x.new_empty((x.shape[0], w1.shape[0]))


@torch.library.custom_op("pgolf::relu2_mlp_bwd", mutates_args=())
def relu2_mlp_bwd(
    dy: torch.Tensor, x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, a: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    dh = relu2_mm(dy, w2, aux=a)  # d/dh relu(h)^2 = 2 relu(h)
    return dh @ w1, dh.t() @ x, dy.t() @ a


@relu2_mlp_bwd.register_fake
def _(dy, x, w1, w2, a):
    return x.new_empty(x.shape), w1.new_empty(w1.shape), w2.new_empty(w2.shape)


def _relu2_mlp_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs, output[1])
    ctx.mark_non_differentiable(output[1])


def _relu2_mlp_backward(ctx, dy, _da):
    x, w1, w2, a = ctx.saved_tensors
    return relu2_mlp_bwd(dy.contiguous(), x, w1, w2, a)


relu2_mlp.register_autograd(_relu2_mlp_backward, setup_context=_relu2_mlp_setup)


# ----------------------------------------------------------------------------------------------------------------
# Model


def fake_quant_rows(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Symmetric per-row quantize-dequantize (the export's rounding), used for QAT."""
    qmax = 2 ** (bits - 1) - 1
    scale = w.detach().abs().amax(dim=1, keepdim=True).clamp_min(1e-8) / qmax
    return (w / scale).round().clamp(-qmax, qmax) * scale


class CastedLinear(nn.Linear):
    """Linear layer kept in fp32, cast to the activation dtype; with QAT on, the forward sees the quantized weight
    (straight-through). The switch is a buffer, so torch.compile cannot constant-fold it away."""

    def __init__(self, fan_in: int, fan_out: int, qat_bits: int = 0):
        super().__init__(fan_in, fan_out, bias=False)
        self.qat_bits = qat_bits
        self.register_buffer("qat_on", torch.zeros(()), persistent=False)

    def effective_weight(self) -> torch.Tensor:
        w = self.weight
        if self.qat_bits:
            w = w + self.qat_on * (fake_quant_rows(w, self.qat_bits) - w).detach()
        return w

    def forward(self, x: torch.Tensor, out_scale: torch.Tensor | None = None) -> torch.Tensor:
        w = self.effective_weight()
        if out_scale is not None:  # diag(s) W x == s * (W x), but s's gradient is a weight-sized, not a token, sum
            w = w * out_scale[:, None]
        return F.linear(x, w.to(x.dtype))


class Rotary(nn.Module):
    """RoPE on the first `dims` of each head; NTK-aware base scaling when run beyond the training length."""

    def __init__(self, dims: int, base: float, train_seq_len: int):
        super().__init__()
        self.dims, self.base, self.train_seq_len = dims, base, train_seq_len
        cos, sin = self.table(train_seq_len, "cpu")  # up to the training length the table is computed once
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def table(self, seq_len: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        base = self.base
        if seq_len > self.train_seq_len and self.dims > 2:
            base = base * (seq_len / self.train_seq_len) ** (self.dims / (self.dims - 2))
        inv = 1.0 / base ** (torch.arange(0, self.dims, 2, dtype=torch.float32, device=device) / self.dims)
        f = torch.outer(torch.arange(seq_len, dtype=torch.float32, device=device), inv)
        return f.cos()[None, :, None, :], f.sin()[None, :, None, :]

    def forward(self, seq_len: int, device, dtype):
        if seq_len > self.train_seq_len:
            cos, sin = self.table(seq_len, device)
        else:
            cos, sin = self.cos[:, :seq_len], self.sin[:, :seq_len]
        return cos.to(dtype), sin.to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, dims: int) -> torch.Tensor:
    rot, rest = x[..., :dims], x[..., dims:]
    a, b = rot[..., : dims // 2], rot[..., dims // 2 :]
    rot = torch.cat((a * cos + b * sin, b * cos - a * sin), dim=-1)
    return torch.cat((rot, rest), dim=-1)


SDPA_ONLY = {"sdpa_flash": "flash", "sdpa_cudnn": "cudnn", "sdpa_efficient": "mem_efficient"}


def fa4_usable(rt: Runtime) -> bool:
    return fa4_fwd_kernel is not None and rt.cuda and torch.cuda.get_device_capability(rt.device)[0] >= 9


def attention_backend(rt: Runtime, args: Hyperparameters) -> str:
    """auto: fa3 when importable on CUDA, else fa4 when importable on a Hopper or newer GPU, else PyTorch SDPA.
    `sdpa` lets PyTorch pick its kernel (GQA native); sdpa_flash / sdpa_cudnn / sdpa_efficient allow only that
    kernel (plus the math fallback) on expanded KV heads. FA4 is ahead of SDPA on the H100 (benchmarks/NOTES.md)."""
    if args.attn_backend == "fa3" or (args.attn_backend == "auto" and rt.cuda and fa3_attn is not None):
        if fa3_attn is None or not rt.cuda:
            raise SystemExit("ATTN_BACKEND=fa3: flash_attn_interface is not importable on a CUDA device")
        return "fa3"
    if args.attn_backend == "fa4" or (args.attn_backend == "auto" and fa4_usable(rt)):
        if not fa4_usable(rt):
            raise SystemExit(
                "ATTN_BACKEND=fa4: flash_attn.cute (flash-attn-4) is not importable on a CUDA device >= sm90"
            )
        return "fa4"
    if args.attn_backend in SDPA_ONLY:
        for kernel in SDPA_ONLY.values():
            getattr(torch.backends.cuda, f"enable_{kernel}_sdp")(kernel == SDPA_ONLY[args.attn_backend])
        return args.attn_backend
    if args.attn_backend not in ("auto", "sdpa"):
        raise SystemExit(
            f"ATTN_BACKEND={args.attn_backend!r}: expected auto, fa3, fa4, sdpa or one of {sorted(SDPA_ONLY)}"
        )
    return "sdpa"


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str) -> torch.Tensor:
    """Causal attention of (B, T, H, D) queries over (B, T, KV, D) keys and values (H a multiple of KV), by backend."""
    if backend == "fa3":
        y = fa3_attn(q, k, v, causal=True)
        return y[0] if isinstance(y, tuple) else y
    if backend == "fa4":
        return fa4_fwd(q.contiguous(), k.contiguous(), v.contiguous())[0]
    q = q.transpose(1, 2)
    if backend == "sdpa":
        gqa = k.shape[2] != q.shape[1]
        return F.scaled_dot_product_attention(
            q, k.transpose(1, 2), v.transpose(1, 2), is_causal=True, enable_gqa=gqa
        ).transpose(1, 2)
    rep = q.shape[1] // k.shape[2]
    k, v = (t.repeat_interleave(rep, dim=2).transpose(1, 2) for t in (k, v))
    return F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, args: Hyperparameters, xsa: bool, backend: str):
        super().__init__()
        d, h, kv = args.model_dim, args.num_heads, args.num_kv_heads
        if d % h or h % kv:
            raise ValueError(f"MODEL_DIM={d} NUM_HEADS={h} NUM_KV_HEADS={kv}: kv heads | heads | dim")
        self.h, self.kv, self.hd = h, kv, d // h
        qb = args.qat_bits if args.late_qat else 0
        self.c_q, self.c_k, self.c_v = (
            CastedLinear(d, d, qb),
            CastedLinear(d, kv * self.hd, qb),
            CastedLinear(d, kv * self.hd, qb),
        )
        self.proj = CastedLinear(d, d, qb)
        self.proj.out_proj = True
        self.q_gain = nn.Parameter(torch.full((h,), args.qk_gain_init))
        self.rope_dims = min(args.rope_dims, self.hd)
        self.rotary = Rotary(self.rope_dims, args.rope_base, args.train_seq_len)
        self.xsa, self.backend = xsa, backend
        self.fused = args.fused_qk and qk_prep_fusable(h, kv, self.hd, self.rope_dims)

    def qkv(self, x: torch.Tensor) -> torch.Tensor:
        """[c_q(x) | c_k(x) | c_v(x)] as one matmul over the concatenated weights: x is read once, and the backward's
        dx is one product instead of three summed (the three stay separate parameters, for Muon and the export)."""
        w = torch.cat([m.effective_weight() for m in (self.c_q, self.c_k, self.c_v)])
        return F.linear(x, w.to(x.dtype))

    def forward(self, x: torch.Tensor, out_scale: torch.Tensor | None = None) -> torch.Tensor:
        B, T, _ = x.shape
        qkv = self.qkv(x)
        cos, sin = (t[0, :, 0] for t in self.rotary(T, x.device, qkv.dtype))  # (T, rope_dims / 2)
        prep = qk_prep if self.fused and x.is_cuda else qk_prep_plain  # one Triton pass each way, or torch ops
        q, k, v = prep(qkv, cos, sin, self.q_gain, self.h, self.kv)
        y = attend(q, k, v, self.backend)
        if self.xsa:  # exclusive self-attention: remove the component along the token's own value vector
            vn = F.normalize(v.repeat_interleave(self.h // self.kv, dim=2), dim=-1)
            y = y - (y * vn).sum(-1, keepdim=True) * vn
        return self.proj(y.reshape(B, T, -1), out_scale)


class MLP(nn.Module):
    def __init__(self, args: Hyperparameters):
        super().__init__()
        hidden = int(args.mlp_mult * args.model_dim)
        qb = (args.qat_bits_mlp or args.qat_bits) if args.late_qat else 0
        self.fc, self.proj = CastedLinear(args.model_dim, hidden, qb), CastedLinear(hidden, args.model_dim, qb)
        self.proj.out_proj = True
        self.slope = args.relu_slope
        self.fused = args.fused_mlp and self.slope == 0

    def forward(self, x: torch.Tensor, out_scale: torch.Tensor | None = None) -> torch.Tensor:
        if self.fused and x.is_cuda and torch.is_grad_enabled():  # training; evaluation and GPTQ hooks: modules
            dt = torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else x.dtype
            w2 = self.proj.effective_weight()
            w2 = w2 * out_scale[:, None] if out_scale is not None else w2
            x2 = x.reshape(-1, x.size(-1)).to(dt).contiguous()
            y = relu2_mlp(x2, self.fc.effective_weight().to(dt), w2.to(dt))[0]
            return y.view(*x.shape[:-1], -1)
        h = self.fc(x)
        h = F.leaky_relu(h, self.slope) if self.slope else F.relu(h)
        return self.proj(h.square(), out_scale)


class Block(nn.Module):
    def __init__(self, args: Hyperparameters, layer: int, backend: str):
        super().__init__()
        self.attn = Attention(args, xsa=layer >= args.num_layers - args.xsa_last_n, backend=backend)
        self.mlp = MLP(args)
        d = args.model_dim
        self.attn_scale, self.mlp_scale = nn.Parameter(torch.ones(d)), nn.Parameter(torch.ones(d))
        self.resid_mix = nn.Parameter(torch.stack((torch.ones(d), torch.zeros(d))))
        self.in_scale = 1.0 / math.sqrt(layer + 1) if args.ln_scale else 1.0
        self.parallel = args.parallel_residual

    def forward(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        mix = self.resid_mix.to(x.dtype)
        x = mix[0] * x + mix[1] * x0
        d = (x.size(-1),)
        h = F.rms_norm(x, d) * self.in_scale
        x = x + self.attn(h, self.attn_scale)  # the branch scales fold into the output projections
        if not self.parallel:
            h = F.rms_norm(x, d) * self.in_scale
        return x + self.mlp(h, self.mlp_scale)


class BigramHash(nn.Module):
    """Hashed (previous, current) token pairs -> a small embedding, projected to the model width."""

    def __init__(self, buckets: int, dim: int, model_dim: int):
        super().__init__()
        self.buckets = buckets
        self.embed = nn.Embedding(buckets, dim)
        nn.init.zeros_(self.embed.weight)
        self.proj = CastedLinear(dim, model_dim)
        nn.init.zeros_(self.proj.weight)
        self.scale = nn.Parameter(torch.tensor(0.05))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        prev = F.pad(idx[:, :-1], (1, 0), value=0)
        h = torch.bitwise_xor(36313 * idx, 27191 * prev) % (self.buckets - 1)
        h[:, 0] = self.buckets - 1  # no previous token
        return self.scale * self.proj(self.embed(h))


class SmearGate(nn.Module):
    """x_t <- (1-g) x_t + g x_{t-1}, with a learned per-channel gate g = sigmoid(w) (starts at 0.5)."""

    def __init__(self, dim: int):
        super().__init__()
        self.gate = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = torch.sigmoid(self.gate).to(x.dtype)
        return (1 - g) * x + g * F.pad(x[:, :-1], (0, 0, 1, 0))


MODEL_KEYS = Hyperparameters.knobs(arch=True)


def block_order(n_layers: int, recur: str) -> list[int]:
    """The order blocks run in: 0..L-1, with the contiguous group named by RECUR_LAYERS run a second time."""
    try:
        group = sorted({int(t) for t in recur.split(",") if t.strip()})
    except ValueError:
        raise SystemExit(f"RECUR_LAYERS={recur!r}: expected comma-separated layer indices, e.g. 4,5") from None
    if group and (group[0] < 0 or group[-1] >= n_layers or group != list(range(group[0], group[-1] + 1))):
        raise SystemExit(f"RECUR_LAYERS={recur!r}: expected a contiguous group of layers in 0..{n_layers - 1}")
    end = group[-1] + 1 if group else 0
    return list(range(end)) + group + list(range(end, n_layers))


class GPT(nn.Module):
    def __init__(self, args: Hyperparameters, backend: str = "sdpa"):
        super().__init__()
        self.args = args
        d, L = args.model_dim, args.num_layers
        self.tok_emb = nn.Embedding(args.vocab_size, d)
        self.bigram = BigramHash(args.bigram_vocab_size, args.bigram_dim, d) if args.bigram_vocab_size > 0 else None
        self.smear = SmearGate(d) if args.smear_gate else None
        self.blocks = nn.ModuleList(Block(args, i, backend) for i in range(L))
        self.order = block_order(L, args.recur_layers)
        n = len(self.order)
        self.n_enc = n // 2 if args.unet_skips else n
        n_skip = min(self.n_enc, n - self.n_enc) if args.unet_skips else 0
        self.skip_weights = nn.Parameter(torch.ones(n_skip, d))
        self.softcap = args.logit_softcap
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.normal_(self.tok_emb.weight, std=self.args.tied_embed_init_std)
        out_scale = 1.0 / math.sqrt(2 * self.args.num_layers)  # muP-style scaling of residual-branch outputs
        for block in self.blocks:
            for m in block.modules():
                if isinstance(m, CastedLinear):
                    nn.init.orthogonal_(m.weight)
                    if getattr(m, "out_proj", False):
                        m.weight.data.mul_(out_scale)

    def set_qat(self, on: bool) -> None:
        for m in self.modules():
            if isinstance(m, CastedLinear):
                m.qat_on.fill_(1.0 if on else 0.0)

    def hidden(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok_emb(idx)
        if self.args.residual_bf16 and torch.is_autocast_enabled(x.device.type):  # halves the residual's traffic
            x = x.to(torch.get_autocast_dtype(x.device.type))
        if self.bigram is not None:
            x = x + self.bigram(idx)
        x = F.rms_norm(x, (x.size(-1),))
        if self.smear is not None:
            x = self.smear(x)
        x0, skips = x, []
        for i, b in enumerate(self.order):
            if i >= self.n_enc and skips:
                x = x + self.skip_weights[i - self.n_enc].to(x.dtype) * skips.pop()
            x = self.blocks[b](x, x0)
            if i < self.n_enc and len(skips) < len(self.skip_weights):
                skips.append(x)
        return F.rms_norm(x, (x.size(-1),))

    def head(self, h: torch.Tensor) -> torch.Tensor:
        logits = F.linear(h, self.tok_emb.weight.to(h.dtype)).float()
        return self.softcap * torch.tanh(logits / self.softcap) if self.softcap > 0 else logits

    def logits(self, idx: torch.Tensor) -> torch.Tensor:
        return self.head(self.hidden(idx))

    def forward(self, idx: torch.Tensor, targets: torch.Tensor, reduction: str = "mean", last: int = 0):
        """Mean loss, or per-token losses (reduction="none"); `last` > 0 scores only the last `last` positions
        (sliding-window evaluation needs no logits for the context part of a window)."""
        h = self.hidden(idx)
        if last:
            h, targets = h[:, -last:], targets[:, -last:]
        logits = self.head(h)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), reduction=reduction)
        return loss if reduction == "mean" else loss.view(targets.shape)


def model_flops_per_token(args: Hyperparameters, seq_len: int) -> float:
    """Training FLOPs per token (forward + backward = 3x forward), counted from the shapes."""
    d, L, hd = args.model_dim, args.num_layers, args.model_dim // args.num_heads
    kvd = args.num_kv_heads * hd
    hidden = int(args.mlp_mult * d)
    per_layer = 2 * (d * d + 2 * d * kvd + d * d + 2 * d * hidden) + 2 * 2 * seq_len * d / 2  # causal attention
    head = 2 * d * args.vocab_size + (2 * args.bigram_dim * d if args.bigram_vocab_size else 0)
    return 3.0 * (len(block_order(L, args.recur_layers)) * per_layer + head)  # recurrence runs layers again


# ----------------------------------------------------------------------------------------------------------------
# Optimizers: Muon for the matrices of the blocks, AdamW for embeddings and control scalars


# Polar Express (Amsel et al. 2025; upstream #1344): minimax coefficients per Newton-Schulz iteration, the last one
# repeated past the fifth; MUON_POLAR_EXPRESS=1 uses them instead of the fixed (3.4445, -4.7750, 2.0315).
POLAR_EXPRESS = (  # rounded to 5 significant digits (the iteration runs in bf16: 3)
    (8.1566, -22.483, 15.879),
    (4.0429, -2.8089, 0.50002),
    (3.8917, -2.7725, 0.50606),
    (3.2858, -2.3681, 0.46449),
    (2.3465, -1.7098, 0.42324),
)


def newton_schulz5(g: torch.Tensor, steps: int, polar: bool = False) -> torch.Tensor:
    """Approximate orthogonalisation of a matrix, or of a stack of same-shaped matrices (one batched matmul chain)."""
    x = g.to(torch.bfloat16 if g.is_cuda else torch.float32)
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    transposed = x.size(-2) > x.size(-1)
    if transposed:
        x = x.mT
    for i in range(steps):
        a, b, c = POLAR_EXPRESS[min(i, 4)] if polar else (3.4445, -4.7750, 2.0315)
        A = x @ x.mT
        x = a * x + (b * A + c * A @ A) @ x
    return x.mT if transposed else x


class Muon(torch.optim.Optimizer):
    """Nesterov momentum + Newton-Schulz orthogonalised updates. Matrices of one shape are orthogonalised together
    (a batched matmul chain instead of one small chain each); each rank takes a share of every shape, then one
    all-reduce of the flat update buffer."""

    def __init__(self, params, lr, momentum, backend_steps, weight_decay, rt: Runtime, polar: bool = False):
        super().__init__(params, dict(lr=lr, momentum=momentum, backend_steps=backend_steps, weight_decay=weight_decay))
        self.rt, self.polar = rt, polar

    @torch.no_grad()
    def step(self):
        W, rank = self.rt.world_size, self.rt.rank
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            offsets, total = {}, 0
            for p in params:
                offsets[p], total = total, total + p.numel()
            flat = torch.zeros(total, device=params[0].device, dtype=torch.float32)
            by_shape: dict[tuple, list] = {}
            for p in params:
                by_shape.setdefault(tuple(p.shape), []).append(p)
            for shape, ps in by_shape.items():
                mine = ps[rank::W]
                if not mine:
                    continue
                grads = [p.grad for p in mine]
                bufs = [self.state[p].setdefault("momentum_buffer", torch.zeros_like(p.grad)) for p in mine]
                torch._foreach_mul_(bufs, group["momentum"])
                torch._foreach_add_(bufs, grads)
                g = torch.stack(torch._foreach_add(grads, bufs, alpha=group["momentum"]))  # Nesterov
                g = newton_schulz5(g, group["backend_steps"], self.polar) * max(1.0, shape[0] / shape[1]) ** 0.5
                for p, u in zip(mine, g.float().unbind(0), strict=True):
                    flat[offsets[p] : offsets[p] + p.numel()] = u.flatten()
            self.rt.all_reduce(flat)
            if group["weight_decay"]:
                torch._foreach_mul_(params, 1 - group["lr"] * group["weight_decay"])
            updates = [flat[offsets[p] : offsets[p] + p.numel()].view_as(p).to(p.dtype) for p in params]
            torch._foreach_add_(params, updates, alpha=-group["lr"])


def param_groups(model: GPT) -> dict[str, list[tuple[str, nn.Parameter]]]:
    """Every parameter in exactly one group: 'muon' (2-D matrices of blocks and the bigram projection),
    'embed' (token and bigram embeddings), 'scalar' (gains, scales, gates, skip weights)."""
    groups: dict[str, list] = {"muon": [], "embed": [], "scalar": []}
    for name, p in model.named_parameters():
        if name in ("tok_emb.weight", "bigram.embed.weight"):
            groups["embed"].append((name, p))
        elif p.ndim == 2 and (name.startswith("blocks.") or name == "bigram.proj.weight"):
            groups["muon"].append((name, p))
        else:
            groups["scalar"].append((name, p))
    return groups


def build_optimizers(model: GPT, args: Hyperparameters, rt: Runtime) -> list[torch.optim.Optimizer]:
    g = param_groups(model)
    adam = torch.optim.AdamW(
        [
            {"params": [p for _, p in g["embed"]], "lr": args.tied_embed_lr, "base_lr": args.tied_embed_lr},
            {"params": [p for _, p in g["scalar"]], "lr": args.scalar_lr, "base_lr": args.scalar_lr},
        ],
        betas=(args.beta1, args.beta2),
        eps=args.adam_eps,
        weight_decay=args.adam_wd,
        fused=rt.cuda,
    )
    muon = Muon(
        [p for _, p in g["muon"]],
        args.matrix_lr,
        args.muon_momentum,
        args.muon_backend_steps,
        args.muon_wd,
        rt,
        args.muon_polar_express,
    )
    for group in muon.param_groups:
        group["base_lr"] = args.matrix_lr
    return [adam, muon]


def lr_scale(step: int, elapsed_ms: float, args: Hyperparameters) -> float:
    """Warmup, then full scale, then a linear warmdown over the last WARMDOWN_ITERS steps; with a wall-clock cap the
    warmdown is placed by time (the remaining time, at the current step rate, equals the warmdown length)."""
    if args.lr_warmup_steps and step < args.lr_warmup_steps:
        return (step + 1) / args.lr_warmup_steps
    if args.warmdown_iters <= 0:
        return 1.0
    if args.loop_seconds <= 0:
        start = max(args.iterations - args.warmdown_iters, 0)
        return max((args.iterations - step) / args.warmdown_iters, 0.0) if step >= start else 1.0
    step_ms = elapsed_ms / max(step, 1)
    remaining_ms = max(1000.0 * args.loop_seconds - elapsed_ms, 0.0)
    by_time = remaining_ms / (args.warmdown_iters * step_ms) if step > 0 else 1.0
    by_step = (args.iterations - step) / args.warmdown_iters
    return max(min(1.0, by_time, by_step), 0.0)


# ----------------------------------------------------------------------------------------------------------------
# Evaluation: exact val_bpb with sliding windows


def score_windows(n_targets: int, seq_len: int, stride: int) -> list[tuple[int, int, int]]:
    """Windows (input_start, input_end, n_scored) over targets 1..n_targets: the first window scores all its
    targets, each later one only its last `stride`, so every target is scored exactly once, in order."""
    windows, end = [], 0
    while end < n_targets:
        new_end = min(n_targets, seq_len if end == 0 else end + stride)
        start = max(0, new_end - seq_len)
        windows.append((start, new_end, new_end - end))
        end = new_end
    return windows


def window_shape(window: tuple[int, int, int], stride: int) -> tuple[int, int]:
    """(input length, positions that need logits): a window scoring at most `stride` targets needs only the last
    `stride` positions' logits; windows of one shape are batched together."""
    s, e, n = window
    return e - s, (stride if n <= stride else e - s)


def rank_windows(n_targets: int, args: Hyperparameters, rt: Runtime, stride: int) -> tuple[int, list]:
    """(stride, this rank's share of the scoring windows) of a pass over `n_targets` targets."""
    if n_targets < args.eval_seq_len:
        limit = f" (VAL_TOKENS_LIMIT={args.val_tokens_limit})" if args.val_tokens_limit else ""
        raise SystemExit(
            f"EVAL_SEQ_LEN={args.eval_seq_len} is longer than the validation split: {n_targets} targets in "
            f"{args.val_files}{limit}; lower eval.eval_seq_len (or raise eval.val_tokens_limit)"
        )
    stride = min(stride, args.eval_seq_len)
    windows = score_windows(n_targets, args.eval_seq_len, stride)
    return stride, windows[rt.rank * len(windows) // rt.world_size : (rt.rank + 1) * len(windows) // rt.world_size]


def eval_batches(mine: list, stride: int, batch_seqs: int):
    """The scoring's batches in order: (windows, input length, positions that need logits), at most `batch_seqs`
    consecutive windows of one shape each."""
    i = 0
    while i < len(mine):
        length, k = window_shape(mine[i], stride)
        j = i
        while j < len(mine) and j - i < batch_seqs and window_shape(mine[j], stride) == (length, k):
            j += 1
        yield mine[i:j], length, k
        i = j


@torch.no_grad()
def warm_up_eval(model: nn.Module, n_targets: int, args: Hyperparameters, rt: Runtime, strides, extra=()):
    """Compile before the timed scoring: one forward of every batch shape (windows, input length, positions scored)
    that this rank's scoring passes at `strides` will run (and the `extra` ones), on fixed random tokens (no validation
    data), as the scoring runs it (eval mode, autocast, no grad). Returns (seconds, shapes)."""
    t0 = time.perf_counter()
    shapes = list(extra)
    for stride in strides:
        stride, mine = rank_windows(n_targets, args, rt, stride)
        for batch, length, k in eval_batches(mine, stride, args.eval_batch_seqs):
            if (len(batch), length, k) not in shapes:
                shapes.append((len(batch), length, k))
    g = torch.Generator().manual_seed(0)
    model.eval()
    for b, length, k in shapes:
        x = torch.randint(0, args.vocab_size, (b, length), generator=g).to(rt.device)
        with autocast(rt):
            model(x, x, reduction="none", last=k if k < length else 0)
    model.train()
    if rt.cuda:
        torch.cuda.synchronize(rt.device)
    return time.perf_counter() - t0, len(shapes)


def score_batches(net, mine, toks, byte_cum, stride, args, rt, acc, pad=False) -> None:
    """Add the NLL (fp64, on the device), targets and bytes of the windows `mine` to acc = [nll, n, bytes]; `pad`
    fills every batch to EVAL_BATCH_SEQS windows (the extra ones score nothing): the shapes stay the compiled ones."""
    for batch, length, k in eval_batches(mine, stride, args.eval_batch_seqs):
        if pad:
            batch = batch + [(*batch[-1][:2], 0)] * (args.eval_batch_seqs - len(batch))
        x = torch.stack([toks[s:e] for s, e, _ in batch]).to(rt.device, non_blocking=True)
        y = torch.stack([toks[s + 1 : e + 1] for s, e, _ in batch]).to(rt.device, non_blocking=True)
        n = torch.tensor([m for _, _, m in batch], device=rt.device)
        mask = torch.arange(k, device=rt.device)[None, :] >= (k - n)[:, None]  # the last n of the last k
        with autocast(rt):
            nll = net(x, y, reduction="none", last=k if k < length else 0)
        acc[0] += (nll.double() * mask).sum()
        acc[1] += int(n.sum())
        acc[2] += int(sum(byte_cum[e + 1] - byte_cum[e - m + 1] for _, e, m in batch))


def totals(acc, rt: Runtime, t0: float) -> dict:
    """val_loss (nats/token) and val_bpb of acc = [nll, n, bytes] summed over the ranks in fp64."""
    stats = torch.stack([acc[0], *(torch.tensor(float(v), dtype=torch.float64, device=rt.device) for v in acc[1:])])
    rt.all_reduce(stats)
    nll_total, n_total, bytes_total = stats.tolist()
    return {
        "val_loss": nll_total / n_total,
        "val_bpb": nll_total / (math.log(2) * bytes_total),
        "tokens": int(n_total),
        "bytes": int(bytes_total),
        "eval_time_s": time.perf_counter() - t0,
    }


def byte_prefix(tokens: np.ndarray, luts) -> np.ndarray:
    """Bytes of target t (predicting tokens[t] after tokens[t-1]) as prefix sums: any scored range is O(1)."""
    return np.concatenate(([0, 0], np.cumsum(target_bytes(tokens, luts))))


@torch.no_grad()
def evaluate(model: nn.Module, tokens: np.ndarray, luts, args: Hyperparameters, rt: Runtime, stride: int) -> dict:
    """val_loss (nats/token) and val_bpb over all targets of `tokens`, windows split across ranks, sums in fp64."""
    t0 = time.perf_counter()
    stride, mine = rank_windows(tokens.size - 1, args, rt, stride)
    acc = [torch.zeros((), dtype=torch.float64, device=rt.device), 0, 0]
    model.eval()
    toks = torch.from_numpy(tokens.astype(np.int64))
    score_batches(model, mine, toks, byte_prefix(tokens, luts), stride, args, rt, acc)
    model.train()
    return totals(acc, rt, t0)


def ttt_chunks(n_targets: int, args: Hyperparameters, stride: int) -> list[list[tuple[int, int, int]]]:
    """The sliding-window pass's windows, in order, grouped by the chunk of TTT_CHUNK_TOKENS targets their first
    scored target falls in: chunk c scores targets lo+1..hi (lo, hi: its first window's e - n, its last one's e)."""
    chunks: dict[int, list] = {}
    for w in score_windows(n_targets, args.eval_seq_len, stride):
        chunks.setdefault((w[1] - w[2]) // args.ttt_chunk_tokens, []).append(w)
    return list(chunks.values())


def evaluate_ttt(model, net, tokens, luts, args: Hyperparameters, rt: Runtime, stride: int, trace=None) -> dict:
    """Legal score-first test-time training over the sliding-window pass (upstream #461/#549, the rulings of #677
    and #1017): chunk by chunk, the chunk's windows are scored first (each target once, by the weights of the updates
    before it; the ranks take every world_size-th window), then SGD (momentum 0.9, clip 1, cosine LR over the chunks)
    trains the tensors named by TTT_PARAMS on that chunk's targets only: TTT_EPOCHS steps on the chunk's sequences
    (each rank takes every world_size-th; gradients summed over the ranks). The last chunk trains nothing; every
    TTT_RESET_CHUNKS chunks (a phase) the weights go back to the artifact's. `trace` (tests) receives ("score", updates
    so far, first target, last target) per scored window and ("update", index, first input position, last target)
    per training sequence of each step. Returns evaluate's keys plus the seconds spent scoring and training (one
    device sync per chunk) and the counts."""
    t0 = time.perf_counter()
    L, stride, W = args.eval_seq_len, min(stride, args.eval_seq_len), rt.world_size
    pats = [s.strip() for s in args.ttt_params.split(",") if s.strip()]
    params = [p for n, p in model.named_parameters() if not pats or any(s in n for s in pats)]
    if not params:
        raise SystemExit(f"TTT_PARAMS={args.ttt_params!r}: names no parameter of the model")
    base = [p.detach().clone() for p in params]
    opt = torch.optim.SGD(params, lr=args.ttt_lr, momentum=0.9)
    chunks = ttt_chunks(tokens.size - 1, args, stride)
    toks, byte_cum = torch.from_numpy(tokens.astype(np.int64)), byte_prefix(tokens, luts)
    acc = [torch.zeros((), dtype=torch.float64, device=rt.device), 0, 0]
    sync = torch.cuda.synchronize if rt.cuda else lambda: None
    updates, spent = 0, [0.0, 0.0]
    for c, windows in enumerate(chunks):
        t1 = time.perf_counter()
        net.eval()
        with torch.no_grad():
            score_batches(net, windows[rt.rank :: W], toks, byte_cum, stride, args, rt, acc, net is not model)
        if trace is not None:
            trace += [("score", updates, e - m + 1, e) for _, e, m in windows[rt.rank :: W]]
        sync()
        t2 = time.perf_counter()
        lo, hi = windows[0][1] - windows[0][2], windows[-1][1]
        starts = [max(0, min(a, hi - L)) for a in range(lo, hi, L)]  # whole sequences ending at or before hi
        mine = starts[rt.rank :: W]
        for g in opt.param_groups:
            g["lr"] = args.ttt_lr * 0.5 * (1 + math.cos(math.pi * c / max(len(chunks) - 1, 1)))
        for _ in range(args.ttt_epochs if c < len(chunks) - 1 else 0):
            if mine:
                x = torch.stack([toks[a : a + L] for a in mine]).to(rt.device)
                y = torch.stack([toks[a + 1 : a + L + 1] for a in mine]).to(rt.device)
                with torch.enable_grad(), autocast(rt):
                    (model(x, y, reduction="none").sum() / (len(starts) * L)).backward(inputs=params)
            for p in params:
                p.grad = torch.zeros_like(p) if p.grad is None else p.grad
                rt.all_reduce(p.grad)
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            if trace is not None:
                trace += [("update", updates, a, a + L) for a in starts]
            updates += 1
        if args.ttt_reset_chunks and (c + 1) % args.ttt_reset_chunks == 0:
            with torch.no_grad():
                torch._foreach_copy_(params, base)
            opt.state.clear()
        sync()
        spent = [spent[0] + t2 - t1, spent[1] + time.perf_counter() - t2]
    with torch.no_grad():
        torch._foreach_copy_(params, base)  # the model as it came
    model.train()
    return {
        **totals(acc, rt, t0),
        "ttt_score_s": spent[0],
        "ttt_train_s": spent[1],
        "ttt_chunks": len(chunks),
        "ttt_updates": updates,
        "ttt_params": sum(p.numel() for p in params),
    }


# ----------------------------------------------------------------------------------------------------------------
# Export: mixed-precision per-row quantization (clip search, GPTQ with training-data Hessians), the smallest of
# several compressor x layout encodings, magnitude pruning only as far as the cap needs; the artifact is
# self-describing and checksummed: MAGIC, codec id, crc32 and length of the raw payload, then the compressed payload.

CONTROL_PATTERNS = ("q_gain", "attn_scale", "mlp_scale", "resid_mix", "skip_weights", "smear.gate", "bigram.scale")
ARTIFACT_MAGIC = b"PGOLF\x02"
CODECS = ("zstd", "brotli", "xz")
LAYOUTS = ("plain", "shuffle", "packed", "packed_shuffle")  # shuffle: byte planes of multi-byte tensors
CLIP_RATIOS = tuple(1 - 0.02 * k for k in range(16))  # of each row's absmax; 1.0 (absmax) is always a candidate


def tensor_group(name: str, t: torch.Tensor, args: Hyperparameters) -> tuple[str, int]:
    """(group, bits) of a state tensor: int-N per-row matrices (attn, mlp, embed, matrix) or fp16 / fp32 floats."""
    if any(p in name for p in CONTROL_PATTERNS):
        return "control", 32
    if t.ndim == 2 and t.numel() > args.quant_keep_float_numel:
        if "emb" in name:
            return "embed", args.quant_bits_embed
        if ".mlp." in name:
            return "mlp", args.quant_bits_mlp or args.quant_bits_matrix
        return ("attn" if ".attn." in name else "matrix"), args.quant_bits_matrix
    return "fp16", 16


def row_scales(w: torch.Tensor, qmax: int, weight: torch.Tensor | None = None, search: bool = True) -> torch.Tensor:
    """Per-row scales (fp16-representable): the clip ratio with the smallest squared rounding error per row,
    weighted per column by `weight` (the Hessian diagonal) when given."""
    amax = w.abs().amax(1, keepdim=True)
    best_s, best_e = None, None
    for r in CLIP_RATIOS if search else (1.0,):
        s = (amax * r / qmax).clamp_min(2**-24).half().float()
        e = (w - (w / s).round().clamp(-qmax, qmax) * s).square()
        e = (e if weight is None else e * weight).sum(1, keepdim=True)
        if best_s is None:
            best_s, best_e = s, e
        else:
            better = e < best_e
            best_s, best_e = torch.where(better, s, best_s), torch.where(better, e, best_e)
    return best_s


def gptq_quantize(w: torch.Tensor, H: torch.Tensor, s: torch.Tensor, qmax: int, block: int, damp: float):
    """GPTQ with fixed per-row scales `s`: columns in descending Hessian-diagonal order, each rounded, its error spread
    over the not yet rounded columns through the Cholesky factor of the damped inverse Hessian."""
    W, H = w.clone().double(), H.clone().double()
    dead = H.diag() == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    perm = torch.argsort(H.diag(), descending=True)
    W, H = W[:, perm], H[perm][:, perm]
    H += damp * H.diag().mean() * torch.eye(H.size(0), device=H.device)
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    Q = torch.zeros_like(W)
    for i in range(0, W.size(1), block):
        j2 = min(i + block, W.size(1))
        W1, E1, H1 = W[:, i:j2].clone(), torch.zeros_like(W[:, i:j2]), Hinv[i:j2, i:j2]
        for j in range(j2 - i):
            q = (W1[:, j : j + 1] / s).round().clamp(-qmax, qmax)
            Q[:, i + j] = q[:, 0]
            err = (W1[:, j : j + 1] - q * s) / H1[j, j]
            W1[:, j:] -= err * H1[j : j + 1, j:]
            E1[:, j] = err[:, 0]
        W[:, j2:] -= E1 @ Hinv[i:j2, j2:]
    return Q[:, torch.argsort(perm)].to(torch.int8)


def hessian_for(name: str, hessians: dict | None) -> torch.Tensor | None:
    """c_k and c_v read c_q's input: one Hessian serves all three."""
    return (hessians or {}).get(name.replace(".c_k.", ".c_q.").replace(".c_v.", ".c_q."))


def quantize_state(state: dict[str, torch.Tensor], args: Hyperparameters, hessians: dict | None = None, device="cpu"):
    """Returns (payload, group of each tensor). payload: q (int8 values), scales (fp16 per row), bits, floats; on the
    CPU. The clip search and GPTQ run on `device` (the quantize stage: CUDA when present, seconds instead of minutes);
    each device gives the same codes run to run (GPTQ in float64), and CPU and GPU agree unless a weight lies within
    float64 rounding of a rounding boundary (benchmarks/overhead_gpu.sh compares the two artifacts)."""
    payload, groups = {"q": {}, "scales": {}, "bits": {}, "floats": {}}, {}
    for name, t in state.items():
        t = t.detach().float().to(device)
        groups[name], bits = tensor_group(name, t, args)
        if bits >= 16:
            payload["floats"][name] = (t if bits == 32 else t.half()).cpu()
            continue
        qmax, H = 2 ** (bits - 1) - 1, hessian_for(name, hessians) if args.gptq else None
        H = None if H is None else H.to(device)
        s = row_scales(t, qmax, None if H is None else H.diag().float()[None], args.quant_clip_search)
        if H is not None:
            q = gptq_quantize(t, H, s, qmax, args.gptq_block, args.gptq_damp)
        else:
            q = (t / s).round().clamp(-qmax, qmax).to(torch.int8)
        payload["q"][name], payload["scales"][name], payload["bits"][name] = q.cpu(), s.squeeze(1).half().cpu(), bits
    return payload, groups


def dequantize_state(payload: dict) -> dict[str, torch.Tensor]:
    state = {name: q.float() * payload["scales"][name].float()[:, None] for name, q in payload["q"].items()}
    state.update({name: t.float() for name, t in payload["floats"].items()})
    return state


def prune_order(payload: dict) -> list[tuple[str, torch.Tensor]]:
    """The nonzero quantized values of the attention/MLP matrices (embeddings excluded), as (name, flat index),
    smallest dequantized magnitude first: pruning fraction f zeroes the first f of them."""
    names = [n for n in payload["q"] if "emb" not in n]
    mags = [(payload["q"][n].float() * payload["scales"][n].float()[:, None]).abs().flatten() for n in names]
    owner = torch.cat([torch.full((m.numel(),), i) for i, m in enumerate(mags)])
    flat_idx = torch.cat([torch.arange(m.numel()) for m in mags])
    mags = torch.cat(mags)
    nz = mags > 0
    order = torch.argsort(mags[nz], stable=True)
    return names, owner[nz][order], flat_idx[nz][order]


def prune(payload: dict, order, frac: float) -> dict:
    names, owner, flat_idx = order
    k = int(round(frac * owner.numel()))
    q = dict(payload["q"])
    for i, n in enumerate(names):
        idx = flat_idx[:k][owner[:k] == i]
        if idx.numel():
            q[n] = q[n].clone()
            q[n].view(-1)[idx] = 0
    return {**payload, "q": q}


def smallest_fit(fits, max_frac: float, steps: int = 12) -> float | None:
    """The smallest fraction k * max_frac / 2**steps for which fits(fraction) holds, by bisection (fits is assumed
    monotone); None when even max_frac does not fit."""
    lo, hi = 0, 2**steps
    if fits(0.0):
        return 0.0
    if not fits(max_frac):
        return None
    while hi - lo > 1:  # fits(hi) is true, fits(lo) false
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if fits(mid * max_frac / 2**steps) else (mid, hi)
    return hi * max_frac / 2**steps


def pack_bits(q: np.ndarray, bits: int) -> bytes:
    u = (q.astype(np.int16) + (1 << (bits - 1))).astype(np.uint8)  # -qmax..qmax -> 1..2^bits-1
    return np.packbits(np.unpackbits(u[:, None], axis=1)[:, 8 - bits :]).tobytes()


def unpack_bits(raw: bytes, bits: int, n: int) -> np.ndarray:
    b = np.unpackbits(np.frombuffer(raw, np.uint8))[: n * bits].reshape(n, bits)
    return (np.packbits(np.pad(b, ((0, 0), (8 - bits, 0))), axis=1)[:, 0].astype(np.int16) - (1 << (bits - 1))).astype(
        np.int8
    )


def serialize(payload: dict, meta: dict, layout: str) -> bytes:
    """u32 header length, JSON header (meta + one [name, role, dtype, shape, bits, nbytes] per tensor), tensor bytes."""
    entries, blobs = [], []

    def add(name, role, t, bits=0):
        a = t.contiguous().numpy()
        raw = pack_bits(a.ravel(), bits) if role == "q" and "packed" in layout else a.tobytes()
        if "shuffle" in layout and a.itemsize > 1:
            raw = np.frombuffer(raw, np.uint8).reshape(-1, a.itemsize).T.tobytes()
        entries.append([name, role, str(a.dtype), list(a.shape), bits, len(raw)])
        blobs.append(raw)

    for name, q in payload["q"].items():
        add(name, "q", q, payload["bits"][name])
        add(name, "scale", payload["scales"][name])
    for name, t in payload["floats"].items():
        add(name, "float", t)
    header = json.dumps({**meta, "layout": layout, "tensors": entries}).encode()
    return len(header).to_bytes(4, "little") + header + b"".join(blobs)


def deserialize(raw: bytes) -> tuple[dict, dict]:
    n = int.from_bytes(raw[:4], "little")
    meta = json.loads(raw[4 : 4 + n])
    payload, pos = {"q": {}, "scales": {}, "bits": {}, "floats": {}}, 4 + n
    for name, role, dtype, shape, bits, nbytes in meta["tensors"]:
        buf, pos = raw[pos : pos + nbytes], pos + nbytes
        dt, count = np.dtype(dtype), math.prod(shape)
        if "shuffle" in meta["layout"] and dt.itemsize > 1:
            buf = np.frombuffer(buf, np.uint8).reshape(dt.itemsize, -1).T.tobytes()
        a = unpack_bits(buf, bits, count) if role == "q" and "packed" in meta["layout"] else np.frombuffer(buf, dt)
        t = torch.from_numpy(a.copy()).view(shape)
        if role == "q":
            payload["q"][name], payload["bits"][name] = t, bits
        else:
            payload["scales" if role == "scale" else "floats"][name] = t
    if pos != len(raw):
        raise ValueError(f"payload holds {len(raw)} bytes, its header describes {pos}")
    return meta, payload


def compress_chunk(chunk: bytes, codec: str, args: Hyperparameters) -> bytes:
    if codec == "zstd":
        return zstandard.ZstdCompressor(level=args.compress_level).compress(chunk)
    if codec == "brotli":
        return brotli.compress(chunk, quality=11, lgwin=24)
    return lzma.compress(chunk, preset=9 | lzma.PRESET_EXTREME)


def split_chunks(raw: bytes, args: Hyperparameters) -> list[bytes]:
    step = args.compress_chunk or len(raw) or 1
    return [raw[i : i + step] for i in range(0, max(len(raw), 1), step)]


def frame_chunks(parts: list[bytes]) -> bytes:
    return len(parts).to_bytes(4, "little") + b"".join(len(c).to_bytes(4, "little") + c for c in parts)


def compress(raw: bytes, codec: str, args: Hyperparameters) -> bytes:
    """`raw` in COMPRESS_CHUNK-byte chunks compressed in parallel threads (zstd, brotli and lzma release the GIL;
    brotli 11 on a whole model takes minutes on one core): u32 chunk count, then u32 length + bytes per chunk. Each
    chunk's bytes depend on the chunk alone, never on the thread count."""
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        return frame_chunks(list(pool.map(lambda c: compress_chunk(c, codec, args), split_chunks(raw, args))))


def decompress(body: bytes, codec: str) -> bytes:
    out, pos = [], 4
    for _ in range(int.from_bytes(body[:4], "little")):
        n = int.from_bytes(body[pos : pos + 4], "little")
        chunk, pos = body[pos + 4 : pos + 4 + n], pos + 4 + n
        if len(chunk) != n:
            raise ValueError("chunk cut short")
        if codec == "zstd":
            out.append(zstandard.ZstdDecompressor().decompressobj().decompress(chunk))
        else:
            out.append({"brotli": brotli, "xz": lzma}[codec].decompress(chunk))
    if pos != len(body):
        raise ValueError(f"{len(body) - pos} trailing bytes")
    return b"".join(out)


def artifact_head(raw: bytes, codec: str) -> bytes:
    return (
        ARTIFACT_MAGIC
        + bytes([CODECS.index(codec)])
        + zlib.crc32(raw).to_bytes(4, "little")
        + len(raw).to_bytes(8, "little")
    )


def encode(payload: dict, meta: dict, codec: str, layout: str, args: Hyperparameters) -> bytes:
    raw = serialize(payload, meta, layout)
    return artifact_head(raw, codec) + compress(raw, codec, args)


def decode(blob: bytes, path: str) -> tuple[dict, dict, str]:
    """(meta, payload, codec) of an artifact's bytes; anything wrong is an error naming the file and the problem."""
    if blob[:6] != ARTIFACT_MAGIC:
        raise SystemExit(f"{path}: not a pgolf artifact (header {blob[:6].hex()}, expected {ARTIFACT_MAGIC.hex()})")
    if len(blob) < 19 or blob[6] >= len(CODECS):
        raise SystemExit(f"{path}: corrupted or truncated artifact (bad header)")
    codec, crc, size = CODECS[blob[6]], int.from_bytes(blob[7:11], "little"), int.from_bytes(blob[11:19], "little")
    lib = {"zstd": zstandard, "brotli": brotli, "xz": lzma}[codec]
    if lib is None:
        raise SystemExit(f"{path}: {codec} artifact but the {codec} module is not installed")
    try:
        raw = decompress(blob[19:], codec)
    except Exception as e:
        raise SystemExit(f"{path}: corrupted or truncated artifact ({codec}: {type(e).__name__}: {e})") from None
    if len(raw) != size or zlib.crc32(raw) != crc:
        raise SystemExit(f"{path}: corrupted or truncated artifact (payload length/checksum mismatch)")
    try:
        meta, payload = deserialize(raw)
    except Exception as e:
        raise SystemExit(f"{path}: corrupted artifact payload ({type(e).__name__}: {e})") from None
    if meta.get("format") != ARTIFACT_FORMAT:
        raise SystemExit(f"{path}: not a {ARTIFACT_FORMAT} artifact (format {meta.get('format')!r})")
    return meta, payload, codec


def choices(value: str, allowed: tuple, what: str) -> list[str]:
    if value != "auto" and value not in allowed:
        raise SystemExit(f"{what}={value!r}: expected auto or one of {', '.join(allowed)}")
    return list(allowed) if value == "auto" else [value]


def artifact_meta(args: Hyperparameters) -> dict:
    """The artifact's header: its format, the architecture (what the evaluation builds) and the export's bit width."""
    return {"format": ARTIFACT_FORMAT, "model": args.model(), "quant": {"bits_matrix": args.quant_bits_matrix}}


ENCODE_MARGIN = 0.005  # a candidate estimated within 0.5% of the chosen one's estimate is encoded in full too
CODEC_COST = {"brotli": 0, "xz": 1, "zstd": 2}  # slowest first, so the threads finish together


def sample_chunks(n: int, k: int) -> list[int]:
    """k of n chunk indices: the first and the last (the header and embeddings, the float tensors: unlike the rest)
    and k - 2 evenly spaced between them (the middle of each of k - 2 equal parts); all n when k is 0 or >= n."""
    if k <= 0 or k >= n:
        return list(range(n))
    inner = [1 + (2 * i + 1) * (n - 2) // (2 * (k - 2)) for i in range(k - 2)] if k > 2 else []
    return sorted({0, n - 1, *inner})


def payload_spans(raw: bytes) -> list[tuple[int, int]]:
    """(offset, length) of a serialized payload's header and of each tensor's bytes, in order (the same entries in
    every layout, only their lengths differ)."""
    n = int.from_bytes(raw[:4], "little")
    spans, pos = [(0, 4 + n)], 4 + n
    for entry in json.loads(raw[4 : 4 + n])["tensors"]:
        spans.append((pos, entry[5]))
        pos += entry[5]
    return spans


def aligned_samples(raws: dict[str, bytes], step: int, k: int) -> dict[str, list[int]]:
    """Per layout, the chunks to compress to rank the candidates: k evenly spaced chunks of the longest payload, and
    in the others the chunks holding the same places (same tensor, same fraction of it), so that every layout is
    estimated from the same weights; every chunk when k is 0 or the payload has no more than k."""
    n_chunks = {lay: max(1, -(-len(raw) // step)) for lay, raw in raws.items()}
    ref = max(raws, key=lambda lay: len(raws[lay]))
    if k <= 0 or k >= n_chunks[ref]:
        return {lay: list(range(n)) for lay, n in n_chunks.items()}
    ref_spans = payload_spans(raws[ref])
    points = []  # (entry, fraction of it) at the middle of each reference chunk sampled
    for i in sample_chunks(n_chunks[ref], k)[1:-1]:
        mid = min(i * step + step // 2, len(raws[ref]) - 1)
        j = max(e for e, (start, _) in enumerate(ref_spans) if start <= mid)
        points.append((j, (mid - ref_spans[j][0]) / max(ref_spans[j][1], 1)))
    out = {}
    for lay, raw in raws.items():
        spans = ref_spans if lay == ref else payload_spans(raw)
        inner = {min(int(spans[j][0] + f * spans[j][1]) // step, n_chunks[lay] - 1) for j, f in points}
        out[lay] = sorted({0, n_chunks[lay] - 1, *inner})
    return out


def choose_encoding(payload: dict, meta: dict, codecs: list, layouts: list, args: Hyperparameters, rt: Runtime):
    """The smallest codec x layout encoding of `payload`, without compressing every candidate in full. Chunks are
    compressed independently, so a chunk's compressed size is exact whatever else is encoded: ENCODE_SAMPLE_CHUNKS
    chunks of each candidate's payload (the first, the last and evenly spaced ones between, at the same weights in
    every layout: `aligned_samples`) are compressed and its size estimated from them (the first and last as they are,
    the rest from the compressed/raw ratio of the others, plus the framing). The best estimate, and every candidate
    estimated within ENCODE_MARGIN of it, are encoded in full (the sampled chunks reused), again while another's
    estimate is within ENCODE_MARGIN of the smallest full one's estimate, and the smallest full one is kept: the
    choice is never larger than a candidate encoded in full, and every other was estimated more than ENCODE_MARGIN
    above the chosen one's estimate (the log says so, with the finalists' estimate errors). ENCODE_SAMPLE_CHUNKS=0,
    or a payload of no more chunks than that, encodes every candidate in full. The sizes, and so the choice and the
    bytes, depend on the payload alone (never on the thread count); ties go to the first in CODECS x LAYOUTS order.
    Returns (codec, layout, artifact bytes, {"codec/layout": {"bytes" (full or estimated), "full", "estimate",
    "chunks", "sampled"}})."""
    t0 = time.perf_counter()
    raws = {lay: serialize(payload, meta, lay) for lay in layouts}
    chunks = {lay: split_chunks(raw, args) for lay, raw in raws.items()}
    cands = [(c, lay) for c in codecs for lay in layouts]
    picks = aligned_samples(
        raws, args.compress_chunk or max(len(r) for r in raws.values()) or 1, args.encode_sample_chunks
    )
    if any(len(picks[lay]) > len(chunks[lay]) or picks[lay][-1] >= len(chunks[lay]) for lay in layouts):
        raise AssertionError(f"sampled chunks {picks} beyond the payloads' {[len(c) for c in chunks.values()]}")
    parts: dict[tuple[str, str, int], bytes] = {}

    def run(jobs) -> None:
        jobs = sorted((j for j in jobs if j not in parts), key=lambda j: CODEC_COST[j[0]])
        with ThreadPoolExecutor(os.cpu_count()) as pool:
            parts.update(
                zip(jobs, pool.map(lambda j: compress_chunk(chunks[j[1]][j[2]], j[0], args), jobs), strict=True)
            )

    def framed(c: str, lay: str, idx) -> int:  # bytes of the artifact head + chunk framing + the chunks idx
        return 19 + 4 + 4 * len(chunks[lay]) + sum(len(parts[c, lay, i]) for i in idx)

    run([(c, lay, i) for c, lay in cands for i in picks[lay]])
    est = {}
    for c, lay in cands:  # the first and last chunks as they are, the middle from the ratio of its sampled chunks
        ends = [i for i in picks[lay] if i in (0, len(chunks[lay]) - 1)]
        inner = [i for i in picks[lay] if i not in ends] or picks[lay]
        ends = [i for i in ends if i not in inner]
        rest = len(raws[lay]) - sum(len(chunks[lay][i]) for i in ends)
        ratio = sum(len(parts[c, lay, i]) for i in inner) / sum(len(chunks[lay][i]) for i in inner)
        est[c, lay] = framed(c, lay, ends) + round(ratio * rest)
    full = {k: framed(*k, picks[k[1]]) for k in cands if len(picks[k[1]]) == len(chunks[k[1]])}
    order = {k: n for n, k in enumerate(cands)}
    best = min(cands, key=lambda k: (est[k], order[k]))
    while True:  # the estimates compared with the estimates (they share the sample's bias, which the full sizes lack)
        more = [k for k in cands if k not in full and est[k] <= est[best] * (1 + ENCODE_MARGIN)]
        if not more:
            break
        run([(c, lay, i) for c, lay in more for i in range(len(chunks[lay]))])
        full.update({k: framed(*k, range(len(chunks[k[1]]))) for k in more})
        best = min(full, key=lambda k: (full[k], order[k]))  # another finalist may prove smaller: compare with it
    codec, layout = best
    blob = artifact_head(raws[layout], codec) + frame_chunks(
        [parts[codec, layout, i] for i in range(len(chunks[layout]))]
    )
    assert len(blob) == full[codec, layout]
    report = {
        f"{c}/{lay}": {
            "bytes": full.get((c, lay), est[c, lay]),
            "full": (c, lay) in full,
            "estimate": est[c, lay],
            "chunks": len(chunks[lay]),
            "sampled": len(chunks[lay]) if (c, lay) in full else len(picks[lay]),
        }
        for c, lay in cands
    }
    shown = sorted(cands, key=lambda k: (full.get(k, est[k]), order[k]))
    rt.log(
        "encodings: "
        + " ".join(f"{c}/{lay}:{'' if (c, lay) in full else '~'}{full.get((c, lay), est[c, lay])}" for c, lay in shown)
    )
    sampled = sorted({len(picks[lay]) for lay in layouts})
    n_chunks = sorted({len(chunks[lay]) for lay in layouts})
    errors = " ".join(
        f"{c}/{lay}:{(est[c, lay] - n) / n:+.2%}" for (c, lay), n in full.items() if len(picks[lay]) < len(chunks[lay])
    )
    rt.log(
        f"encoding_choice: {codec}/{layout} {len(blob)} bytes (the smallest of {len(full)} encoded in full; "
        f"{len(cands) - len(full)} others, estimated (~) from {'/'.join(map(str, sampled))} of "
        f"{'/'.join(map(str, n_chunks))} chunks, each more than {ENCODE_MARGIN:.1%} above its estimate "
        f"~{est[codec, layout]}) time:{time.perf_counter() - t0:.1f}s" + (f" estimate_error:{errors}" if errors else "")
    )
    return codec, layout, blob, report


def export_artifact(state: dict, args: Hyperparameters, path: str, rt: Runtime, hessians=None, code_file=None) -> dict:
    """Quantize, pick the smallest encoding, prune only if the cap needs it, write `path` atomically; log and
    return the size report (per group: tensors, params, bits; no group is compressed alone again: that cost one more
    full encoding, seconds per seed on the pod's critical path)."""
    t0 = time.perf_counter()
    use_h = bool(args.gptq and hessians)
    rt.log(f"gptq:{'on' if use_h else 'off'}" + ("" if use_h or not args.gptq else " (no Hessians: clip search only)"))
    payload, groups = quantize_state(state, args, hessians if use_h else None, rt.device)
    meta = artifact_meta(args)
    codecs = [
        c for c in choices(args.compressor, CODECS, "COMPRESSOR") if {"zstd": zstandard, "brotli": brotli}.get(c, 1)
    ]
    if not codecs:
        raise SystemExit(f"COMPRESSOR={args.compressor}: module not installed")
    layouts = choices(args.quant_layout, LAYOUTS, "QUANT_LAYOUT")
    t_choice = time.perf_counter()
    codec, layout, blob, encodings = choose_encoding(payload, meta, codecs, layouts, args, rt)
    t_choice = time.perf_counter() - t_choice
    code_bytes = os.path.getsize(code_file or __file__)
    frac = 0.0
    mlp_bits = args.quant_bits_mlp or args.quant_bits_matrix
    if code_bytes + len(blob) > ARTIFACT_CAP_BYTES and 0 < args.quant_fit_mlp_bits < mlp_bits:
        rt.log(f"fit_cap: {code_bytes + len(blob)} bytes at int{mlp_bits} MLP; MLP now int{args.quant_fit_mlp_bits}")
        args = args.replace(quant_bits_mlp=args.quant_fit_mlp_bits)  # this export only
        payload, groups = quantize_state(state, args, hessians if use_h else None, rt.device)
        blob = encode(payload, meta, codec, layout, args)
    if code_bytes + len(blob) > ARTIFACT_CAP_BYTES and args.prune_max_frac > 0:
        # nothing to prune (every matrix kept in float): no search, the setting to lower named
        order = any("emb" not in n for n in payload["q"]) and prune_order(payload)
        fit = lambda f: (
            code_bytes + len(encode(prune(payload, order, f), meta, codec, layout, args)) <= ARTIFACT_CAP_BYTES
        )
        found = order and smallest_fit(fit, args.prune_max_frac)
        if found is None or not order:
            msg = (
                f"artifact over the cap even with PRUNE_MAX_FRAC={args.prune_max_frac} of the quantized matrix "
                f"weights pruned: code {code_bytes} + model {len(blob)} > {ARTIFACT_CAP_BYTES} bytes"
                + ("" if order else "; none to prune: lower QUANT_KEEP_FLOAT_NUMEL")
            )
            rt.log(f"ERROR: {msg}")
            raise SystemExit(msg)
        frac, payload = found, prune(payload, order, found)
        blob = encode(payload, meta, codec, layout, args)
        rt.log(f"prune_to_fit: fraction:{frac:.6f} of nonzero matrix weights zeroed -> model {len(blob)} bytes")
    write_atomic(path, lambda f: f.write(blob), "artifact")
    report, raw = {}, serialize(payload, meta, layout)
    for g in sorted(set(groups.values())):
        names = {n for n, gg in groups.items() if gg == g}
        bits = sorted({tensor_group(n, state[n], args)[1] for n in names})
        report[g] = {
            "tensors": len(names),
            "params": sum(state[n].numel() for n in names),
            "bits": bits[0] if len(bits) == 1 else bits,
        }
    tag = f"int{args.quant_bits_matrix}_{codec}"
    total = code_bytes + len(blob)
    rt.log(f"quant_groups:{json.dumps(report, sort_keys=True)}")
    rt.log(
        f"Serialized model {tag}: {len(blob)} bytes (raw payload {len(raw)} bytes, {codec}/{layout}, pruned {frac:.6f})"
    )
    rt.log(f"Code size: {code_bytes} bytes")
    rt.log(f"Total submission size {tag}: {total} bytes")
    if total > ARTIFACT_CAP_BYTES:
        msg = f"artifact over the cap: {total} > {ARTIFACT_CAP_BYTES} bytes (code {code_bytes} + model {len(blob)})"
        rt.log(f"WARNING: {msg}")
        if args.enforce_cap:
            raise SystemExit(msg)
    return {
        "artifact_bytes": len(blob),
        "code_bytes": code_bytes,
        "bytes_total": total,
        "quant_tag": tag,
        "compressor": codec,
        "layout": layout,
        "encodings": encodings,
        "encoding_choice_s": t_choice,
        "gptq": use_h,
        "prune_frac": frac,
        "groups": report,
        "quantize_time_s": time.perf_counter() - t0,
    }


def read_artifact(path: str, device) -> tuple[dict, dict, str]:
    """(meta, state, codec) of the artifact file; a truncated, corrupted or foreign file is an error naming it."""
    try:
        blob = Path(path).read_bytes()
    except FileNotFoundError:
        raise SystemExit(f"{path}: artifact not found") from None
    meta, payload, codec = decode(blob, path)
    return meta, {k: v.to(device) for k, v in dequantize_state(payload).items()}, codec


def load_artifact(path: str, device) -> tuple[dict, dict, str]:
    """(architecture, state, codec) of the artifact file."""
    meta, state, codec = read_artifact(path, device)
    return meta["model"], state, codec


def model_from_artifact(path: str, args: Hyperparameters, rt: Runtime) -> tuple[GPT, str, Hyperparameters]:
    """(model, quant tag, the hyperparameters with the artifact's architecture): the artifact decides the model."""
    meta, state, codec = read_artifact(path, rt.device)
    qtag = f"int{meta.get('quant', {}).get('bits_matrix', '?')}_{codec}"
    args = args.with_model(meta["model"], path)
    model = GPT(args, attention_backend(rt, args)).to(rt.device)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise SystemExit(f"{path}: artifact does not match the architecture it declares ({e})") from None
    if missing or unexpected:
        raise SystemExit(f"{path}: artifact does not match the architecture (missing {missing}, extra {unexpected})")
    return model, qtag, args


@torch.no_grad()
def collect_hessians(model: nn.Module, batches) -> dict[str, torch.Tensor]:
    """{linear weight name: mean x^T x} over the inputs of the blocks' CastedLinears (c_k/c_v share c_q's), from an
    eager forward of each (x, y) batch (run it under the caller's autocast)."""
    hs, hooks, n = {}, [], 0

    def hook(key):
        def fn(mod, inp, out):
            x = inp[0].detach().reshape(-1, inp[0].size(-1)).float()
            with torch.autocast(x.device.type, enabled=False):  # fp32 sums, also under the caller's bf16 autocast
                hs[key] = hs[key].addmm_(x.T, x) if key in hs else x.T @ x

        return fn

    for name, m in model.named_modules():  # q, k and v are one fused product: their input is the attention's
        if isinstance(m, Attention):
            hooks.append(m.register_forward_hook(hook(name + ".c_q.weight")))
        elif isinstance(m, CastedLinear) and name.startswith("blocks.") and not name.endswith((".c_q", ".c_k", ".c_v")):
            hooks.append(m.register_forward_hook(hook(name + ".weight")))
    try:
        for x, y in batches:
            model(x, y)
            n += x.numel()
    finally:
        for h in hooks:
            h.remove()
    return {k: v / max(n, 1) for k, v in hs.items()}


def calibrate(model: GPT, loader, micro_tokens: int, args: Hyperparameters, rt: Runtime, summary: dict) -> dict:
    """GPTQ Hessians from GPTQ_CALIB_BATCHES fresh training micro-batches per rank (averaged over ranks), timed: this
    reads training data, so it runs inside the training budget (main() reserves GPTQ_RESERVE_SECONDS for it)."""
    t0 = time.perf_counter()
    with autocast(rt):
        batches = (loader.next_batch(micro_tokens, args.train_seq_len) for _ in range(args.gptq_calib_batches))
        hs = collect_hessians(model, batches)
    for h in hs.values():
        rt.all_reduce(h).div_(rt.world_size)
    if rt.cuda:
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    tokens = args.gptq_calib_batches * micro_tokens * rt.world_size
    rt.log(f"gptq_hessians: layers:{len(hs)} tokens:{tokens} time:{dt:.2f}s gptq_reserve_s:{args.gptq_reserve_seconds}")
    if args.max_wallclock_seconds > 0 and dt > args.gptq_reserve_seconds:
        rt.log(f"WARNING: Hessian collection took {dt:.2f}s, over GPTQ_RESERVE_SECONDS={args.gptq_reserve_seconds}")
    summary.update(gptq_calib_time_s=dt, gptq_calib_tokens=tokens, gptq_reserve_s=args.gptq_reserve_seconds)
    return {k: v.cpu() for k, v in hs.items()}


# ----------------------------------------------------------------------------------------------------------------
# Training


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def maybe_compile(model: nn.Module, args: Hyperparameters, rt: Runtime) -> nn.Module:
    on = args.compile == "1" or (args.compile == "auto" and rt.cuda)
    if on:
        import torch._inductor.config as inductor

        if hasattr(inductor.triton, "mix_order_reduction"):
            # Inductor's "mix-order" kernels fuse each RMSNorm backward with the per-channel gradient sums over all
            # tokens (resid_mix, skips); on the H100 they ran at a fraction of memory speed (benchmarks/NOTES.md)
            inductor.triton.mix_order_reduction = False
    return torch.compile(model, dynamic=False) if on else model


def train(args: Hyperparameters, rt: Runtime) -> tuple[GPT, dict]:
    set_seed(args.seed)
    backend = attention_backend(rt, args)
    model = GPT(args, backend).to(rt.device)
    n_params = sum(p.numel() for p in model.parameters())
    rt.log(f"model_params:{n_params} attention_backend:{backend}")
    accum = args.grad_accum_steps or max(1, 8 // rt.world_size)
    micro_tokens, rem = divmod(args.train_batch_tokens, rt.world_size * accum)
    if rem or micro_tokens % args.train_seq_len:
        raise SystemExit(
            f"TRAIN_BATCH_TOKENS={args.train_batch_tokens} must split into world_size({rt.world_size}) x "
            f"grad_accum({accum}) micro-batches of whole TRAIN_SEQ_LEN={args.train_seq_len} sequences"
        )
    rt.log(f"world_size:{rt.world_size} grad_accum_steps:{accum} micro_batch_tokens:{micro_tokens}")
    compiled = maybe_compile(model, args, rt)
    ddp = (
        DDP(compiled, device_ids=[rt.local_rank] if rt.cuda else None, broadcast_buffers=False)  # qat_on is global
        if (rt.distributed)
        else compiled
    )
    optimizers = build_optimizers(model, args, rt)
    muon = optimizers[1]
    loader = DistributedTokenLoader(args.train_files, rt)
    val_tokens, luts = load_val(args, rt)

    def step_fn(step: int, elapsed_ms: float) -> tuple[torch.Tensor, float]:
        """One optimizer step; returns the mean training loss as a device tensor (read only when logged, so the host
        does not wait for the GPU here) and the LR scale."""
        scale = lr_scale(step, elapsed_ms, args)
        frac = min(step / args.muon_momentum_warmup_steps, 1.0) if args.muon_momentum_warmup_steps else 1.0
        for group in muon.param_groups:
            group["momentum"] = (1 - frac) * args.muon_momentum_warmup_start + frac * args.muon_momentum
        for opt in optimizers:
            for group in opt.param_groups:
                group["lr"] = group["base_lr"] * scale
        loss_sum = torch.zeros((), device=rt.device)
        for micro in range(accum):
            x, y = loader.next_batch(micro_tokens, args.train_seq_len)
            sync = micro == accum - 1 or not rt.distributed
            ctx = ddp.no_sync() if not sync else contextlib.nullcontext()
            with ctx, autocast(rt):
                loss = ddp(x, y)
            (loss / accum).backward()
            loss_sum += loss.detach()
        if args.grad_clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip_norm)
        for opt in optimizers:
            opt.step()
        model.zero_grad(set_to_none=True)
        rt.all_reduce(loss_sum)
        return loss_sum / (accum * rt.world_size), scale

    # Compile/warm-up steps, then restore the initial state: the timed run starts from step 0 with warm kernels.
    if args.warmup_steps > 0:
        init_model = {k: v.detach().clone() for k, v in model.state_dict().items()}
        init_opt = [json.loads(json.dumps(o.state_dict()["param_groups"])) for o in optimizers]
        for s in range(args.warmup_steps):
            step_fn(0, 0.0)
            rt.log(f"warmup_step:{s + 1}/{args.warmup_steps} time:{time.perf_counter() - PROCESS_START:.1f}s")
        model.load_state_dict(init_model)
        for opt, groups in zip(optimizers, init_opt, strict=True):
            opt.state.clear()
            for g, saved in zip(opt.param_groups, groups, strict=True):
                g.update({k: v for k, v in saved.items() if k != "params"})
        loader = DistributedTokenLoader(args.train_files, rt)

    params = list(model.parameters())
    ema = [p.detach().float().clone() for p in params] if args.ema_enabled else None
    qat_on, stopped_early, step = False, False, 0
    train_ms, loss = 0.0, None
    if rt.cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    startup_s = t0 - PROCESS_START
    rt.log(f"startup_time:{startup_s:.1f}s (imports, data, model, compile and warm-up before the timed steps)")
    while step < args.iterations:
        loss, scale = step_fn(step, train_ms)
        step += 1
        if ema is not None:
            with torch.no_grad():
                torch._foreach_lerp_(ema, [p.detach().float() for p in params], 1 - args.ema_decay)
        if args.late_qat and not qat_on and scale < args.qat_threshold:
            model.set_qat(True)
            qat_on = True
            rt.log(f"late_qat:enabled step:{step} scale:{scale:.4f}")
        if rt.cuda:
            torch.cuda.synchronize()
        train_ms = 1000.0 * (time.perf_counter() - t0)
        if step <= 10 or step % args.train_log_every == 0 or step == args.iterations:
            rt.log(
                f"step:{step}/{args.iterations} train_loss:{loss.item():.4f} train_time:{train_ms:.0f}ms "
                f"step_avg:{train_ms / step:.2f}ms"
            )
        if args.val_loss_every and step % args.val_loss_every == 0 and step < args.iterations:
            t_pause = time.perf_counter()
            r = evaluate(compiled, val_tokens, luts, args, rt, args.eval_seq_len)
            rt.log(
                f"step:{step}/{args.iterations} val_loss:{r['val_loss']:.4f} val_bpb:{r['val_bpb']:.4f} "
                f"train_time:{train_ms:.0f}ms step_avg:{train_ms / step:.2f}ms"
            )
            t0 += time.perf_counter() - t_pause  # evaluation is not training time
        # the wall-clock stop is decided identically on all ranks (rank 0's clock wins)
        cap = args.loop_seconds > 0 and train_ms >= 1000 * args.loop_seconds
        if rt.distributed:
            cap_t = torch.tensor([float(cap)], device=rt.device)
            dist.broadcast(cap_t, src=0)
            cap = cap_t.item() > 0
        if cap and step < args.iterations:
            stopped_early = True
            rt.log(f"stopping_early: wallclock_cap train_time:{train_ms:.0f}ms step:{step}/{args.iterations}")
            break
    if rt.cuda:
        rt.log(
            f"peak memory allocated: {torch.cuda.max_memory_allocated() // 2**20} MiB "
            f"reserved: {torch.cuda.max_memory_reserved() // 2**20} MiB"
        )
    live = evaluate(compiled, val_tokens, luts, args, rt, args.live_eval_stride or args.eval_seq_len)
    rt.log(
        f"step:{step}/{args.iterations} val_loss:{live['val_loss']:.4f} val_bpb:{live['val_bpb']:.4f} "
        f"train_time:{train_ms:.0f}ms step_avg:{train_ms / max(step, 1):.2f}ms"
    )
    summary = {
        "stage": "train",
        "steps": step,
        "train_time_s": train_ms / 1000,
        "step_avg_ms": train_ms / max(step, 1),
        "stopped_early": stopped_early,
        "live_val_loss": live["val_loss"],
        "live_val_bpb": live["val_bpb"],
        "final_train_loss": loss.item() if loss is not None else None,
        "world_size": rt.world_size,
        "grad_accum_steps": accum,
        "attention_backend": backend,
        "device": device_name(rt),
        "model_params": n_params,
        "seed": args.seed,
        "tokens_per_step": args.train_batch_tokens,
        "startup_s": startup_s,
        "flops_per_token": model_flops_per_token(args, args.train_seq_len),
    }
    if ema is not None:
        rt.log("ema:applying EMA weights")
        with torch.no_grad():
            for p, e in zip(params, ema, strict=True):
                p.copy_(e)
    model.set_qat(False)
    pre = evaluate(compiled, val_tokens, luts, args, rt, args.eval_seq_len)
    log_metric(rt, "pre_quant", pre)
    summary.update(pre_quant_val_loss=pre["val_loss"], pre_quant_val_bpb=pre["val_bpb"])
    if args.gptq_calib_batches > 0:  # GPTQ calibration on training data (see Export: calibrate)
        model.hessians = calibrate(model, loader, micro_tokens, args, rt, summary)
    return model, summary


# ----------------------------------------------------------------------------------------------------------------
# Stages


def stage_quantize(checkpoint: str, artifact: str, code_file: str | None, args: Hyperparameters, rt: Runtime) -> dict:
    """Quantize a `--stage train` checkpoint into the artifact: the architecture from the checkpoint, every other
    setting (bit widths, GPTQ, encodings, the cap) from this stage's own knobs."""
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    args = args.with_model(ckpt["model"], checkpoint)
    rt.log("model (from the checkpoint): " + json.dumps(args.model(), sort_keys=True))
    return {
        "stage": "quantize",
        "seed": args.seed,
        "knobs": args.as_dict(args.knobs("quantize")),
        **export_artifact(ckpt["state_dict"], args, artifact, rt, ckpt.get("hessians"), code_file),
    }


def stage_eval(artifact: str, args: Hyperparameters, rt: Runtime) -> dict:
    """Score the model reloaded from the artifact file: a plain roundtrip pass and the sliding-window pass."""
    t0 = time.perf_counter()
    model, qtag, args = model_from_artifact(artifact, args, rt)
    rt.log(f"eval artifact:{Path(artifact).name} attention_backend:{attention_backend(rt, args)}")
    val_tokens, luts = load_val(args, rt)
    net = maybe_compile(model, args, rt)
    strides = [args.eval_seq_len] + ([args.eval_stride] if args.eval_stride < args.eval_seq_len else [])
    load_s, compile_s = time.perf_counter() - t0, 0.0
    L, B = args.eval_seq_len, args.eval_batch_seqs
    ttt = [(B, L, L), (B, L, min(args.eval_stride, L))] if args.ttt_epochs else []  # its padded batches
    if net is not model:  # compiled: every batch shape of the scoring compiled first, so eval_time is the scoring
        compile_s, n_shapes = warm_up_eval(net, val_tokens.size - 1, args, rt, strides, ttt)
        rt.log(f"eval_compile: warm-up of {n_shapes} batch shapes (random tokens, no validation data) {compile_s:.1f}s")
    else:
        rt.log("eval_compile: off (eager)")
    rt.barrier()
    rt_res = evaluate(net, val_tokens, luts, args, rt, args.eval_seq_len)
    log_metric(rt, f"final_{qtag}_roundtrip", rt_res)
    out = {
        "stage": "eval",
        "quant_tag": qtag,
        "eval_stride": args.eval_stride,
        "eval_seq_len": args.eval_seq_len,
        "eval_batch_seqs": args.eval_batch_seqs,
        "val_tokens_limit": args.val_tokens_limit,
        "roundtrip_val_loss": rt_res["val_loss"],
        "roundtrip_val_bpb": rt_res["val_bpb"],
        "val_tokens": rt_res["tokens"],
        "val_bytes": rt_res["bytes"],
        "sliding_val_loss": None,
        "sliding_val_bpb": None,
        "ttt": args.as_dict([k for k in args.knobs("eval") if k[:4] == "ttt_"]) if args.ttt_epochs else None,
        "ttt_val_loss": None,
        "ttt_val_bpb": None,
        "world_size": rt.world_size,
        "attention_backend": attention_backend(rt, args),
    }
    score, scoring_s = rt_res, rt_res["eval_time_s"]
    if args.eval_stride < args.eval_seq_len:
        sw = evaluate(net, val_tokens, luts, args, rt, args.eval_stride)
        log_metric(rt, f"final_{qtag}_sliding_window", sw, f"stride:{args.eval_stride} ")
        out.update(sliding_val_loss=sw["val_loss"], sliding_val_bpb=sw["val_bpb"])
        score, scoring_s = sw, scoring_s + sw["eval_time_s"]
    if args.ttt_epochs:
        tt = evaluate_ttt(model, net, val_tokens, luts, args, rt, args.eval_stride)
        log_metric(rt, f"final_{qtag}_ttt", tt, f"stride:{args.eval_stride} ")
        rt.log("ttt_timing: " + " ".join(f"{k[4:]}:{v:.6g}" for k, v in tt.items() if k[:4] == "ttt_"))
        out.update(ttt_val_loss=tt["val_loss"], ttt_val_bpb=tt["val_bpb"], ttt_timing=tt)
        score, scoring_s = tt, scoring_s + tt["eval_time_s"]
    out.update(
        val_loss=score["val_loss"],
        val_bpb=score["val_bpb"],
        eval_time_s=scoring_s,  # the scoring passes alone, as the upstream records' total_eval_time
        compile_s=compile_s,
        load_s=load_s,
        eval_total_s=time.perf_counter() - t0,  # artifact, data and model loading + compile + scoring
    )
    rt.log(
        f"eval_timing: load:{load_s:.1f}s compile:{compile_s:.1f}s scoring:{scoring_s:.1f}s "
        f"total:{out['eval_total_s']:.1f}s"
    )
    rt.log(f"total_eval_time:{out['eval_time_s']:.1f}s")
    return out


def log_metric(rt: Runtime, tag: str, res: dict, extra: str = "") -> None:
    """The upstream records' pair of metric lines: rounded with the eval time, then exact."""
    rt.log(
        f"{tag} val_loss:{res['val_loss']:.4f} val_bpb:{res['val_bpb']:.4f} {extra}"
        f"eval_time:{1000 * res['eval_time_s']:.0f}ms"
    )
    rt.log(f"{tag}_exact val_loss:{res['val_loss']:.8f} val_bpb:{res['val_bpb']:.8f}")


def write_atomic(path: str, write, what: str) -> None:
    """write(f) into a temporary file beside `path`, then rename it over `path`; on any failure (a full disk among
    them) the temporary file is removed and the error names the file and what was left."""
    import errno
    import tempfile

    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        free = shutil.disk_usage(folder).free  # before the partial file is removed
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, (OSError, RuntimeError)):  # torch.save reports a failed write as RuntimeError
            full = getattr(e, "errno", None) == errno.ENOSPC or free < (1 << 20)
            why = f"no space left on device ({free} bytes free in {folder})" if full else f"{type(e).__name__}: {e}"
            raise SystemExit(f"{path}: could not write the {what}: {why}; nothing was written") from None
        raise


def write_summary(path: str | None, summary: dict, rt: Runtime) -> None:
    rt.log("pgolf_summary " + json.dumps(summary, sort_keys=True))
    if path and rt.master:
        write_atomic(
            path, lambda f: f.write((json.dumps(summary, indent=2, sort_keys=True) + "\n").encode()), "summary"
        )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stage", choices=("all", "train", "quantize", "eval"), default="all")
    p.add_argument("--checkpoint", help="train: where to save the exported (EMA) weights; quantize: what to read")
    p.add_argument("--artifact", help="quantize: where to write the compressed artifact; eval: what to score")
    p.add_argument("--logfile", help="log file (default logs/<RUN_ID>.txt)")
    p.add_argument("--summary", help="write this stage's summary as JSON here")
    p.add_argument("--code-file", help="quantize/all: the script whose bytes count (e.g. the packed one shipped)")
    cli = p.parse_args(argv)
    args = Hyperparameters.from_env()
    rt = Runtime()
    logfile = cli.logfile or os.path.join("logs", f"{args.run_id}.txt")
    if rt.master:
        os.makedirs(os.path.dirname(os.path.abspath(logfile)), exist_ok=True)
        rt.logfile = Path(logfile)
    log_environment(rt, args, cli.stage)
    rt.log(f"stage:{cli.stage} seed:{args.seed}")
    if cli.stage in ("train", "all") and args.max_wallclock_seconds > 0 and args.gptq_calib_batches > 0:
        if args.gptq_reserve_seconds >= args.max_wallclock_seconds:
            raise SystemExit(f"GPTQ_RESERVE_SECONDS={args.gptq_reserve_seconds} >= MAX_WALLCLOCK_SECONDS")
        rt.log(f"gptq_reserve_s:{args.gptq_reserve_seconds} training loop cap:{args.loop_seconds}s")
    try:
        if cli.stage == "train":
            if not cli.checkpoint:
                raise SystemExit("--stage train needs --checkpoint")
            model, summary = train(args, rt)
            if rt.master:
                ckpt = {
                    "state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
                    "model": args.model(),
                    "summary": summary,
                    "hessians": getattr(model, "hessians", None),
                }
                write_atomic(cli.checkpoint, lambda f: torch.save(ckpt, f), "checkpoint")
            write_summary(cli.summary, summary, rt)
        elif cli.stage == "quantize":
            if not (cli.checkpoint and cli.artifact):
                raise SystemExit("--stage quantize needs --checkpoint and --artifact")
            write_summary(cli.summary, stage_quantize(cli.checkpoint, cli.artifact, cli.code_file, args, rt), rt)
        elif cli.stage == "eval":
            if not cli.artifact:
                raise SystemExit("--stage eval needs --artifact")
            write_summary(cli.summary, stage_eval(cli.artifact, args, rt), rt)
        else:  # the challenge's single run: train, export, reload from disk, score
            model, summary = train(args, rt)
            artifact = cli.artifact or "final_model.ptz"
            if rt.master:
                hs = getattr(model, "hessians", None)
                summary.update(export_artifact(model.state_dict(), args, artifact, rt, hs, cli.code_file))
            rt.barrier()
            summary.update({k: v for k, v in stage_eval(artifact, args, rt).items() if k != "stage"})
            summary["stage"] = "all"
            write_summary(cli.summary, summary, rt)
        rt.barrier()  # every rank done before the process group goes (a rank torn down early has aborted gloo)
    finally:
        if rt.distributed and dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
