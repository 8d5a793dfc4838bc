"""The packed training script against its source on the GPU: same seed, short training, quantize, evaluate.

Packs src/pgolf/train_gpt.py as the pipeline does (pgolf.pack), then runs each script through the pipeline's three
stages (train under torchrun, quantize, eval under torchrun) with the same seed and a small configuration, and prints
a table: the train losses at the logged steps, the artifact's sha256, val_bpb, the attention backend and the fused
Triton kernels that were compiled (from each run's own Triton cache). The source runs twice: GPU training is not
bit-for-bit deterministic (Triton autotuning and the MLP backward kernel are picked by timing, some backward kernels
use atomics), so the second source run is the noise floor the packed run is judged against.

    PYTHONPATH=src python benchmarks/pack_gpu.py --train-files 'DIR/fineweb_train_*.bin' \\
        --val-files 'DIR/fineweb_val_*.bin' --tokenizer DIR/fineweb_1024_bpe.model --out /tmp/pack_gpu

Needs torch (with Triton), numpy and sentencepiece; not snakemake. Extra KEY=VALUE arguments override the small
configuration (they are the script's environment variables). Every stage runs under a timeout (--stage-timeout); a run
already finished in --out with the same script and settings is read back, so a call cut short resumes.
Exits 0 when the packed run matches the source run exactly (losses, trained weights, artifact bytes, val_bpb); 1 when
it differs but so do the two source runs (GPU nondeterminism: compare the columns); 2 when it differs and the source
runs agree.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "src" / "pgolf" / "train_gpt.py"
STEP = re.compile(r"^step:(\d+)/\d+ train_loss:(\S+)", re.M)
# A small model the fused kernels accept (power-of-two heads and head dims, width a multiple of 64), a few dozen
# steps, torch.compile on, GPTQ calibration, and a validation slice so that evaluation takes seconds.
SMALL = {
    "NUM_LAYERS": "4",
    "MODEL_DIM": "256",
    "NUM_HEADS": "4",
    "NUM_KV_HEADS": "2",
    "XSA_LAST_N": "2",
    "BIGRAM_VOCAB_SIZE": "1024",
    "BIGRAM_DIM": "64",
    "TRAIN_SEQ_LEN": "1024",
    "EVAL_SEQ_LEN": "1024",
    "TRAIN_BATCH_TOKENS": "65536",
    "ITERATIONS": "40",
    "WARMUP_STEPS": "5",
    "WARMDOWN_ITERS": "15",
    "MUON_MOMENTUM_WARMUP_STEPS": "10",
    "MAX_WALLCLOCK_SECONDS": "0",
    "TRAIN_LOG_EVERY": "5",
    "VAL_TOKENS_LIMIT": "1048576",
    "EVAL_STRIDE": "256",
    "EVAL_BATCH_SEQS": "32",
    "GPTQ_CALIB_BATCHES": "2",
    "COMPILE": "auto",
}
KERNELS = re.compile(r"^(qk_prep\w*|relu2_mm\w*)\.(cubin|hsaco|json)$")


def run(cmd: list[str], env: dict, log: Path, timeout: float) -> None:
    """Run one stage in its own process group, so that a timeout also ends torchrun's workers."""
    print("+ " + " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=log.parent, start_new_session=True
        )
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise SystemExit(f"{' '.join(cmd[-8:])}: timed out after {timeout:.0f} s; see {log}") from None
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"failed ({proc.returncode}), see {log}:\n{tail}")
    print(f"  {time.perf_counter() - t0:.1f} s", flush=True)


def stages(script: Path, code_file: Path, folder: Path, settings: dict, nproc: int, timeout: float) -> dict:
    """train (torchrun) -> quantize -> eval (torchrun) of one script in `folder`; the results. A run already done with
    the same script, code file and settings is read back from its result.json (a second call resumes)."""
    folder.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(
        json.dumps([script.read_bytes().hex(), code_file.read_bytes().hex(), sorted(settings.items()), nproc]).encode()
    ).hexdigest()
    done = folder / "result.json"
    if done.is_file() and json.loads(done.read_text()).get("key") == key:
        print(f"  done before: {done}", flush=True)
        return json.loads(done.read_text())
    for stale in ("triton", "inductor", "tmp"):
        shutil.rmtree(folder / stale, ignore_errors=True)
    env = {
        **os.environ,
        **settings,
        "PYTHONUNBUFFERED": "1",
        # each run compiles its own kernels (and the packed file's are compiled from the packed file's code)
        "TRITON_CACHE_DIR": str(folder / "triton"),
        "TORCHINDUCTOR_CACHE_DIR": str(folder / "inductor"),
        "TMPDIR": str(folder / "tmp"),
    }
    (folder / "tmp").mkdir(exist_ok=True)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    ckpt, artifact = folder / "ckpt.pt", folder / "final_model.ptz"
    out = {}
    for stage, launcher, args in (
        ("train", torchrun, ["--checkpoint", str(ckpt)]),
        # the same code file for both scripts: the cap logic (fit, prune) sees the same code bytes
        ("quantize", [sys.executable], ["--checkpoint", str(ckpt), "--artifact", str(artifact)]),
        ("eval", torchrun, ["--artifact", str(artifact)]),
    ):
        extra = ["--code-file", str(code_file)] if stage == "quantize" else []
        cmd = [*launcher, str(script), "--stage", stage, *args, *extra]
        cmd += ["--logfile", str(folder / f"{stage}.log"), "--summary", str(folder / f"{stage}.json")]
        run(cmd, env, folder / f"{stage}.out", timeout)
        out[stage] = json.loads((folder / f"{stage}.json").read_text())
    log = (folder / "train.log").read_text()
    kernels = sorted({m.group(1) for p in (folder / "triton").rglob("*") if (m := KERNELS.match(p.name))})
    unpacked = sorted(str(p) for p in (folder / "tmp").rglob("*.py"))
    result = {
        "key": key,
        "weights": weights_sha256(ckpt),
        "steps": {int(s): loss for s, loss in STEP.findall(log)},
        "sha256": hashlib.sha256(artifact.read_bytes()).hexdigest(),
        "artifact_bytes": artifact.stat().st_size,
        "val_bpb": out["eval"]["val_bpb"],
        "pre_quant_val_bpb": out["train"]["pre_quant_val_bpb"],
        "backend": out["train"].get("attention_backend"),
        "kernels": kernels,
        "unpacked": unpacked,
        "code_bytes": out["quantize"]["code_bytes"],
    }
    done.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return result


def weights_sha256(ckpt: Path) -> str:
    """The trained (EMA) weights' bytes, in name order (the checkpoint file also holds timings)."""
    import torch

    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def table(runs: dict[str, dict], script_bytes: dict[str, int]) -> str:
    names = list(runs)
    rows = [("script bytes", *(str(script_bytes[n]) for n in names))]
    rows.append(("code bytes counted", *(str(runs[n]["code_bytes"]) for n in names)))
    for step in sorted(set().union(*(r["steps"] for r in runs.values()))):
        rows.append((f"step {step} train_loss", *(runs[n]["steps"].get(step, "-") for n in names)))
    rows.append(("weights sha256", *(runs[n]["weights"][:16] for n in names)))
    rows.append(("pre-quant val_bpb", *(f"{runs[n]['pre_quant_val_bpb']:.8f}" for n in names)))
    rows.append(("artifact bytes", *(str(runs[n]["artifact_bytes"]) for n in names)))
    rows.append(("artifact sha256", *(runs[n]["sha256"][:16] for n in names)))
    rows.append(("val_bpb", *(f"{runs[n]['val_bpb']:.8f}" for n in names)))
    rows.append(("attention backend", *(str(runs[n]["backend"]) for n in names)))
    rows.append(("fused kernels compiled", *(",".join(runs[n]["kernels"]) or "none" for n in names)))
    widths = [max(len(r[i]) for r in [("", *names), *rows]) for i in range(len(names) + 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(("", *names), widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def same(a: dict, b: dict) -> bool:
    return all(a[k] == b[k] for k in ("steps", "weights", "sha256", "val_bpb"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train-files", default=os.environ.get("TRAIN_FILES"), help="glob of train shards ($TRAIN_FILES)")
    p.add_argument("--val-files", default=os.environ.get("VAL_FILES"), help="glob of val shards ($VAL_FILES)")
    p.add_argument("--tokenizer", default=os.environ.get("TOKENIZER_PATH"), help="SentencePiece model")
    p.add_argument("--out", default="pack_gpu_out", help="working folder (checkpoints, logs, artifacts)")
    p.add_argument("--nproc", type=int, default=0, help="ranks (0: every visible GPU, 1 without CUDA)")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--stage-timeout", type=float, default=500, help="seconds per stage")
    p.add_argument("--no-control", action="store_true", help="skip the second source run (the noise floor)")
    p.add_argument("env", nargs="*", help="KEY=VALUE overrides of the small configuration")
    a = p.parse_args()
    if not (a.train_files and a.val_files and a.tokenizer):
        p.error("give --train-files, --val-files and --tokenizer (or TRAIN_FILES, VAL_FILES, TOKENIZER_PATH)")
    sys.path.insert(0, str(REPO / "src"))
    import torch

    from pgolf.pack import ship

    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    nproc = a.nproc or max(1, torch.cuda.device_count())
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    packed = out / "packed" / "train_gpt.py"
    packed.parent.mkdir(exist_ok=True)
    shipped, how = ship(SCRIPT.read_bytes())
    packed.write_bytes(shipped)
    print(f"{SCRIPT} ({SCRIPT.stat().st_size} bytes) -> {packed} ({packed.stat().st_size} bytes, {how})")
    overrides = dict(kv.split("=", 1) for kv in a.env)
    settings = {**SMALL, **overrides, "SEED": str(a.seed)}
    settings.update(TRAIN_FILES=a.train_files, VAL_FILES=a.val_files, TOKENIZER_PATH=a.tokenizer)
    settings.setdefault(
        "OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // nproc))
    )
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    print(f"device: {nproc}x {device}; torch {torch.__version__}; triton {triton_version}; seed {a.seed}")

    plan = [("source", SCRIPT), ("packed", packed)] + ([] if a.no_control else [("source again", SCRIPT)])
    runs = {}
    for name, script in plan:
        print(f"== {name}: {script}", flush=True)
        runs[name] = stages(script, packed, out / name.replace(" ", "_"), settings, nproc, a.stage_timeout)
    print()
    print(table(runs, {n: s.stat().st_size for n, s in plan}))
    print(f"the packed run's code ran from: {', '.join(runs['packed']['unpacked']) or 'no unpacked file (?)'}")
    (out / "pack_gpu.json").write_text(json.dumps(runs, indent=2, sort_keys=True) + "\n")
    if same(runs["source"], runs["packed"]):
        print("RESULT: the packed script matches the source exactly (losses, weights, artifact sha256, val_bpb)")
        return 0
    control = runs.get("source again")
    if control is not None and not same(runs["source"], control):
        print("RESULT: packed differs from source, and so does the source from itself (GPU nondeterminism)")
        return 1
    print("RESULT: the packed script DIFFERS from the source")
    return 2


if __name__ == "__main__":
    sys.exit(main())
