#!/usr/bin/env bash
# One GPU session's measurements: training throughput of the full 11-layer configuration (786,432 tokens/step on one
# GPU), then the pipeline's quantize and eval stages on that checkpoint (sliding window, stride 64) on the FineWeb
# validation prefix. Usage: benchmarks/run_h100.sh DATA_DIR OUT_DIR [KEY=VALUE ...]
# DATA_DIR holds *_train_*.bin shards, fineweb_val_*.bin and fineweb_1024_bpe.model.
set -euo pipefail
data=$1 out=$2
shift 2
mkdir -p "$out"
here=$(cd "$(dirname "$0")/.." && pwd)
python "$here/benchmarks/throughput.py" --train-files "$data/*_train_*.bin" --val-files "$data/fineweb_val_*.bin" \
  --tokenizer "$data/fineweb_1024_bpe.model" --steps "${STEPS:-40}" --keep "$out/run" --out "$out/throughput.json" "$@" \
  2>&1 | tee "$out/throughput.txt"
export TRAIN_FILES="$data/*_train_*.bin" VAL_FILES="$data/fineweb_val_*.bin" TOKENIZER_PATH="$data/fineweb_1024_bpe.model"
python "$here/src/pgolf/train_gpt.py" --stage quantize --checkpoint "$out/run/c.pt" --artifact "$out/run/model.ptz" \
  --logfile "$out/quantize.log" --summary "$out/quantize.json" > /dev/null
EVAL_STRIDE=${EVAL_STRIDE:-64} python "$here/src/pgolf/train_gpt.py" --stage eval --artifact "$out/run/model.ptz" \
  --logfile "$out/eval.log" --summary "$out/eval.json" > /dev/null
grep -E "Total submission|final_|total_eval" "$out/quantize.log" "$out/eval.log"
