#!/usr/bin/env bash
# Second GPU session: eval throughput (stride 64, FineWeb validation prefix) at two batch sizes, and training
# throughput of the full 11-layer configuration with each PyTorch SDPA kernel.
# Usage: benchmarks/run_h100_b.sh DATA_DIR OUT_DIR
set -euo pipefail
data=$1 out=$2
mkdir -p "$out"
here=$(cd "$(dirname "$0")/.." && pwd)
for bs in 32 64; do
  python "$here/benchmarks/eval_throughput.py" --val-files "$data/fineweb_val_*.bin" --tokenizer "$data/fineweb_1024_bpe.model" \
    --batch-seqs "$bs" --out "$out/eval_bs$bs.json" | tee "$out/eval_bs$bs.txt"
done
for backend in ${BACKENDS:-sdpa_cudnn sdpa_flash}; do
  python "$here/benchmarks/throughput.py" --train-files "$data/*_train_*.bin" --val-files "$data/fineweb_val_*.bin" \
    --tokenizer "$data/fineweb_1024_bpe.model" --steps "${STEPS:-25}" --warmup-steps 5 --out "$out/train_$backend.json" \
    "ATTN_BACKEND=$backend" | tee "$out/train_$backend.txt" || echo "backend $backend failed"
done
