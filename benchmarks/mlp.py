"""The relu^2 MLP of one micro-step (98,304 tokens, width 512, hidden 1536), fused against unfused, on this GPU.

    python benchmarks/mlp.py [--tokens 98304] [--out result.json] [K=V ...]

Unfused is what torch.compile makes of the module path: cuBLAS products with relu^2 and its backward as separate
Inductor kernels over the hidden tensor. Fused is the script's `relu2_mlp` op: relu^2 in the epilogue of the up
projection (Triton), the backward's 2 sqrt(a) factor in the epilogue of the down projection's input gradient.
Reported: forward+backward milliseconds of each, per training step (x layers x micro-steps of the full
configuration), the TFLOP/s of both Triton kernels (persistent TMA, plain tiled) against cuBLAS on the same product,
and the largest error of either path against an fp32 reference.
"""

from __future__ import annotations

import sys

from report import cuda_timed, emit, kernel_bench_parser, kernel_bench_start  # benchmarks/report.py, beside this script


def main() -> int:
    p = kernel_bench_parser(__doc__, tokens=98304)
    a, mod = kernel_bench_start(p, "mlp", triton=True)
    import torch
    import torch.nn.functional as F

    args = mod.Hyperparameters.from_env()
    d, hidden = args.model_dim, int(args.mlp_mult * args.model_dim)
    g = torch.Generator(device="cuda").manual_seed(0)

    def rand(*shape, scale=1.0):
        return (scale * torch.randn(shape, device="cuda", generator=g)).to(torch.bfloat16)

    x = rand(a.tokens, d).requires_grad_()
    w1, w2 = rand(hidden, d, scale=d**-0.5).requires_grad_(), rand(d, hidden, scale=hidden**-0.5).requires_grad_()
    dy = rand(a.tokens, d)

    @torch.compile
    def unfused(x, w1, w2):
        return F.linear(F.relu(F.linear(x, w1)).square(), w2)

    def fused(x, w1, w2):
        return mod.relu2_mlp(x, w1, w2)[0]

    # error against fp32 on the first 4096 tokens
    xs = x[:4096].detach().requires_grad_()
    ref_in = [t.detach().float().requires_grad_() for t in (xs, w1, w2)]
    ref = F.linear(F.relu(F.linear(ref_in[0], ref_in[1])).square(), ref_in[2])
    ref_all = [ref, *torch.autograd.grad(ref, ref_in, dy[:4096].float())]
    errs = {}
    for name, fn in (("unfused", unfused), ("fused", fused)):
        y = fn(xs, w1, w2)
        got = [y, *torch.autograd.grad(y, (xs, w1, w2), dy[:4096])]
        rel = [((u.float() - r).abs().max() / r.abs().max()).item() for u, r in zip(got, ref_all, strict=True)]
        errs[name] = max(rel)

    def step(fn):
        return lambda: torch.autograd.grad(fn(x, w1, w2), (x, w1, w2), dy)

    per_step = args.num_layers * a.micro_steps
    ms = {name: cuda_timed(step(fn), a.iters) for name, fn in (("unfused", unfused), ("fused", fused))}
    flops = 2 * a.tokens * d * hidden
    xd, w1t = x.detach(), w1.detach().t()
    h = mod.relu2_mm(xd, w1t)
    kernels = {}
    for name in ("tma", "tiled"):  # the persistent TMA kernel (Hopper and newer) and the plain tiled one
        up = cuda_timed(lambda name=name: mod.relu2_mm(xd, w1t, kernel=name), a.iters)
        down = cuda_timed(lambda name=name: mod.relu2_mm(dy, w2.detach(), aux=h, kernel=name), a.iters)
        err = mod.relu2_mm(dy, w2.detach(), aux=h, kernel=name).float() - 2 * h.float().sqrt() * (
            dy.float() @ w2.float()
        )
        kernels |= {
            f"{name}_up_relu2_ms": round(up, 3),
            f"{name}_up_relu2_tflops": round(flops / up / 1e9, 1),
            f"{name}_down_grad_ms": round(down, 3),
            f"{name}_down_grad_tflops": round(flops / down / 1e9, 1),
            f"{name}_down_grad_max_abs_err": err.abs().max().item(),
        }
    plain = cuda_timed(lambda: xd @ w1t, a.iters)
    res = {
        "device": torch.cuda.get_device_name(),
        "tokens": a.tokens,
        "fwd_bwd_ms_unfused": round(ms["unfused"], 3),
        "fwd_bwd_ms_fused": round(ms["fused"], 3),
        "per_step_ms_unfused": round(ms["unfused"] * per_step, 1),
        "per_step_ms_fused": round(ms["fused"] * per_step, 1),
        "max_rel_err_unfused": errs["unfused"],
        "max_rel_err_fused": errs["fused"],
        **kernels,
        "cublas_same_product_ms": round(plain, 3),
        "cublas_tflops": round(flops / plain / 1e9, 1),
        "autotuned": {
            f"{name} {k[:5]}": str(v)
            for name, kern in (("tma", mod.relu2_mm_tma_kernel), ("tiled", mod.relu2_mm_kernel))
            for k, v in getattr(kern, "cache", {}).items()
        },
    }
    emit(res, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
