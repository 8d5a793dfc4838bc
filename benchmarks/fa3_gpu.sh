#!/usr/bin/env bash
# The fa3 step for real on a GPU machine without network (issue 19): `pgolf fa3` builds FlashAttention 3 from a git
# bundle, caches the wheel, installs it and checks it against PyTorch SDPA; a second run is a cache hit (timed); a
# check of the training script's own attention with ATTN_BACKEND=fa3 against sdpa (benchmarks/attention.py); a
# deliberately broken copy of the source fails, quoting the compiler error and naming the build log, once with
# fa3.required (the step fails) and once without (the fallback is recorded). A table of times and outcomes last.
#
# Usage (repository root as cwd):  bash benchmarks/fa3_gpu.sh PATH/TO/flash-attention-<commit>-hopper.bundle
#   the bundle: ../shared/fa3/ (see its SOURCE.md), copied into .fa3src/ (ignored by .gitignore) and carried:
#   mkdir -p .fa3src && cp ../shared/fa3/*.bundle .fa3src/
#   then on the GPU machine: bash benchmarks/fa3_gpu.sh .fa3src/flash-attention-0251105a-hopper.bundle
# Needs only what the GPU machine has (python3 with torch, pip, setuptools, wheel, ninja, packaging; nvcc; git):
# `python -m pgolf.fa3` runs from src/ on PYTHONPATH and imports neither Snakemake nor jsonschema, zstandard, brotli.
# FA3 is installed into a throw-away venv (/tmp/fa3-venv, layered over python3's environment: benchmarks/layered_venv.sh),
# not python3's own environment.
# Logs, statuses and the table go to $OUT/fa3 (or /tmp/fa3_gpu). MAX_JOBS: the machine's cores (nproc).
set -uo pipefail

BUNDLE=${1:?usage: bash benchmarks/fa3_gpu.sh PATH/TO/flash-attention-hopper.bundle}
BUNDLE=$(readlink -f "$BUNDLE")
[ -f "$BUNDLE" ] || { echo "fa3_gpu.sh: $BUNDLE: no such bundle" >&2; exit 2; }
ROOT=$(pwd)
[ -f "$ROOT/src/pgolf/fa3.py" ] || { echo "fa3_gpu.sh: run it from the repository root" >&2; exit 2; }
DEST=${OUT:-/tmp/fa3_gpu}/fa3
WORK=$(mktemp -d /tmp/fa3-gpu.XXXXXX)
CACHE=$WORK/cache
mkdir -p "$DEST"
export PATH="/usr/local/cuda/bin:$PATH"
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
export NCCL_NVLS_ENABLE=0
JOBS=$(nproc)

PY=python3
rm -rf /tmp/fa3-venv  # a warm machine keeps /tmp: start from no FA3 installed
if python3 -c 'import flash_attn_interface' 2>/dev/null; then
  echo "note: the system Python already has flash_attn_interface: the step will report it as preinstalled" >&2
fi
# Not `python3 -m venv --system-site-packages` alone: python3 is /opt/torch/.venv's there, and a venv made from a
# venv's python is a venv of the base interpreter, without torch ("No module named 'torch'" in 0.1 s, issue 27):
# benchmarks/layered_venv.sh adds python3's own site-packages to the new venv.
if bash "$ROOT/benchmarks/layered_venv.sh" python3 /tmp/fa3-venv >"$DEST/venv.err" 2>&1 &&
  /tmp/fa3-venv/bin/python -c 'import torch' 2>>"$DEST/venv.err"; then
  PY=/tmp/fa3-venv/bin/python
else
  echo "no venv ($(tail -1 "$DEST/venv.err")): installing into the system Python" >&2
  export PIP_BREAK_SYSTEM_PACKAGES=1
fi
COMMIT=$(git bundle list-heads "$BUNDLE" | awk '$2 == "HEAD" {print $1}')
[ -n "$COMMIT" ] || COMMIT=$(git bundle list-heads "$BUNDLE" | awk 'NR == 1 {print $1}')
{
  echo "bundle $BUNDLE at $COMMIT; MAX_JOBS=$JOBS; python $($PY -c 'import sys; print(sys.executable)')"
  $PY -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))'
  nvcc --version | tail -2
} | tee "$DEST/machine.txt"

ROWS=()
START=$(date +%s)
BUDGET_S=${FA3_GPU_BUDGET_S:-540}  # the whole script stays inside one 10-minute call
# run NAME TIMEOUT ARGS...: one `pgolf fa3` with its own status, environment, step log and build log
run() {
  local name=$1 limit=$2
  shift 2
  local t0 t1 rc left
  left=$((START + BUDGET_S - $(date +%s)))
  if [ "$left" -lt 30 ]; then
    ROWS+=("$(printf '%-22s %8s  %4s  %s' "$name" - - "skipped (the script's $BUDGET_S s are spent)")")
    return 0
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  t0=$(date +%s.%N)
  timeout "$limit" "$PY" -m pgolf.fa3 --config config/config.yaml --cache-dir "$CACHE" --max-jobs "$JOBS" \
    --status "$DEST/$name.status.json" --environment "$DEST/$name.environment.json" \
    --build-log "$DEST/$name.build.log" "$@" >"$DEST/$name.log" 2>&1
  rc=$?
  t1=$(date +%s.%N)
  local secs outcome
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", b - a}')
  outcome=$("$PY" - "$DEST/$name.status.json" "$rc" "$DEST/$name.log" <<'PY'
import json, sys
from pathlib import Path
path, rc, log = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
if rc == 124:
    print("TIMEOUT")
elif not path.exists():
    lines = log.read_text(errors="replace").splitlines()
    first = next((lines[i + 1].strip() for i, x in enumerate(lines[:-1]) if x.endswith("first error lines:")), None)
    print(f"failed (exit {rc})" + (f", quotes: {first[:110]}" if first else ""))
else:
    s = json.loads(path.read_text())
    if s.get("available"):
        diff = (s.get("verify") or {}).get("max_abs_diff")
        hit = "cache hit" if s.get("cached") else "no cache hit"
        print(f"{s['state']}, {hit}, installed {s.get('installed')}, vs SDPA {diff:.4f}")
    else:
        print(f"unavailable, fallback {s.get('fallback')} recorded: {s.get('reason', '').splitlines()[0][:80]}")
PY
)
  ROWS+=("$(printf '%-22s %8s  %4s  %s' "$name" "$secs" "$rc" "$outcome")")
  echo "== $name: exit $rc in $secs s: $outcome"
  grep -E "^fa3: (available|not available|cache hit|built)|error: " "$DEST/$name.log" | head -n 4
  return "$rc"
}

# 1. build from the bundle (no network), cache, install, check against SDPA; fa3.required: a failure fails the run
if run build-from-bundle 330 --source build --repo "$BUNDLE" --commit "$COMMIT" --required; then
  # 2. the same again: the cached wheel, already installed (timed)
  run second-run 60 --source build --repo "$BUNDLE" --commit "$COMMIT" --required
else
  ROWS+=("$(printf '%-22s %8s  %4s  %s' second-run - - "skipped (the build failed: $DEST/build-from-bundle.log)")")
fi
# 3. the training script's own attention with ATTN_BACKEND=fa3 (its attention_backend and attend, forward+backward at
#    the training shapes, error against fp32 math), beside sdpa: benchmarks/attention.py
t0=$(date +%s.%N)
if [ $((START + BUDGET_S - $(date +%s))) -gt 90 ]; then
  timeout 120 "$PY" benchmarks/attention.py --backends sdpa,fa3 --iters 10 --out "$DEST/attention.json" \
    >"$DEST/attention.log" 2>&1
  rc=$?
  secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
  outcome=$(grep -E "^ +(fa3|sdpa) +err" "$DEST/attention.log" | sed 's/  */ /g' | paste -sd';' -)
  ROWS+=("$(printf '%-22s %8s  %4s  %s' attention-fa3-vs-sdpa "$secs" "$rc" "${outcome:-see attention.log}")")
  echo "== attention through train_gpt.py: exit $rc in $secs s"
  tail -n 3 "$DEST/attention.log"
fi
# 4. a broken copy of the source (an #error in hopper/flash.h, which every file includes): the step fails, quoting it
BROKEN=$WORK/broken
git clone -q "$BUNDLE" "$BROKEN"
sed -i '0,/#pragma once/s//#pragma once\n#error "pgolf benchmarks\/fa3_gpu.sh: a deliberate compiler error"/' "$BROKEN/hopper/flash.h"
git -C "$BROKEN" -c user.name=pgolf -c user.email=pgolf@localhost commit -qam "deliberately broken"
BROKEN_COMMIT=$(git -C "$BROKEN" rev-parse HEAD)
run broken-required 120 --source build --repo "$BROKEN" --commit "$BROKEN_COMMIT" --required
echo "-- the step's error message (broken-required.log):"
grep -A 6 "error: fa3: FlashAttention 3 is required" "$DEST/broken-required.log" | head -n 8 | tee "$DEST/quoted.txt"
# 5. the same broken source with fa3.required false: the reason and the fallback recorded, the step succeeds
run broken-not-required 120 --source build --repo "$BROKEN" --commit "$BROKEN_COMMIT" --no-required

for f in "$DEST"/*.build.log; do  # the build logs can be large: keep the head and the tail of each
  if [ "$(wc -c <"$f")" -gt 2000000 ]; then
    { head -c 1000000 "$f"; echo; echo "[... cut by fa3_gpu.sh ...]"; tail -c 1000000 "$f"; } >"$f.cut" && mv "$f.cut" "$f"
  fi
done
build_s=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1])).get("build_seconds"))' \
  "$DEST/build-from-bundle.status.json" 2>/dev/null || echo n/a)
{
  echo
  echo "fa3 on $(grep -m1 "^torch" "$DEST/machine.txt"); MAX_JOBS=$JOBS; pip wheel time (build.json): $build_s s"
  printf '%-22s %8s  %4s  %s\n' step seconds exit outcome
  printf '%s\n' "${ROWS[@]}"
} | tee "$DEST/table.txt"
rm -rf "$WORK"
