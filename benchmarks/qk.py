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

from report import cuda_timed, emit, kernel_bench_parser, load_script  # benchmarks/report.py, beside this script


def main() -> int:
    p = kernel_bench_parser(__doc__, tokens=98304)
    a = p.parse_args()
    mod = load_script(a.env)
    import torch
    import torch.nn.functional as F

    if not torch.cuda.is_available() or mod.triton is None:
        print("qk: needs a CUDA device with Triton", file=sys.stderr)
        return 2
    args = mod.Hyperparameters
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

    def module_path(qkv, gain):  # Attention.forward's unfused branch, with the copies attend() makes for FA4
        q, k, v = qkv.split((H * D, KV * D, KV * D), dim=-1)
        q, k, v = q.view(B, T, H, D), k.view(B, T, KV, D), v.view(B, T, KV, D)
        q, k = F.rms_norm(q, (D,)), F.rms_norm(k, (D,))
        cos, sin = rot(T, qkv.device, qkv.dtype)
        q, k = mod.apply_rotary(q, cos, sin, R), mod.apply_rotary(k, cos, sin, R)
        return (q * gain.to(q.dtype)[None, None, :, None]).contiguous(), k.contiguous(), v.contiguous()

    def fused(qkv, gain):
        cos, sin = rot(T, qkv.device, qkv.dtype)
        return mod.qk_prep(qkv, cos.view(T, -1), sin.view(T, -1), gain, H, KV)

    paths = {"module": torch.compile(module_path), "fused": fused}
    # error against fp32 math on the same inputs (the module path in fp32, eps of bf16 as in training)
    ref_in = [t.detach().float().requires_grad_() for t in (qkv, gain)]
    with torch.no_grad():
        cos32, sin32 = (t.float() for t in rot(T, "cuda", torch.bfloat16))

    def ref_fn(x, gn):
        q, k, v = x.split((H * D, KV * D, KV * D), dim=-1)
        q, k, v = q.view(B, T, H, D), k.view(B, T, KV, D), v.view(B, T, KV, D)
        eps = torch.finfo(torch.bfloat16).eps
        q, k = F.rms_norm(q, (D,), eps=eps), F.rms_norm(k, (D,), eps=eps)
        q, k = mod.apply_rotary(q, cos32, sin32, R), mod.apply_rotary(k, cos32, sin32, R)
        return q * gn[None, None, :, None], k, v

    ref = ref_fn(*ref_in)
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
