"""Where a training step's GPU time goes: torch.profiler over compiled training micro-steps of the training script's
model (full 11-layer configuration unless overridden), grouped by kernel, largest first.

    python benchmarks/profile_step.py --micro-steps 8 [--script OTHER.py] [--dump-kernels 6 --out DIR/t.txt] [K=V ...]

--dump-kernels N writes the Inductor-generated source of the N most expensive Triton kernels beside --out, so a slow
kernel can be read without re-running.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import tempfile
from pathlib import Path

from report import load_script  # benchmarks/report.py, beside this script


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--micro-steps", type=int, default=8)
    p.add_argument("--micro-batch-seqs", type=int, default=48, help="sequences per micro-step (98,304 tokens at 2048)")
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--out", help="write the table here too")
    p.add_argument("--script", help="profile this copy of the training script instead of the package's")
    p.add_argument("--dump-kernels", type=int, default=0, help="save the source of the N slowest Triton kernels")
    p.add_argument("env", nargs="*", help="KEY=VALUE hyperparameter overrides")
    a = p.parse_args()
    mod = load_script(a.env, a.script)
    import torch
    from torch.profiler import ProfilerActivity, profile

    if not torch.cuda.is_available():
        print("profile: no CUDA device", file=sys.stderr)
        return 2
    args, rt = mod.Hyperparameters.from_env(), mod.Runtime()
    torch.manual_seed(0)
    model = mod.GPT(args, mod.attention_backend(rt, args)).to(rt.device)
    net = mod.maybe_compile(model, args, rt)
    opts = mod.build_optimizers(model, args, rt)
    x = torch.randint(0, args.vocab_size, (a.micro_batch_seqs, args.train_seq_len), device=rt.device)
    y = torch.randint(0, args.vocab_size, (a.micro_batch_seqs, args.train_seq_len), device=rt.device)

    marks = []  # (after the micro-steps, after the optimizer) events of the timed steps

    def step(timed: bool = False):
        for _ in range(a.micro_steps):
            with mod.autocast(rt):
                loss = net(x, y)
            (loss / a.micro_steps).backward()
        if timed:
            marks.append((torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)))
            marks[-1][0].record()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip_norm)
        for o in opts:
            o.step()
        model.zero_grad(set_to_none=True)
        if timed:
            marks[-1][1].record()

    for _ in range(3):  # compile and warm up
        step()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(3):
        step(timed=True)
    end.record()
    torch.cuda.synchronize()
    step_ms = start.elapsed_time(end) / 3
    opt_ms = sum(b.elapsed_time(e) for b, e in marks) / len(marks)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=a.top, max_name_column_width=90)
    peak = torch.cuda.max_memory_allocated() / 2**30
    groups = kernel_groups(prof)
    summary = " ".join(f"{k}:{v:.1f}" for k, v in groups.items())
    text = (
        f"step_ms (event-timed, mean of 3): {step_ms:.1f} clip_and_optimizer_ms: {opt_ms:.1f} "
        f"peak_memory_gib: {peak:.1f}\n"
        f"kernel_ms_by_group: {summary} overrides: {' '.join(a.env) or '-'}\n{table}"
    )
    print(text)
    if a.out:
        Path(a.out).write_text(text)
        if a.dump_kernels:
            dump_kernels(prof, a.dump_kernels, Path(a.out).with_suffix(".kernels.txt"))
    return 0


def kernel_group(name: str) -> str:
    if any(t in name for t in ("sdpa", "fmha", "flash", "attention", "cudnn")):
        return "attention"
    if any(t in name for t in ("nvjet", "gemm", "cutlass", "sm90_xmma")):
        return "matmul"
    if name.startswith("triton_"):
        return "triton"
    return "other"


def kernel_groups(prof) -> dict[str, float]:
    """GPU milliseconds of one profiled step by kernel group (attention, matmul, Inductor's Triton, other)."""
    out = {"attention": 0.0, "matmul": 0.0, "triton": 0.0, "other": 0.0}
    for e in prof.key_averages():  # CUDA activity only: every event is a kernel, copy or memset
        out[kernel_group(e.key)] += e.self_device_time_total / 1000
    out["total"] = sum(out.values())
    return out


def dump_kernels(prof, n: int, path: Path) -> None:
    """Inductor writes each Triton kernel's source into its cache; find the slowest kernels' definitions there."""
    cache = os.environ.get("TORCHINDUCTOR_CACHE_DIR") or os.path.join(
        tempfile.gettempdir(), f"torchinductor_{os.environ.get('USER', 'root')}"
    )
    events = sorted(prof.key_averages(), key=lambda e: e.device_time_total, reverse=True)
    names = [e.key for e in events if e.key.startswith("triton_")][:n]
    files = glob.glob(os.path.join(cache, "**", "*.py"), recursive=True)
    out = []
    for name in names:
        src = next((f for f in files if f"def {name}(" in Path(f).read_text(errors="replace")), None)
        out.append(f"# ==== {name} ({src})")
        if src:
            text = Path(src).read_text(errors="replace")
            start = text.index(f"def {name}(")
            out.append(text[max(0, text.rfind("@triton", 0, start)) : start + 6000])
    path.write_text("\n".join(out))


if __name__ == "__main__":
    sys.exit(main())
