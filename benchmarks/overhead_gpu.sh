#!/usr/bin/env bash
# Per-seed overhead on one GPU machine in one call (issue 26, item 9): benchmarks/overhead_gpu.py's table.
#   here (once):        bash benchmarks/overhead_gpu.sh stage      # fills .ovh/ (git-ignored, about 30 MB) from ../shared
#   on the GPU machine: bash benchmarks/overhead_gpu.sh run "$OUT"  # carry: [".ovh"]; about 4-5 minutes
# stage copies what the GPU machine lacks into .ovh/: the brotli and zstandard wheels (../shared/wheels/gpu-py312),
# one blog-authorship train shard (xz; measurement only, never committed), the FineWeb validation prefix and the sp1024
# tokenizer. run installs the wheels into /tmp without network, unpacks the shard into /tmp and runs the benchmark
# with the machine's torch (/opt/torch/.venv/bin/python3, else python3). Time: OVERHEAD_BUDGET_S (265 s; steps that
# would start later are skipped, a step still running 15 s past it is stopped), so the call ends within 300 s (give the
# run timeout_s 300); the cold seed takes about 200 s on an H200; 480 fits both seeds and the CPU-vs-GPU check.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
carry="$here/.ovh"
case "${1:-}" in
stage)
  shared="${SHARED:-$here/../shared}"
  mkdir -p "$carry/wheels" "$carry/data"
  cp "$shared"/wheels/gpu-py312/brotli-*.whl "$shared"/wheels/gpu-py312/zstandard-*.whl "$carry/wheels/"
  cp "$shared/data/blog_authorship_sp1024/blogs_train_000000.bin.xz" "$carry/data/"
  cp "$shared/data/fineweb_sp1024_official/fineweb_val_prefix_sp1024.bin" \
    "$shared/data/fineweb_sp1024_official/fineweb_1024_bpe.model" "$carry/data/"
  du -sh "$carry"
  ;;
run)
  out=${2:?usage: overhead_gpu.sh run OUT}
  mkdir -p "$out"
  py=${PY:-/opt/torch/.venv/bin/python3}
  [ -x "$py" ] || py=python3
  site=/tmp/pgolf-ovh-site data=/tmp/pgolf-ovh-data
  if ! PYTHONPATH="$site" "$py" -c "import brotli, zstandard" 2> /dev/null; then
    "$py" -m pip install -q --no-index --no-deps --target "$site" "$carry"/wheels/*.whl
  fi
  mkdir -p "$data"
  [ -f "$data/blogs_train_000000.bin" ] || xz -dc "$carry/data/blogs_train_000000.bin.xz" > "$data/blogs_train_000000.bin"
  cp -f "$carry/data/fineweb_val_prefix_sp1024.bin" "$carry/data/fineweb_1024_bpe.model" "$data/"
  # empty compile caches: the first seed starts as on a fresh pod (OVERHEAD_FRESH=0 keeps the last call's: warm seeds)
  [ "${OVERHEAD_FRESH:-1}" = 0 ] || rm -rf /tmp/pgolf-overhead
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" NCCL_NVLS_ENABLE=0
  nvidia-smi -L || true
  budget=${OVERHEAD_BUDGET_S:-265}
  set +e
  timeout $((budget + 15)) "$py" "$here/benchmarks/overhead_gpu.py" --data "$data" --out "$out" \
    --budget "$budget" "${@:3}" > "$out/driver.log" 2>&1
  rc=$?
  set -e
  tail -n 30 "$out/driver.log"
  [ -f "$out/table.md" ] && cat "$out/table.md"
  exit "$rc"
  ;;
*)
  echo "usage: $0 stage | run OUT [overhead_gpu.py options]" >&2
  exit 2
  ;;
esac
