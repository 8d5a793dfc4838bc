"""The attention's q/k preparation of one micro-step (98,304 tokens), the fused op against the module path, on this GPU.

    python benchmarks/qk.py [--tokens 98304] [--out result.json] [K=V ...]

From the q|k|v projection output to the attention kernels' inputs: RMSNorm of q and k, RoPE on their first
ROPE_DIMS dims, q times q_gain, v as a contiguous tensor; backward to the projection's gradient and q_gain's.
Module path: what torch.compile makes of the script's eager code (split, views, norms, rotary, gain, the copies the
attention backend needs). Fused: the script's `qk_prep` op (one Triton pass each way). Reported: forward+backward
milliseconds of each and per training step (x layers x micro-steps of the full configuration), the bytes each pass
must move at least and the rate that makes, and the largest error of either path against an fp32 reference.
"""

from __future__ import annotations

import sys

from report import cuda_timed, emit, kernel_bench_parser, kernel_bench_start  # benchmarks/report.py, beside this script


def main() -> int:
    p = kernel_bench_parser(__doc__, tokens=98304)
    a, mod = kernel_bench_start(p, "qk", triton=True)
    import torch

    args = mod.Hyperparameters.from_env()
    H, KV, D, R, T = args.num_heads, args.num_kv_heads, args.model_dim // args.num_heads, args.rope_dims, 2048
    if not mod.qk_prep_fusable(H, KV, D, R):
        print(f"qk: NUM_HEADS={H} NUM_KV_HEADS={KV} ROPE_DIMS={R} is not fusable (qk_prep_fusable)", file=sys.stderr)
        return 2
    B, W = a.tokens // T, (H + 2 * KV) * D
    g = torch.Generator(device="cuda").manual_seed(0)
    qkv = torch.randn((B, T, W), device="cuda", generator=g).to(torch.bfloat16).requires_grad_()
    gain = torch.full((H,), args.qk_gain_init, device="cuda", requires_grad=True)
    rot = mod.Rotary(R, args.rope_base, args.train_seq_len).cuda()
    grads = [torch.randn((B, T, n, D), device="cuda", generator=g).to(torch.bfloat16) for n in (H, KV, KV)]

    with torch.no_grad():
        cos, sin = (t[0, :, 0] for t in rot(T, "cuda", torch.bfloat16))

    def module_path(qkv, gain):  # Attention's path off CUDA or with FUSED_QK=0, plus the copies FA4 needs
        return tuple(t.contiguous() for t in mod.qk_prep_plain(qkv, cos, sin, gain, H, KV))

    def fused(qkv, gain):
        return mod.qk_prep(qkv, cos, sin, gain, H, KV)

    paths = {"module": torch.compile(module_path), "fused": fused}
    # error against the same math in fp32 on the same inputs (bf16's epsilon in the norm, as in training)
    ref_in = qkv32, gain32 = [t.detach().float().requires_grad_() for t in (qkv, gain)]
    ref = mod.qk_prep_plain(qkv32, cos.float(), sin.float(), gain32, H, KV, torch.finfo(torch.bfloat16).eps)
    ref_all = [*ref, *torch.autograd.grad(ref, ref_in, [t.float() for t in grads])]
    errs = {}
    for name, fn in paths.items():
        out = fn(qkv, gain)
        got = [*out, *torch.autograd.grad(out, (qkv, gain), grads)]
        rel = [((u.float() - r).abs().max() / r.abs().max()).item() for u, r in zip(got, ref_all, strict=True)]
        errs[name] = max(rel)

    def step(fn):
        return lambda: torch.autograd.grad(fn(qkv, gain), (qkv, gain), grads)

    ms = {name: cuda_timed(step(fn), a.iters) for name, fn in paths.items()}
    fwd = {name: cuda_timed(lambda fn=fn: fn(qkv.detach(), gain.detach()), a.iters) for name, fn in paths.items()}
    n = a.tokens * W * 2  # bytes of qkv (bf16)
    # least traffic: forward reads qkv and writes q, k, v; backward reads dq, dk, dv and q|k, writes dqkv
    least = {"fwd": 2 * n, "fwd_bwd": 2 * n + n + (H + KV) / (H + 2 * KV) * n + n}
    per_step = args.num_layers * a.micro_steps
    res = {"device": torch.cuda.get_device_name(), "tokens": a.tokens}
    for name in paths:
        res |= {
            f"fwd_ms_{name}": round(fwd[name], 4),
            f"fwd_bwd_ms_{name}": round(ms[name], 4),
            f"per_step_ms_{name}": round(ms[name] * per_step, 1),
            f"fwd_bwd_GBps_{name}": round(least["fwd_bwd"] / ms[name] / 1e6, 1),
            f"max_rel_err_{name}": errs[name],
        }
    res["fwd_GBps_fused"] = round(least["fwd"] / fwd["fused"] / 1e6, 1)
    res["autotuned"] = {
        f"{name} {k}": str(v)
        for name, kern in (("fwd", mod.qk_prep_kernel), ("bwd", mod.qk_prep_bwd_kernel))
        for k, v in getattr(kern, "cache", {}).items()
    }
    emit(res, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
