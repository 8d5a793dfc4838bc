"""Per-seed overhead on one GPU: everything a seed's three steps spend beyond training and scoring (issue 26, item 9).

    python benchmarks/overhead_gpu.py --data DIR --out OUT [--seeds 2] [--cap 5] [--budget 265]

Runs each seed's train -> quantize -> evaluate as the pipeline runs them (`pgolf.stages.launch`: torchrun for train
and evaluate, a plain process for quantize, the compile caches under the working folder's `.cache/`, one thread per
rank as Snakemake gives the rules) with the production config (`config/config.yaml`) except:
- one pod rank's work per step: TRAIN_BATCH_TOKENS = 48 x 2048 and GRAD_ACCUM_STEPS=1, the micro-batch each of the
  8 ranks of a pod runs, so the compile, the warm-up steps and the step time are those of a pod's rank;
- a short training cap (`--cap`, GPTQ_RESERVE_SECONDS=2) and VAL_TOKENS_LIMIT (`--val-tokens`) for the scoring: both
  are outside the overhead, which is what this measures;
- the over-cap path off (QUANT_FIT_MLP_BITS=0, PRUNE_MAX_FRAC=0, ENFORCE_CAP=0): a model trained for seconds
  compresses worse than a real one, and a real one fits without refitting or pruning (issue 26: measure on a
  checkpoint that fits).
The later seeds train, then score seed 1's artifact (the same shapes and compile as their own); quantize does the same
work whatever the caches, so they show seed 1's.
The first seed starts with the compile caches as the working folder has them (empty on a fresh machine: a fresh pod;
`overhead_gpu.sh` empties them unless OVERHEAD_FRESH=0, so a second call right after the first measures warm seeds
only), the others reuse them. Then seed 1's checkpoint is
quantized again on the GPU (the same bytes run to run?) and on the CPU (CUDA hidden, all cores: do CPU and GPU agree?),
while the time budget lasts.

DIR holds blogs_train_000000.bin (or any *train*.bin), fineweb_val_prefix_sp1024.bin and fineweb_1024_bpe.model.
OUT gets table.md (printed too), compare.log and logs.tar.gz (each step's output, log and summary).
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(HERE / "src"))

from pgolf.stages import EVAL_ENV, QUANTIZE_ENV, THREAD_VARS, launch, section_env, train_env  # noqa: E402

SCRIPT = HERE / "src" / "pgolf" / "train_gpt.py"
T0 = time.perf_counter()


def compare(checkpoint: Path) -> int:
    """The quantized weights (codes, scales, floats) of `checkpoint` with the stage's settings (the environment) on the
    GPU twice and on the CPU (every core): prints one "- " line per comparison."""
    import torch

    spec = importlib.util.spec_from_file_location("train_gpt_overhead", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    args = mod.Hyperparameters.from_env().with_model(ckpt["model"], str(checkpoint))
    hs = ckpt.get("hessians") if args.gptq else None
    out, secs = {}, {}
    gpu = "cuda" if torch.cuda.is_available() else "cpu"  # (a CPU machine compares the CPU with itself)
    for name, device in (("gpu", gpu), ("gpu again", gpu), ("cpu", "cpu")):
        t = time.perf_counter()
        out[name] = mod.quantize_state(ckpt["state_dict"], args, hs, device)[0]
        secs[name] = time.perf_counter() - t
        print(f"{name} ({device}): {secs[name]:.1f} s ({torch.get_num_threads()} CPU threads)", flush=True)
    ref = out["gpu"]
    for name in ("gpu again", "cpu"):
        diff, total = 0, 0
        for part in ("q", "scales", "floats"):
            for k, v in ref[part].items():
                diff += int((out[name][part][k] != v).sum())
                total += v.numel()
        print(
            f"- {name} ({secs[name]:.1f} s) vs gpu ({secs['gpu']:.1f} s): "
            f"{'IDENTICAL' if diff == 0 else f'{diff} of {total} values differ'} (codes, scales and floats; GPTQ "
            f"{'on' if hs else 'off'}, {torch.get_num_threads()} CPU threads)"
        )
    return 0


def run(stage: str, extra: list[str], env: dict, nproc: int, log: Path, threads: int = 1) -> float:
    """One stage through the pipeline's launcher, its output into `log`; returns its wall time (the process's)."""
    os.environ["OMP_NUM_THREADS"] = str(threads)  # Snakemake's threads for the rule (launch splits them per rank)
    t = time.perf_counter()
    with open(log, "w") as f:  # launch() echoes the stage's output to sys.stdout (and its .buffer)
        old, sys.stdout = sys.stdout, f
        try:
            launch(str(SCRIPT), ["--stage", stage, *extra], env, nproc)
        except RuntimeError as e:
            print(f"FAILED: {e}", flush=True)
            raise
        finally:
            sys.stdout.flush()
            sys.stdout = old
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/pgolf-overhead"))
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--cap", type=float, default=5.0, help="training cap in seconds (MAX_WALLCLOCK_SECONDS)")
    p.add_argument("--val-tokens", type=int, default=262144)
    p.add_argument("--budget", type=float, default=265.0, help="seconds: later steps are skipped past it")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a knob for every step (tests)")
    p.add_argument("--compare", type=Path, help="(internal) compare the quantized weights of this checkpoint")
    a = p.parse_args(argv)
    a.data, a.out, a.workdir = a.data.resolve(), a.out.resolve(), a.workdir.resolve()  # before the chdir below
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(124))  # timeout: the table and the logs are still written
    if a.compare:
        return compare(a.compare)
    a.out.mkdir(parents=True, exist_ok=True)
    a.workdir.mkdir(parents=True, exist_ok=True)
    os.chdir(a.workdir)  # the compile caches go to <workdir>/.cache (empty at first: a fresh pod)
    cfg = yaml.safe_load((HERE / "config" / "config.yaml").read_text())
    train = {k: v for k, v in cfg["train"].items() if k != "mode"}
    seq = int(train["train_seq_len"])
    trains = sorted(glob.glob(str(a.data / "*train*.bin")))
    if not trains:
        raise SystemExit(f"{a.data}: no *train*.bin shard (see benchmarks/overhead_gpu.sh stage)")
    data = {
        "TRAIN_FILES": trains[0],
        "VAL_FILES": str(a.data / "fineweb_val_prefix_sp1024.bin"),
        "TOKENIZER_PATH": str(a.data / "fineweb_1024_bpe.model"),
        "VOCAB_SIZE": "1024",
        "VAL_BYTES_FILES": "",
    }
    tenv = {
        **train_env(train),
        **data,
        "MAX_WALLCLOCK_SECONDS": str(a.cap),
        "GPTQ_RESERVE_SECONDS": "2",
        "TRAIN_BATCH_TOKENS": str(48 * seq),
        "GRAD_ACCUM_STEPS": "1",
        "VAL_TOKENS_LIMIT": str(a.val_tokens),
        "TRAIN_LOG_EVERY": "50",
    }
    quant = {**cfg["quantize"], "quant_fit_mlp_bits": 0, "prune_max_frac": 0, "enforce_cap": False}
    qenv = section_env(quant, QUANTIZE_ENV, "quantize")
    ev = {k: v for k, v in cfg["eval"].items() if k != "time_budget_s"}
    eenv = {**section_env(ev, EVAL_ENV, "eval"), **data, "VAL_TOKENS_LIMIT": str(a.val_tokens)}
    for kv in a.set:
        k, _, v = kv.partition("=")
        for env in (tenv, qenv, eenv):
            env[k] = v
    rows, checks = [], []
    res = a.workdir / "results"
    res.mkdir(exist_ok=True)

    def left() -> float:
        return a.budget - (time.perf_counter() - T0)

    def write_table() -> None:
        lines = [
            f"# Per-seed overhead, one GPU ({a.seeds} seeds, cap {a.cap} s, one pod rank's batch; "
            f"{time.perf_counter() - T0:.0f} s so far)",
            "",
            "| seed | caches | train start-up (first warm-up step done) | train rest | quantize | "
            "eval load | eval compile | eval rest | **overhead** | trained | scored |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            q = r.get("q", {})
            qs = (
                f"{r['quantize']:.1f} (choice {q.get('encoding_choice_s', 0):.1f}, GPTQ on "
                f"{'CPU' if 'device:cpu' in r.get('qlog', '') else 'GPU'}{', ' + r['q_of'] if 'q_of' in r else ''})"
                if "quantize" in r and q
                else "-"
            )
            e = r.get("e", {})
            t = r.get("t", {})
            trained = t.get("train_time_s", 0.0) + t.get("gptq_calib_time_s", 0.0)
            walls = [r.get(k) for k in ("train", "quantize", "eval")]
            over = sum(w for w in walls if w) - trained - e.get("eval_time_s", 0.0) if all(walls) else None
            train_rest = r["train"] - trained - t.get("startup_s", 0.0) if "train" in r and t else None
            eval_rest = r["eval"] - e["eval_time_s"] - e["load_s"] - e["compile_s"] if e else None

            def f(x):
                return "-" if x is None else f"{x:.1f}"

            lines.append(
                f"| {r['seed']} | {r['caches']} | {f(t.get('startup_s'))} ({f(r.get('first_step'))}) | "
                f"{f(train_rest)} | {qs} | "
                f"{f(e.get('load_s'))} | {f(e.get('compile_s'))} | {f(eval_rest)} | **{f(over)}** | "
                f"{f(trained if t else None)} | {f(e.get('eval_time_s'))} |"
            )
        lines += ["", *checks, ""]
        text = "\n".join(lines)
        (a.out / "table.md").write_text(text)

    try:
        for i in range(a.seeds):
            seed = 1 + i
            d = res / f"seed_{seed}"
            d.mkdir(exist_ok=True)
            warm = any((a.workdir / ".cache" / "torchinductor").glob("*"))
            r = {"seed": seed, "caches": "warm" if warm else "cold"}
            if left() < 45:
                checks.append(f"seed {seed}: not run, {left():.0f} s of the budget left")
                break
            rows.append(r)
            env = {**tenv, "SEED": str(seed), "RUN_ID": f"overhead_seed{seed}"}
            ck = ["--checkpoint", str(d / "checkpoint.pt"), "--summary", str(d / "train.json")]
            r["train"] = run("train", [*ck, "--logfile", str(d / "train.txt")], env, 1, res / f"s{seed}_train.log")
            r["t"] = json.loads((d / "train.json").read_text())
            first = re.search(r"^warmup_step:1/\d+ time:([\d.]+)s", (d / "train.txt").read_text(), re.M)
            r["first_step"] = float(first.group(1)) if first else None
            write_table()
            if i == 0:  # quantize does not depend on the compile caches: the later seeds reuse its figures
                if left() < 15:
                    checks.append(f"seed {seed}: quantize and eval not run, {left():.0f} s of the budget left")
                    break
                qa = ["--checkpoint", str(d / "checkpoint.pt"), "--artifact", str(d / "model.ptz")]
                qa += ["--code-file", str(SCRIPT), "--summary", str(d / "quantize.json"), "--logfile", str(d / "q.txt")]
                r["quantize"] = run("quantize", qa, {**qenv, "SEED": str(seed)}, 0, res / f"s{seed}_quantize.log")
                r["q"] = json.loads((d / "quantize.json").read_text())
                r["qlog"] = (d / "q.txt").read_text()
            else:
                r.update({k: rows[0][k] for k in ("quantize", "q", "qlog") if k in rows[0]}, q_of="seed 1's")
            write_table()
            if left() < 15 or not (res / "seed_1" / "model.ptz").is_file():
                checks.append(f"seed {seed}: eval not run, {left():.0f} s of the budget left")
                break
            # the later seeds score seed 1's artifact: the same shapes and compile as their own would
            ea = ["--artifact", str(res / "seed_1" / "model.ptz"), "--summary", str(d / "eval.json")]
            ea += ["--logfile", str(d / "e.txt")]
            r["eval"] = run("eval", ea, {**eenv, "SEED": str(seed)}, 1, res / f"s{seed}_eval.log")
            r["e"] = json.loads((d / "eval.json").read_text())
            write_table()
        ck = res / "seed_1" / "checkpoint.pt"
        if ck.is_file() and left() > 20:
            os.environ["OMP_NUM_THREADS"] = str(os.cpu_count() or 1)
            t = time.perf_counter()
            try:
                proc = subprocess.run(
                    [sys.executable, __file__, "--compare", str(ck), "--data", str(a.data), "--out", str(a.out)],
                    env={**os.environ, **qenv, **{k: str(os.cpu_count() or 1) for k in THREAD_VARS}},
                    capture_output=True,
                    text=True,
                    timeout=max(left(), 1),
                )
                out = proc.stdout + proc.stderr
            except subprocess.TimeoutExpired as e:
                out = f"{e.stdout or ''}{e.stderr or ''}\nstopped at the budget"
            (a.out / "compare.log").write_text(out)
            checks.append(f"quantized weights of seed 1, CPU vs GPU ({time.perf_counter() - t:.0f} s):")
            found = [line for line in out.splitlines() if line.startswith("- ")]
            checks += found or ["- no result, see compare.log"]
        else:
            checks.append(f"CPU vs GPU comparison: skipped ({left():.0f} s of the budget left)")
    finally:
        write_table()
        with tarfile.open(a.out / "logs.tar.gz", "w:gz") as tar:
            for f in sorted(res.rglob("*")):
                if f.suffix in (".json", ".txt", ".log"):
                    tar.add(f, arcname=str(f.relative_to(res)))
        print((a.out / "table.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
