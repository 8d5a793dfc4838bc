"""Our recipe against the 1.1248 record script (#315) at equal wall-clock on one GPU (issue 28), plus our legal
score-first TTT's gain.

Both scripts train on the same blog shards for the same wall-clock cap W, each exports and scores its own artifact
with its own evaluation on the same 1,040,298 FineWeb validation tokens (the official split's prefix, sp1024), one
after the other on the same GPU. #315's script runs with FlashAttention 3 when a built wheel is in `.cache/fa3/` (the
fa3 step's cache) and imports and matches SDPA on the GPU, else with an SDPA stand-in for `flash_attn_interface` (the
table says which); ours picks its attention as it does on a pod (FA3 when importable, else SDPA). Same schedule for
both, scaled from the 7,000-step production run to the expected step count (warmdown, Muon momentum warm-up, EMA
horizon, as benchmarks/quality.py does), the record's command for everything else.

Device commands (GPU-READY; the repository root as cwd; the machine's python3 is torch 2.11+cu130):
  here, once:   python benchmarks/versus.py stage --shared ../shared --dest .versus     (58.5 MiB, git-ignored)
  call 1:       run(command="PYTHONUNBUFFERED=1 python3 benchmarks/versus.py run --data .versus --out $OUT
                     --wallclock 180 --side theirs", carry=[".versus"], timeout_s=600)
  call 2, back to back on the warm machine (the decompressed shards stay in /tmp/versus):
                run(command="PYTHONUNBUFFERED=1 python3 benchmarks/versus.py run --data .versus --out $OUT
                     --wallclock 180 --side ours", carry=[".versus"], timeout_s=600)
  here, after:  python benchmarks/versus.py table DIR_OF_CALL_1 DIR_OF_CALL_2
Add ".cache/fa3" to carry when it holds a built FA3 wheel (#315 then runs on FA3, and so does ours).
Why two calls: at W=180 each side needs W plus its start-up (compile; ours 116 s cold), export and evaluation
(with its own compile): about 320 s for #315 and 450 s for ours by the parts measured in earlier runs
(benchmarks/NOTES.md, docs/gpu.md), 13 minutes together, more than one 9-minute call holds. `--side both` runs
both in one call for a machine with more time (`--budget`). A side's own timeout is the call's budget (540 s) less
what has run; a side cut off still writes its log and a row with what it reached.

Variants and noise, one call each (8-9 minutes), rows named by --tag in the same table:
  --side ours --tag leaky --ours-env "RELU_SLOPE=0.5"        (also PARALLEL_RESIDUAL=0, RECUR_LAYERS=4,5,
  MUON_POLAR_EXPRESS=1, QUANT_BITS_EMBED=7); --side theirs|ours --seed 2 --tag s2 (a second seed);
  --ttt "TTT_EPOCHS=3 TTT_LR=0.002 TTT_CHUNK_TOKENS=32768 TTT_PARAMS=..." (ours' TTT settings; TTT_EPOCHS=0: none).
Ours always gets OURS_DEFAULT (below) and VAL_TOKENS_LIMIT (the targets #315 scores) under --ours-env.

Written under --out: versus.md (the table), theirs.json / ours.json (figures), theirs.log / ours.log (each script's
output), env.json (what ran: attention, FA3, versions, settings).
"""

from __future__ import annotations

import argparse
import glob
import json
import lzma
import math
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

RECORD_315 = "fixtures/upstream-corpus/track_10min_16mb/2026-03-21_11L_XSA4_EMA_PartialRoPE_LateQAT_1.1248"
TRAIN_SHARDS = ("blogs_train_000000.bin.xz", "blogs_train_000001.bin.xz")
VAL_PREFIX = "fineweb_val_prefix_sp1024.bin"
TOKENIZER = "fineweb_1024_bpe.model"
WHEELS = ("zstandard-0.25.0-*.whl", "brotli-1.2.0-*.whl")  # #315 compresses with zstd, ours picks among all
VAL_TARGETS = 1_040_297  # the prefix's 1,040,298 tokens: every one but the first is a target
# #315's evaluation keeps whole 2048-token sequences of the split: the first 1,038,336 targets; ours is given the same
# (VAL_TOKENS_LIMIT), so both score the same targets (the official split, 62,021,632 = 30,284 x 2048, loses none)
SCORED_TARGETS = VAL_TARGETS // 2048 * 2048
OFFICIAL_VAL_TARGETS = 62_021_632  # the official split's (the 1.1248 record's log: val_loader ... tokens:62021632)
PRODUCTION_STEPS = 7000
EXPECTED_STEP_MS = 600.0  # one H200, SDPA, between ours (516.5) and #315 (726.6): sets the schedule for both
# The record's command (its README), less what the schedule sets
RECORD_ENV = {
    "NUM_LAYERS": "11",
    "BIGRAM_VOCAB_SIZE": "2048",
    "XSA_LAST_N": "4",
    "EMA_ENABLED": "1",
    "SWA_ENABLED": "0",
    "ROPE_DIMS": "16",
    "LN_SCALE": "1",
    "LATE_QAT": "1",
    "QAT_THRESHOLD": "0.1",
    "MUON_WD": "0.04",
    "ADAM_WD": "0.04",
    "MATRIX_LR": "0.025",
    "SCALAR_LR": "0.025",
    "TIED_EMBED_LR": "0.035",
    "MUON_MOMENTUM": "0.99",
    "MUON_MOMENTUM_WARMUP_START": "0.92",
    "ITERATIONS": "9000",
    "EVAL_STRIDE": "64",
}
# The encoding earlier runs' choice picked (benchmarks/NOTES.md), fixed: the export encodes once instead of choosing
# (the quantize step took 138 s of a 1-GPU pod run); the bytes are those a record of this model would ship with it.
OURS_DEFAULT = "COMPRESSOR=brotli QUANT_LAYOUT=shuffle"
TTT_DEFAULT = "TTT_EPOCHS=3 TTT_LR=0.002 TTT_CHUNK_TOKENS=32768"  # upstream #549's recipe (all tensors, SGD 0.9)
SDPA_STANDIN = '''"""SDPA stand-in for FlashAttention 3's flash_attn_interface (benchmarks/versus.py)."""
import torch.nn.functional as F


def flash_attn_func(q, k, v, causal=True, **_):
    y = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=causal, enable_gqa=q.size(2) != k.size(2)
    )
    return y.transpose(1, 2)
'''
FA3_CHECK = """
import torch, torch.nn.functional as F
from flash_attn_interface import flash_attn_func
q = torch.randn(2, 256, 8, 64, device="cuda", dtype=torch.bfloat16)
k, v = (torch.randn(2, 256, 4, 64, device="cuda", dtype=torch.bfloat16) for _ in range(2))
y = flash_attn_func(q, k, v, causal=True)
y = y[0] if isinstance(y, tuple) else y
r = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True,
                                   enable_gqa=True).transpose(1, 2)
err = (y.float() - r.float()).abs().max().item()
assert err < 2e-2, err
print("fa3 ok", err)
"""


def schedule(wallclock: float, seed: int) -> dict[str, str]:
    """The environment both scripts get: the cap, the seed, and the production schedule scaled to the steps W holds."""
    steps = max(10, round(1000 * wallclock / EXPECTED_STEP_MS))
    ema_horizon = max(2.0, (1 / (1 - 0.997)) * steps / PRODUCTION_STEPS)
    return {
        **RECORD_ENV,
        "SEED": str(seed),
        "MAX_WALLCLOCK_SECONDS": f"{wallclock:g}",
        "WARMUP_STEPS": "5",
        "WARMDOWN_ITERS": str(round(steps * 3000 / PRODUCTION_STEPS)),
        "MUON_MOMENTUM_WARMUP_STEPS": str(round(steps * 1500 / PRODUCTION_STEPS)),
        "EMA_DECAY": f"{1 - 1 / ema_horizon:.5f}",
        "TRAIN_BATCH_TOKENS": "786432",
        "TRAIN_SEQ_LEN": "2048",
        "VAL_LOSS_EVERY": "0",
        "TRAIN_LOG_EVERY": "50",
        "PYTHONUNBUFFERED": "1",
        "NCCL_NVLS_ENABLE": "0",
    }


def parse_env(text: str, what: str) -> dict[str, str]:
    out = {}
    for item in text.split():
        key, sep, value = item.partition("=")
        if not sep or not key.isupper():
            raise SystemExit(f"{what}: {item!r} is not KEY=VALUE (an upper-case variable)")
        out[key] = value
    return out


# ---------------------------------------------------------------------------------------------------------------
# stage (here)


def cmd_stage(a: argparse.Namespace) -> int:
    shared, dest = Path(a.shared), Path(a.dest)
    wanted = [shared / "data/blog_authorship_sp1024" / n for n in TRAIN_SHARDS]
    wanted += [shared / "data/fineweb_sp1024_official" / n for n in (VAL_PREFIX, TOKENIZER)]
    wanted += [Path(p) for pat in WHEELS for p in sorted(glob.glob(str(shared / "wheels/gpu-py312" / pat)))[-1:]]
    wanted.append(shared / RECORD_315 / "train_gpt.py")
    missing = [str(p) for p in wanted if not p.is_file()]
    if missing or len(wanted) != len(TRAIN_SHARDS) + 2 + len(WHEELS) + 1:
        raise SystemExit(f"stage: missing under {shared}: {', '.join(missing) or 'a wheel of ' + ', '.join(WHEELS)}")
    dest.mkdir(parents=True, exist_ok=True)
    for p in wanted:
        name = "train_gpt_315.py" if p.name == "train_gpt.py" else p.name
        if not (dest / name).is_file() or (dest / name).stat().st_size != p.stat().st_size:
            shutil.copyfile(p, dest / (name + ".tmp"))
            os.replace(dest / (name + ".tmp"), dest / name)
    total = sum(f.stat().st_size for f in dest.iterdir())
    check = subprocess.run(["git", "check-ignore", "-q", str(dest)], cwd=REPO)
    print(
        f"stage: {len(wanted)} files, {total / 2**20:.1f} MiB in {dest}"
        + (
            ""
            if check.returncode == 0
            else f" (NOT ignored by git: add /{dest.name}/ to .git/info/exclude, or it travels as untracked files)"
        )
    )
    print('device command (carry: ["' + dest.name + '"]):')
    print(
        f"  PYTHONUNBUFFERED=1 python3 benchmarks/versus.py run --data {dest.name} --out $OUT --wallclock 180 "
        "--side theirs   # then --side ours"
    )
    return 0


# ---------------------------------------------------------------------------------------------------------------
# run (the GPU machine)


def decompress(src: Path, dst: Path) -> None:
    if dst.is_file() and dst.stat().st_size > 1024:
        return
    tmp = dst.with_suffix(".tmp")
    with lzma.open(src) as fin, open(tmp, "wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 24)
    os.replace(tmp, dst)


def stage_data(data: Path, work: Path) -> dict[str, str]:
    """The shards under the upstream names in work/data (decompressed once; a warm machine keeps /tmp)."""
    d = work / "data"
    d.mkdir(parents=True, exist_ok=True)
    for name in (*TRAIN_SHARDS, VAL_PREFIX, TOKENIZER, "train_gpt_315.py"):
        if not (data / name).is_file():
            raise SystemExit(f"{data / name}: missing (run `python benchmarks/versus.py stage` here first)")
    with ThreadPoolExecutor(len(TRAIN_SHARDS)) as ex:  # lzma releases the GIL
        list(
            ex.map(
                lambda i: decompress(data / TRAIN_SHARDS[i], d / f"fineweb_train_{i:06d}.bin"), range(len(TRAIN_SHARDS))
            )
        )
    val = d / "fineweb_val_000000.bin"
    if not val.exists():
        val.symlink_to((data / VAL_PREFIX).resolve())
    n = (val.stat().st_size - 1024) // 2
    if n != VAL_TARGETS + 1:
        raise SystemExit(f"{data / VAL_PREFIX}: {n} tokens, expected {VAL_TARGETS + 1}")
    return {"DATA_PATH": str(d), "TOKENIZER_PATH": str((data / TOKENIZER).resolve()), "VOCAB_SIZE": "1024"}


def install_wheels(data: Path, site: Path, dry: bool) -> list[str]:
    wheels = sorted(str(p) for pat in WHEELS for p in data.glob(pat))
    if wheels and not dry and not (site / "zstandard").is_dir():  # cp312 wheels: the GPU machine's Python
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target", str(site), *wheels],
            check=True,
        )
    return [Path(w).name for w in wheels]


def find_fa3(site: Path, log: list[str]) -> str | None:
    """A built FA3 wheel from .cache/fa3/ installed into `site` when it imports and matches SDPA here, else None."""
    wheels = sorted(glob.glob(str(REPO / ".cache/fa3/**/flash_attn_3*.whl"), recursive=True))
    if not wheels:
        log.append("fa3: no built wheel in .cache/fa3/")
        return None
    fa3_site = site.parent / "fa3-site"
    shutil.rmtree(fa3_site, ignore_errors=True)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-index",
            "--no-deps",
            "--target",
            str(fa3_site),
            wheels[-1],
        ],
        capture_output=True,
        text=True,
    )
    if r.returncode == 0:
        env = {**os.environ, "PYTHONPATH": f"{fa3_site}:{os.environ.get('PYTHONPATH', '')}"}
        r = subprocess.run([sys.executable, "-c", FA3_CHECK], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        log.append(f"fa3: {wheels[-1]} unusable here: {(r.stderr or r.stdout).strip().splitlines()[-1:]}")
        return None
    log.append(f"fa3: {Path(wheels[-1]).name} ({r.stdout.strip()})")
    return str(fa3_site)


def launch(script: Path, env: dict, cwd: Path, log: Path, timeout: float, extra=(), sample=None) -> tuple[int, float]:
    """Run `script` under torchrun (one rank) with its output in `log`; `sample` (a dry run): a log to copy instead."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", str(script), *extra]
    t0 = time.perf_counter()
    with open(log, "w") as f:
        f.write(f"$ {' '.join(cmd)}\n# env: {json.dumps({k: v for k, v in env.items() if os.environ.get(k) != v})}\n")
        f.write(f"# cwd: {cwd}, timeout {timeout:.0f} s\n")
        f.flush()
        if sample is not None:
            f.write(Path(sample).read_text() if Path(sample).is_file() else "")
            return 0, 0.0
        try:
            rc = subprocess.run(cmd, env=env, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = 124
            f.write(f"\nversus: killed after {timeout:.0f} s (the call's budget)\n")
    return rc, time.perf_counter() - t0


def theirs_result(log: Path, rc: int, wall: float, attention: str) -> dict:
    from pgolf.logs import parse_log

    p = parse_log(log)
    sliding = [v for t, v in p["final"].items() if "sliding" in t]
    live = p["val_points"][-1][2] if p["val_points"] else None
    return {
        "side": "theirs",
        "script": "#315 (1.1248) train_gpt.py",
        "rc": rc,
        "wall_s": wall,
        "attention": attention,
        "steps": p["steps"],
        "step_avg_ms": p["step_avg_ms"],
        "live_val_bpb": live,
        "pre_quant_val_bpb": None,  # the script scores no EMA weights before the export (only the live ones)
        "roundtrip_val_bpb": p["roundtrip"]["val_bpb"] if p["roundtrip"] else None,
        "sliding_val_bpb": sliding[-1]["val_bpb"] if sliding else None,
        "ttt_val_bpb": None,
        "bytes_total": p["bytes_total"],
    }


def ours_result(summary: Path, rc: int, wall: float) -> dict:
    s = json.loads(summary.read_text()) if summary.is_file() else {}
    tt = s.get("ttt_timing") or {}
    out = {
        "side": "ours",
        "script": "src/pgolf/train_gpt.py",
        "rc": rc,
        "wall_s": wall,
        "attention": s.get("attention_backend"),
        "steps": s.get("steps"),
        "step_avg_ms": s.get("step_avg_ms"),
        "live_val_bpb": s.get("live_val_bpb"),
        "pre_quant_val_bpb": s.get("pre_quant_val_bpb"),
        "roundtrip_val_bpb": s.get("roundtrip_val_bpb"),
        "sliding_val_bpb": s.get("sliding_val_bpb"),
        "ttt_val_bpb": s.get("ttt_val_bpb"),
        "bytes_total": s.get("bytes_total"),
        "startup_s": s.get("startup_s"),
        "ttt": s.get("ttt"),
        "ttt_timing": tt or None,
    }
    if tt:
        other = (s.get("eval_time_s") or 0) - tt["eval_time_s"]  # the roundtrip and sliding passes
        out["ttt_projected_8xh100_s"] = ttt_projection(tt, s.get("val_tokens") or SCORED_TARGETS)
        scale = OFFICIAL_VAL_TARGETS / (s.get("val_tokens") or SCORED_TARGETS)
        out["eval_projected_8xh100_s"] = [other * scale / 8 + t for t in out["ttt_projected_8xh100_s"]]
    return out


def ttt_projection(tt: dict, val_targets: int) -> list[float]:
    """[low, high] seconds of the TTT pass on the official split on 8 GPUs, from this one-GPU pass, both scaled by
    the split's length: scoring splits over the ranks (/8); each chunk's update stays one step whatever the GPU count,
    each rank training 1/8 of the chunk's sequences: a step no faster than 1/8 of this one-GPU step (low: the
    training splits perfectly) and no slower than it (high: the step is bound by latency, not by compute)."""
    scale = OFFICIAL_VAL_TARGETS / val_targets
    return [scale * (tt["ttt_score_s"] + tt["ttt_train_s"]) / 8, scale * (tt["ttt_score_s"] / 8 + tt["ttt_train_s"])]


def cmd_run(a: argparse.Namespace) -> int:
    t_start = time.perf_counter()
    out, data = Path(a.out), Path(a.data).resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(a.work)
    site = work / "site"
    notes: list[str] = []
    wheels = install_wheels(data, site, bool(a.dry_run))
    base = {**os.environ, **schedule(a.wallclock, a.seed), **stage_data(data, work)}
    base["PYTHONPATH"] = f"{site}:{REPO / 'src'}:{os.environ.get('PYTHONPATH', '')}"
    fa3_site = find_fa3(site, notes)
    if fa3_site:
        base["PYTHONPATH"] = f"{fa3_site}:{base['PYTHONPATH']}"
    info = {
        "wallclock_s": a.wallclock,
        "seed": a.seed,
        "side": a.side,
        "schedule": schedule(a.wallclock, a.seed),
        "ours_default": OURS_DEFAULT,
        "wheels": wheels,
        "notes": notes,
        "python": sys.version.split()[0],
    }
    try:
        import torch

        info.update(torch=torch.__version__, cuda=torch.version.cuda, gpu=torch.cuda.get_device_name(0))
    except Exception as e:  # the table still says what ran
        info["torch_error"] = repr(e)
    results = []
    sides = ("theirs", "ours") if a.side == "both" else (a.side,)
    for i, side in enumerate(sides):
        left = a.budget - (time.perf_counter() - t_start) - 15  # the table's seconds
        reserve = (a.wallclock + 240) if (side == "theirs" and "ours" in sides[i + 1 :]) else 0
        timeout = max(30.0, left - reserve)
        if side == "theirs":
            wd = work / "theirs"
            shutil.rmtree(wd, ignore_errors=True)
            wd.mkdir(parents=True)
            shutil.copyfile(data / "train_gpt_315.py", wd / "train_gpt.py")
            env = {**base, "RUN_ID": f"versus_theirs_{a.seed}"}
            if fa3_site:
                attention = "FA3 (.cache/fa3 wheel)"
            else:
                (wd / "stub").mkdir()
                (wd / "stub/flash_attn_interface.py").write_text(SDPA_STANDIN)
                env["PYTHONPATH"] = f"{wd / 'stub'}:{env['PYTHONPATH']}"
                attention = "SDPA stand-in for flash_attn_interface (no FA3 here)"
            log = out / ("theirs" + (f"_{a.tag}" if a.tag else "") + ".log")
            rc, wall = launch(wd / "train_gpt.py", env, wd, log, timeout, sample=a.dry_run)
            res = theirs_result(log, rc, wall, attention)
        else:
            from pgolf.pack import ship

            wd = work / "ours"
            shutil.rmtree(wd, ignore_errors=True)
            wd.mkdir(parents=True)
            packed, _ = ship((REPO / "src/pgolf/train_gpt.py").read_bytes())
            (wd / "train_gpt.py").write_bytes(packed)  # the bytes a record ships: the artifact counts these
            d = Path(base["DATA_PATH"])
            env = {
                **base,
                "RUN_ID": f"versus_ours_{a.seed}",
                "TRAIN_FILES": str(d / "fineweb_train_*.bin"),
                "VAL_FILES": str(d / "fineweb_val_000000.bin"),
                **parse_env(a.ttt, "--ttt"),
                "VAL_TOKENS_LIMIT": str(SCORED_TARGETS + 1),
                **parse_env(OURS_DEFAULT, "OURS_DEFAULT"),
                **parse_env(a.ours_env, "--ours-env"),
            }
            extra = ["--stage", "all", "--summary", str(wd / "summary.json"), "--artifact", str(wd / "final_model.ptz")]
            extra += ["--code-file", str(wd / "train_gpt.py"), "--logfile", str(wd / "train.log")]
            if a.dry_run and Path(a.dry_run_summary).is_file():
                shutil.copyfile(a.dry_run_summary, wd / "summary.json")
            log = out / ("ours" + (f"_{a.tag}" if a.tag else "") + ".log")
            rc, wall = launch(REPO / "src/pgolf/train_gpt.py", env, wd, log, timeout, extra, a.dry_run)
            res = ours_result(wd / "summary.json", rc, wall)
            res["code_bytes"] = (wd / "train_gpt.py").stat().st_size
        res["side"] = side + (f"_{a.tag}" if a.tag else "")
        res["seed"], res["settings"] = a.seed, parse_env(a.ours_env, "--ours-env") if side == "ours" else {}
        (out / f"{res['side']}.json").write_text(json.dumps(res, indent=2, sort_keys=True) + "\n")
        results.append(res)
        print(f"versus: {side} done rc={rc} in {wall:.0f} s", flush=True)
    info["total_s"] = time.perf_counter() - t_start
    (out / "env.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    table = render(results, info)
    (out / "versus.md").write_text(table)
    print(table)
    return 0 if all(r["rc"] == 0 for r in results) else 1


# ---------------------------------------------------------------------------------------------------------------
# table


def fmt(v, spec: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return format(v, spec)


def render(results: list[dict], info: dict | None = None) -> str:
    info = info or {}
    lines = []
    if info:
        lines.append(
            f"W = {info.get('wallclock_s')} s, seed {info.get('seed')}, {info.get('gpu', '?')}, torch "
            f"{info.get('torch', '?')}; schedule: "
            + " ".join(
                f"{k}={info['schedule'][k]}"
                for k in ("WARMDOWN_ITERS", "MUON_MOMENTUM_WARMUP_STEPS", "EMA_DECAY", "WARMUP_STEPS")
                if k in info.get("schedule", {})
            )
        )
        lines += [f"- {n}" for n in info.get("notes", [])]
        lines.append(f"- both score the first {SCORED_TARGETS:,} targets of the prefix (#315 keeps whole sequences)")
        if info.get("ours_default"):
            lines.append(f"- ours also: {info['ours_default']}")
        lines.append("")
    lines += [
        "| script | attention | rc | steps | ms/step | live val_bpb | pre-quant (EMA) | roundtrip | sliding s64 | "
        "TTT | artifact bytes | wall s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['side']}: {r['script']}{settings_text(r)} | {r.get('attention') or '-'} | {r['rc']} | "
            f"{fmt(r.get('steps'), 'd')} | {fmt(r.get('step_avg_ms'), '.1f')} | {fmt(r.get('live_val_bpb'), '.4f')} | "
            f"{fmt(r.get('pre_quant_val_bpb'), '.4f')} | {fmt(r.get('roundtrip_val_bpb'), '.5f')} | "
            f"{fmt(r.get('sliding_val_bpb'), '.5f')} | {fmt(r.get('ttt_val_bpb'), '.5f')} | "
            f"{fmt(r.get('bytes_total'), ',d')} | {fmt(r.get('wall_s'), '.0f')} |"
        )
    theirs = [r for r in results if r["side"].startswith("theirs") and r.get("sliding_val_bpb")]
    if theirs:
        t = sum(r["sliding_val_bpb"] for r in theirs) / len(theirs)
        lines += [""] + [
            f"{r['side']} - #315 (mean of {len(theirs)} run(s)), sliding: {r['sliding_val_bpb'] - t:+.5f} bpb "
            "(goal: <= -0.03)"
            for r in results
            if r["side"].startswith("ours") and r.get("sliding_val_bpb")
        ]
    for o in results:
        tt = o.get("ttt_timing")
        if not tt:
            continue
        gain = o["ttt_val_bpb"] - o["sliding_val_bpb"] if o.get("sliding_val_bpb") else None
        lines += [
            "",
            f"{o['side']} TTT ({' '.join(f'{k}={v}' for k, v in (o.get('ttt') or {}).items())}): "
            f"{fmt(gain, '+.5f')} bpb against the sliding pass; {tt['ttt_chunks']} chunks, {tt['ttt_updates']} "
            f"updates of {tt['ttt_params']:,} parameters; one GPU: scoring {tt['ttt_score_s']:.1f} s + training "
            f"{tt['ttt_train_s']:.1f} s; projected to 8xH100 on the {OFFICIAL_VAL_TARGETS:,}-target split: "
            f"{o['ttt_projected_8xh100_s'][0]:.0f}-{o['ttt_projected_8xh100_s'][1]:.0f} s (training split perfectly "
            "over the ranks / not at all), the whole evaluation with the roundtrip and sliding passes "
            f"{o['eval_projected_8xh100_s'][0]:.0f}-{o['eval_projected_8xh100_s'][1]:.0f} s (budget 600 s)",
        ]
    return "\n".join(lines) + "\n"


def settings_text(r: dict) -> str:
    extra = dict(r.get("settings") or {})
    if r.get("seed") is not None:
        extra["SEED"] = r["seed"]
    return f" ({' '.join(f'{k}={v}' for k, v in extra.items())})" if extra else ""


def cmd_table(a: argparse.Namespace) -> int:
    results, info = [], {}
    for d in a.dirs:
        d = Path(d)
        for f in sorted(d.glob("theirs*.json")) + sorted(d.glob("ours*.json")):
            r = json.loads(f.read_text())
            results = [x for x in results if x["side"] != r["side"]] + [r]
        if (d / "env.json").is_file():
            info = json.loads((d / "env.json").read_text())
            info["notes"] = info.get("notes", [])
    if not results:
        raise SystemExit(f"table: no theirs*.json / ours*.json in {', '.join(a.dirs)}")
    results.sort(key=lambda r: (not r["side"].startswith("theirs"), r["side"]))
    print(render(results, info), end="")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("stage", help="copy the data and wheels into an ignored folder of the checkout (here)")
    s.add_argument("--shared", default=str(REPO.parent / "shared"))
    s.add_argument("--dest", default=str(REPO / ".versus"))
    s.set_defaults(fn=cmd_stage)
    r = sub.add_parser("run", help="train, export and score one or both scripts (the GPU machine)")
    r.add_argument("--data", default=".versus", help="the staged folder (carried)")
    r.add_argument("--out", default=os.environ.get("OUT", "/tmp/versus-out"))
    r.add_argument("--work", default="/tmp/versus")
    r.add_argument("--side", choices=("both", "theirs", "ours"), required=True, help="both: over 9 minutes at W=180")
    r.add_argument("--wallclock", type=float, default=180.0, help="W: each script's training cap in seconds")
    r.add_argument("--seed", type=int, default=1337)
    r.add_argument("--budget", type=float, default=540.0, help="seconds this call may take in all")
    r.add_argument("--ttt", default=TTT_DEFAULT, help="our TTT settings (KEY=VALUE ...); TTT_EPOCHS=0: none")
    r.add_argument("--ours-env", default="", help=f"settings for our script only, over {OURS_DEFAULT!r}")
    r.add_argument("--tag", default="", help="names this run's rows and files (<side>_<tag>.json): a variant, a seed")
    r.add_argument("--dry-run", metavar="THEIRS_LOG", help="run nothing: this log stands for #315's (a test)")
    r.add_argument("--dry-run-summary", default="", help="with --dry-run: a summary JSON that stands for ours")
    r.set_defaults(fn=cmd_run)
    t = sub.add_parser("table", help="the table of one or more runs' --out folders")
    t.add_argument("dirs", nargs="+")
    t.set_defaults(fn=cmd_table)
    a = p.parse_args(argv)
    if getattr(a, "wallclock", 180) <= 0:
        raise SystemExit("--wallclock must be > 0")
    return a.fn(a)


if __name__ == "__main__":
    sys.exit(main())
