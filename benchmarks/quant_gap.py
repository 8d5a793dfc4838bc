"""Quantization gap: val_bpb of a checkpoint before quantization and of each method's artifact reloaded from disk.

Methods: `naive` (int6 absmax per-row, no clip search, no GPTQ, zstd-22 plain; xz when zstandard is missing) and
`ours` (the quantize step's defaults: clip search, GPTQ with the checkpoint's Hessians, or ones collected here from
--train-files when it has none, the smallest compressor x layout, prune-to-fit). Each artifact is written, reloaded
from the file alone and scored non-sliding (the March record's reference figure) and, when --stride < the eval
length, with sliding windows. Prints a table and writes JSON (--out). Runs on CPU with a tiny checkpoint too.

    python benchmarks/quant_gap.py --checkpoint ckpt.pt --val-files 'DIR/fineweb_val_*.bin' \
        --tokenizer DIR/fineweb_1024_bpe.model [--train-files 'DIR/fineweb_train_*.bin'] [--stride 64] \
        [--val-tokens 0] [--out gap.json] [KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from report import checkpoint_model, emit, load_script  # benchmarks/report.py, beside this script

NAIVE = dict(quant_clip_search=False, gptq=False, quant_layout="plain", prune_max_frac=0.0, quant_bits_mlp=0)


def gap(mod, checkpoint: str, train_files: str | None, stride: int, calib_batches: int = 8) -> dict:
    model, ckpt, rt, luts = checkpoint_model(mod, checkpoint)
    # report an over-cap artifact instead of failing
    args = mod.Hyperparameters.from_env().replace(enforce_cap=False).with_model(ckpt["model"], checkpoint)
    tokens = mod.load_val_tokens(args)

    def score(net) -> dict:
        out = {"val_bpb": mod.evaluate(net, tokens, luts, args, rt, args.eval_seq_len)["val_bpb"]}
        if stride < args.eval_seq_len:
            out["sliding_val_bpb"] = mod.evaluate(net, tokens, luts, args, rt, stride)["val_bpb"]
        return out

    hessians, source = ckpt.get("hessians"), "checkpoint"
    if not hessians and train_files:
        args, source = args.replace(train_files=train_files), f"{calib_batches} batches of {train_files}"
        loader = mod.DistributedTokenLoader(train_files, rt)
        with mod.autocast(rt):
            batches = (loader.next_batch(8 * args.train_seq_len, args.train_seq_len) for _ in range(calib_batches))
            hessians = mod.collect_hessians(model, batches)
    pre = score(model)
    rows = [{"method": "pre_quant", **pre}]
    naive_codec = "zstd" if mod.zstandard is not None else "xz"
    methods = {"naive": {**NAIVE, "compressor": naive_codec}, "ours": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, over in methods.items():
            a = args.replace(**over)
            path = str(Path(tmp) / f"{name}.ptz")
            s = mod.export_artifact(model.state_dict(), a, path, rt, hessians)
            back = mod.model_from_artifact(path, a, rt)[0]
            res = score(back)
            row = {"method": name, "model_bytes": s["artifact_bytes"], "code_bytes": s["code_bytes"]}
            row.update(total=s["bytes_total"], fits=s["bytes_total"] <= mod.ARTIFACT_CAP_BYTES, **res)
            row.update({f"{k}_gap": res[k] - pre[k] for k in res})
            row.update(encoding=f"{s['compressor']}/{s['layout']}", gptq=s["gptq"], prune_frac=s["prune_frac"])
            rows.append(row)
    return {
        "checkpoint": checkpoint,
        "hessians": source if hessians else None,
        "val_tokens": int(tokens.size),
        "rows": rows,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="a --stage train checkpoint")
    p.add_argument("--val-files", required=True)
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--train-files", help="for Hessians when the checkpoint has none")
    p.add_argument("--stride", type=int, default=64, help="sliding-window stride (>= eval length: non-sliding only)")
    p.add_argument("--val-tokens", type=int, default=0, help="validation prefix (0 = all)")
    p.add_argument("--out")
    p.add_argument("env", nargs="*", help="KEY=VALUE hyperparameter overrides")
    a = p.parse_args()
    fixed = [f"VAL_FILES={a.val_files}", f"TOKENIZER_PATH={a.tokenizer}", f"VAL_TOKENS_LIMIT={a.val_tokens}"]
    mod = load_script([*a.env, *fixed])
    if not Path(a.checkpoint).is_file():
        print(f"{a.checkpoint}: checkpoint not found", file=sys.stderr)
        return 2
    res = gap(mod, a.checkpoint, a.train_files, a.stride)
    cols = ["method", "model_bytes", "code_bytes", "total", "fits", "val_bpb", "val_bpb_gap", "sliding_val_bpb"]
    cols += ["sliding_val_bpb_gap", "encoding", "gptq", "prune_frac"]
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in res["rows"]:
        cells = [f"{r[c]:.5f}" if isinstance(r.get(c), float) and "bpb" in c else str(r.get(c, "")) for c in cols]
        print("| " + " | ".join(cells) + " |")
    emit({k: v for k, v in res.items() if k != "rows"} | {r["method"]: r for r in res["rows"]}, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
