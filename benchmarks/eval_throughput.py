"""Sliding-window evaluation throughput of the training script's scorer on one GPU.

Builds the model (full 11-layer configuration unless overridden), exports it through the artifact path, reloads it
from disk as the eval stage does, compiles it, and scores a validation file twice at the given stride: the first
pass includes compilation, the second is the steady state. Prints scored tokens/s and the projected time for the full
validation split (about 62M tokens) on 8 GPUs. Weights are random: the work per token does not depend on them.

    python benchmarks/eval_throughput.py --val-files 'DIR/fineweb_val_*.bin' --tokenizer DIR/fineweb_1024_bpe.model
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from report import emit, load_script  # benchmarks/report.py, beside this script

FULL_VAL_TOKENS = 63_779_840  # the official sp1024 validation split, as the NaiveBaseline record log reports it


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--val-files", required=True)
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--stride", type=int, default=64)
    p.add_argument("--batch-seqs", type=int, default=32)
    p.add_argument("--gpus", type=int, default=8, help="GPUs for the projection")
    p.add_argument("--out")
    p.add_argument("env", nargs="*", help="KEY=VALUE hyperparameter overrides")
    a = p.parse_args()
    fixed = [f"VAL_FILES={a.val_files}", f"TOKENIZER_PATH={a.tokenizer}", f"EVAL_STRIDE={a.stride}"]
    mod = load_script([*a.env, *fixed, f"EVAL_BATCH_SEQS={a.batch_seqs}"])
    import sentencepiece as spm
    import torch

    if not torch.cuda.is_available():
        print("eval benchmark: no CUDA device", file=sys.stderr)
        return 2
    args, rt = mod.Hyperparameters.from_env(), mod.Runtime()
    torch.manual_seed(0)
    model = mod.GPT(args, mod.attention_backend(rt, args))
    with tempfile.TemporaryDirectory() as tmp:
        art = str(Path(tmp) / "model.ptz")
        mod.export_artifact(model.state_dict(), args, art, rt)
        t0 = time.perf_counter()
        model = mod.model_from_artifact(art, args, rt)[0]
        load_s = time.perf_counter() - t0
    net = mod.maybe_compile(model, args, rt)
    luts = mod.byte_luts(spm.SentencePieceProcessor(model_file=a.tokenizer), args.vocab_size)
    tokens = mod.load_val_tokens(args)
    first = mod.evaluate(net, tokens, luts, args, rt, a.stride)
    torch.cuda.synchronize()
    second = mod.evaluate(net, tokens, luts, args, rt, a.stride)
    tok_s = second["tokens"] / second["eval_time_s"]
    result = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "attention_backend": mod.attention_backend(rt, args),
        "layers": args.num_layers,
        "seq_len": args.eval_seq_len,
        "stride": a.stride,
        "batch_seqs": a.batch_seqs,
        "scored_tokens": second["tokens"],
        "artifact_load_s": round(load_s, 2),
        "first_pass_s_with_compile": round(first["eval_time_s"], 2),
        "steady_pass_s": round(second["eval_time_s"], 2),
        "scored_tokens_per_s": round(tok_s),
        "same_result_both_passes": abs(first["val_bpb"] - second["val_bpb"]) < 1e-9,
        f"projected_full_val_s_on_{a.gpus}_gpus": round(FULL_VAL_TOKENS / (a.gpus * tok_s), 1),
    }
    emit(result, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
