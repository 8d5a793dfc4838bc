"""The attention kernels the training script can use, on this GPU: error against an fp32 reference and time of one
causal forward and forward+backward at the training shapes (48 sequences of 2048 tokens, 8 query heads, 4 KV heads,
head dim 64: one micro-step of one layer).

    python benchmarks/attention.py [--backends sdpa,sdpa_cudnn,sdpa_flash,fa4] [--out result.json] [K=V ...]

Each backend goes through the script's own `attention_backend` and `attend`, so what is timed is what trains. The
error is the largest absolute difference, over the output and the three gradients, against PyTorch's math kernel in
fp32 on the same bf16 inputs (2 sequences). The table also gives the milliseconds per training step of attention
(forward+backward x layers x micro-steps of the full configuration).
"""

from __future__ import annotations

import sys
import traceback

from report import cuda_timed, emit, kernel_bench_parser, kernel_bench_start  # benchmarks/report.py, beside this script


def measure(mod, backend: str, h: int, kv: int, T: int, d: int, seqs: int, iters: int) -> tuple[float, float, float]:
    """(max abs error against fp32 math, forward ms, forward+backward ms) of `mod.attend` with this backend."""
    import torch
    import torch.nn.functional as F

    def inputs(n: int):
        g = torch.Generator(device="cuda").manual_seed(0)
        shapes = ((n, T, h, d), (n, T, kv, d), (n, T, kv, d))
        return [torch.randn(s, device="cuda", dtype=torch.bfloat16, generator=g).requires_grad_() for s in shapes]

    q, k, v = inputs(2)
    y = mod.attend(q, k, v, backend)
    dy = torch.randn_like(y)
    got = [y, *torch.autograd.grad(y, (q, k, v), dy)]
    qf, kf, vf = (t.detach().float().requires_grad_() for t in (q, k, v))
    rep = h // kv
    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
        yf = F.scaled_dot_product_attention(
            qf.transpose(1, 2),
            kf.repeat_interleave(rep, 2).transpose(1, 2),
            vf.repeat_interleave(rep, 2).transpose(1, 2),
            is_causal=True,
        ).transpose(1, 2)
    ref = [yf, *torch.autograd.grad(yf, (qf, kf, vf), dy.float())]
    err = max((g.float() - r).abs().max().item() for g, r in zip(got, ref, strict=True))

    q, k, v = inputs(seqs)
    dy = torch.randn(seqs, T, h, d, device="cuda", dtype=torch.bfloat16)

    with torch.no_grad():
        fwd = cuda_timed(lambda: mod.attend(q, k, v, backend), iters)
    both = cuda_timed(lambda: torch.autograd.grad(mod.attend(q, k, v, backend), (q, k, v), dy), iters)
    return err, fwd, both


def main() -> int:
    p = kernel_bench_parser(__doc__, seqs=48)
    p.add_argument("--backends", default="sdpa,sdpa_cudnn,sdpa_flash,fa3,fa4")
    a, mod = kernel_bench_start(p, "attention")
    import torch

    args, rt = mod.Hyperparameters.from_env(), mod.Runtime()
    h, kv, T = args.num_heads, args.num_kv_heads, args.train_seq_len
    d = args.model_dim // h
    flops_fwd = 4 * a.seqs * T * T * h * d / 2  # QK^T and PV, causal half
    rows = []
    for name in a.backends.split(","):
        for kernel in ("flash", "cudnn", "mem_efficient", "math"):
            getattr(torch.backends.cuda, f"enable_{kernel}_sdp")(True)
        args = args.replace(attn_backend=name)
        try:
            backend = mod.attention_backend(rt, args)
        except SystemExit as e:
            print(f"{name}: not available ({e})")
            continue

        try:
            err, fwd, both = measure(mod, backend, h, kv, T, d, a.seqs, a.iters)
        except Exception:  # one backend failing at run time must not cost the others' figures
            traceback.print_exc()
            print(f"{name}: failed")
            continue
        per_step = both * args.num_layers * a.micro_steps
        rows.append(
            dict(
                backend=backend,
                max_abs_err=err,
                fwd_ms=round(fwd, 3),
                fwd_bwd_ms=round(both, 3),
                fwd_tflops=round(flops_fwd / fwd / 1e9, 1),
                fwd_bwd_tflops=round(3.5 * flops_fwd / both / 1e9, 1),
                ms_per_train_step=round(per_step, 1),
            )
        )
        r = rows[-1]
        print(
            f"{backend:>12}  err {err:.2e}  fwd {r['fwd_ms']:7.3f} ms ({r['fwd_tflops']:5.1f} TFLOP/s)  "
            f"fwd+bwd {r['fwd_bwd_ms']:7.3f} ms ({r['fwd_bwd_tflops']:5.1f} TFLOP/s)  per step {per_step:6.1f} ms"
        )
    emit({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows}, a.out)
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
