"""The quantize step's export on a production-size model, timed by part, on this machine's CPU (or GPU).

    python benchmarks/quantize_speed.py [--threads 1] [--device cpu|cuda] [--out model.ptz]

The payload of `benchmarks/encode_speed.py` (the full 11-layer model of the default Hyperparameters: the script's own
init plus N(0, 0.02^2) on every matrix) with random Hessians (x ~ N(0, 1) with column scales 0.2..2, 4096 rows per
layer input), GPTQ on, exported as the quantize stage does (`export_artifact`) on the fit path (no MLP refit, no
pruning: the over-cap path is another cost, see benchmarks/NOTES.md). Prints the clip search + GPTQ time (on
`--device`), the encoding choice's, the whole export's, the chosen encoding and the artifact's bytes and sha256.
`--threads` is torch's thread count (Snakemake gives the quantize rule one); the compression threads are the cores'.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from encode_speed import load_script  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=Path("/tmp/quantize_speed.ptz"))
    a = p.parse_args(argv)
    mod = load_script()
    args = mod.Hyperparameters(run_id="quantize_speed", quant_fit_mlp_bits=0, prune_max_frac=0.0, enforce_cap=False)
    torch.manual_seed(0)
    model = mod.GPT(args)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for prm in model.parameters():
            if prm.ndim >= 2:
                prm.add_(0.02 * torch.randn(prm.shape, generator=g))
    state = model.state_dict()
    hs = {}
    for name, t in state.items():  # one Hessian per linear input (c_k and c_v read c_q's)
        if name.startswith("blocks.") and t.ndim == 2 and ".c_k." not in name and ".c_v." not in name:
            x = torch.randn(4096, t.shape[1], generator=g) * torch.linspace(0.2, 2, t.shape[1])
            hs[name] = x.T @ x / x.size(0)
    torch.set_num_threads(a.threads)
    t = time.perf_counter()
    mod.quantize_state(state, args, hs, a.device)
    weights = time.perf_counter() - t
    rt = mod.Runtime()
    rt.device = torch.device(a.device)
    s = mod.export_artifact(state, args, str(a.out), rt, hs)
    sha = hashlib.sha256(a.out.read_bytes()).hexdigest()
    print("| threads | device | clip search + GPTQ | encoding choice | whole export | encoding | bytes | sha256 |")
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| {a.threads} | {a.device} | {weights:.1f} s | {s['encoding_choice_s']:.1f} s | "
        f"{s['quantize_time_s']:.1f} s | {s['compressor']}/{s['layout']} | {s['artifact_bytes']:,} | {sha[:16]} |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
