"""The export's choice of encoding on a production-size payload: every candidate compressed in full (the old way)
against the sampled choice (`choose_encoding`: candidates ranked on ENCODE_SAMPLE_CHUNKS chunks each, the best
encoded in full).

    python benchmarks/encode_speed.py [--sample-chunks 4] [--compressor auto] [--layout auto]

Builds the full model's state_dict from the training script's GPT with the default Hyperparameters (11 layers, width
512) on the CPU: the script's own init (seed 0) plus N(0, 0.02^2) on every tensor of two or more dimensions, so that no
matrix is all zeros (the zero-initialised projections would compress to nothing, trained weights never do). Quantizes
it as the export does without Hessians (per-row clip search, int6 matrices, int8 embeddings), then times both choices
on the same payload and prints Markdown tables: seconds, chosen encoding and bytes for each, then every candidate's
full size against the sampled choice's figure (~ = estimated). No GPU needed; the figures depend on the cores.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[1] / "src" / "pgolf" / "train_gpt.py"


def load_script():
    spec = importlib.util.spec_from_file_location("train_gpt_bench", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def production_payload(mod, args):
    torch.manual_seed(0)
    model = mod.GPT(args)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim >= 2:
                p.add_(0.02 * torch.randn(p.shape, generator=g))
    state = model.state_dict()
    payload, _ = mod.quantize_state(state, args)
    return state, payload


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sample-chunks", type=int, default=None, help="ENCODE_SAMPLE_CHUNKS (default: the script's)")
    p.add_argument("--compressor", default="auto")
    p.add_argument("--layout", default="auto")
    a = p.parse_args(argv)
    mod = load_script()
    over = {"compressor": a.compressor, "quant_layout": a.layout}
    if a.sample_chunks is not None:
        over["encode_sample_chunks"] = a.sample_chunks
    args = mod.Hyperparameters(run_id="encode_speed", **over)
    rt = mod.Runtime()
    t = time.perf_counter()
    state, payload = production_payload(mod, args)
    n_params = sum(v.numel() for v in state.values())
    meta = mod.artifact_meta(args)
    codecs = [
        c
        for c in mod.choices(args.compressor, mod.CODECS, "COMPRESSOR")
        if {"zstd": mod.zstandard, "brotli": mod.brotli}.get(c, 1)
    ]
    layouts = mod.choices(args.quant_layout, mod.LAYOUTS, "QUANT_LAYOUT")
    raw = len(mod.serialize(payload, meta, "plain"))
    print(
        f"state: {n_params:,} parameters, payload {raw:,} bytes (plain layout), chunk {args.compress_chunk} bytes, "
        f"{os.cpu_count()} CPU cores, quantized in {time.perf_counter() - t:.1f} s",
        flush=True,
    )

    t = time.perf_counter()  # the old choice: every candidate compressed in full, the smallest kept
    old = {(c, lay): mod.encode(payload, meta, c, lay, args) for c in codecs for lay in layouts}
    old_sizes = {k: len(b) for k, b in old.items()}
    old_key = min(old_sizes, key=old_sizes.get)
    old_s = time.perf_counter() - t
    print(f"exhaustive: {old_s:.1f} s", flush=True)

    t = time.perf_counter()
    codec, layout, blob, report = mod.choose_encoding(payload, meta, codecs, layouts, args, rt)
    new_s = time.perf_counter() - t
    if blob != old[codec, layout]:
        raise SystemExit(f"{codec}/{layout}: the sampled choice's bytes differ from encode()'s")

    print("\n| choice | seconds | chosen | bytes |\n|---|---|---|---|")
    print(f"| exhaustive ({len(old)} in full) | {old_s:.1f} | {old_key[0]}/{old_key[1]} | {old_sizes[old_key]:,} |")
    n_full = sum(r["full"] for r in report.values())
    print(
        f"| sampled ({args.encode_sample_chunks} chunks each, {n_full} in full) | {new_s:.1f} | {codec}/{layout} | "
        f"{len(blob):,} |"
    )
    print("\n| candidate | full bytes | sampled choice's bytes | estimate error |\n|---|---|---|---|")
    for (c, lay), n in sorted(old_sizes.items(), key=lambda kv: kv[1]):
        r = report[f"{c}/{lay}"]
        err = f"{(r['bytes'] - n) / n:+.2%}" if not r["full"] else "exact" if r["bytes"] == n else "MISMATCH"
        print(f"| {c}/{lay} | {n:,} | {'' if r['full'] else '~'}{r['bytes']:,} | {err} |")
    regret = len(blob) - old_sizes[old_key]
    print(
        f"\nsampled choice vs exhaustive: {regret:+,} bytes ({regret / old_sizes[old_key]:+.3%}), "
        f"{old_s / new_s:.1f}x faster"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
