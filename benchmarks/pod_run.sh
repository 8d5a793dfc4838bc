#!/usr/bin/env bash
# The bare-pod route rehearsed on a GPU machine without network (README, "A submission on an 8×H100 pod"): the
# README's own commands on a machine whose Python already has a CUDA torch (as the official RunPod image has), with
# `--no-index --find-links .gpu/wheels` added to the install because the machine has no network:
#   0. the install: `python3 -m pip install -e '.[pod]'` into the Python that has the machine's torch (it stays);
#   1. the refusal without GPUs (CUDA_VISIBLE_DEVICES=), before any data job: shown and timed;
#   2. `snakemake --profile profiles/pod` with an overlay (below): the GPU count detected, FA3 built from the git bundle
#      (fa3.required: true), the demo corpus as data, two seeds with a short training cap, the record;
#   3. a plain `pgolf check` of the record (PASS expected), disk use, and the table of where the time went
#      (benchmarks/pod_table.py), all in $OUT/table.md (printed last).
#
# What it needs, in ignored folders that the device call carries (made by `bash benchmarks/pod_stage.sh` on a machine
# with network, from ../shared; about 52 MB with the checkout):
#   .gpu/wheels/  wheels for what the machine's Python lacks (Snakemake set, pinned huggingface_hub, ...)
#   .fa3src/      flash-attention-0251105a-hopper.bundle (FA3 source; its commit is read from the bundle)
# The device command (one call, at most 9 minutes):
#   run(command="bash benchmarks/pod_run.sh", carry=[".gpu", ".fa3src"], timeout_s=600)
# What comes back in $OUT (8 files): table.md (printed last), machine.txt, install.log, refusal.log, console.log (the
# run's terminal: job status lines, the closing summary), check.txt, fa3.build.tail.log, logs.tar.gz (step logs,
# summaries, the record, the overlay).
# Knobs: CAP (training cap per seed, s; default 20), POD_BUDGET_S (the whole script's budget, default 540: the
# pipeline gets what is left of it, so the table and the check still come back), OUT (default /tmp/pod_run).
# On the lent H200, python3 is /opt/torch/.venv/bin/python3 (torch 2.11.0+cu130): the install goes into that venv (a
# venv made from it with --system-site-packages would not see its torch).
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
START=$(date +%s)
BUDGET=${POD_BUDGET_S:-540}
CAP=${CAP:-20}
OUT=${OUT:-/tmp/pod_run}
mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0 PYTHONUNBUFFERED=1
# the fa3 step builds with nvcc (the README: put the CUDA toolkit's bin on PATH when `nvcc --version` fails)
command -v nvcc >/dev/null || export PATH="/usr/local/cuda/bin:$PATH"
table="$OUT/table.md"
: > "$table"
rows=()
row() { rows+=("| $1 | $2 | $3 | $4 |"); echo "== $1: $3 in $2 s: $4"; }
since() { echo $(( $(date +%s) - $1 )); }
left() { echo $(( START + BUDGET - $(date +%s) )); }
bundle=$(ls .fa3src/*.bundle 2>/dev/null | head -n 1)
[ -n "$bundle" ] && [ -d .gpu/wheels ] || { echo "pod_run.sh: run benchmarks/pod_stage.sh first (.gpu/wheels, .fa3src)" >&2; exit 2; }
commit=$(git bundle list-heads "$bundle" | awk '$2 == "HEAD" {print $1}')
{
  echo "machine: $(nvidia-smi -L | head -n 1) ($(nvidia-smi -L | wc -l) GPUs), $(nproc) cores"
  echo "python3: $(command -v python3); $(python3 -c 'import torch; print("torch", torch.__version__)' 2>&1)"
  df -h . | tail -n 1
} | tee "$OUT/machine.txt"

# 0. The README's install, offline: the pod extra into the Python that has torch (the image's torch is not touched).
t=$(date +%s)
python3 -m pip --version >/dev/null 2>&1 || python3 -m ensurepip >/dev/null 2>&1
torch_before=$(python3 -c 'import torch; print(torch.__version__)' 2>&1)
python3 -m pip install --no-index --find-links .gpu/wheels -e '.[pod]' > "$OUT/install.log" 2>&1
rc=$?
ok_install=$([ "$rc" -eq 0 ] && [ "$torch_before" = "$(python3 -c 'import torch; print(torch.__version__)' 2>&1)" ] && echo yes || echo no)
torch_after=$(python3 -c 'import torch; print(torch.__version__)' 2>&1)
bin=$(python3 -c 'import sys, sysconfig; print(sysconfig.get_path("scripts"))')
export PATH="$bin:$PATH"
installed=$(grep -m1 '^Successfully installed' "$OUT/install.log" | cut -d' ' -f3- | wc -w)
row install "$(since "$t")" "exit $rc" "pip install -e '.[pod]' (offline): torch $torch_before -> $torch_after; $installed packages installed; snakemake $(snakemake --version 2>&1)"
[ "$rc" -eq 0 ] || { tail -n 30 "$OUT/install.log"; }

# The rehearsal's overlay on config/config.yaml (nproc_per_node: not given, so the machine's GPU count).
mkdir -p .gpu
cat > .gpu/rehearsal.yaml <<EOF
run: pod_rehearsal
seeds: [42, 1337]
data:
  source: documents
  name: demo_wiki_sp1024
  documents: {path: demo/wiki_vital_en.jsonl.xz, vocab_size: 1024, val_docs: 300, shard_tokens: 1000000}
# VARLEN kept in the build (as config/examples/ keep it: the frontier scripts call flash_attn_varlen_func), so the
# wheel this builds (it comes back in logs.tar.gz) serves benchmarks/frontier_gpu.sh too
fa3:
  enabled: true
  required: true
  source: build
  repo: $here/$bundle
  commit: $commit
  disable: [SM80, FP16, FP8, PAGEDKV, APPENDKV, LOCAL, SOFTCAP, CLUSTER, SPLIT, PACKGQA, HDIM96, HDIM128, HDIM192, HDIM256]
# the full 11-layer model; a short cap, fewer compile warm-up steps, GPTQ calibration in 4 s of it
train: {max_wallclock_seconds: $CAP, train_log_every: 20, warmup_steps: 5, gptq_reserve_seconds: 4}
# a short run's weights do not compress like a trained model's: int5 fits the cap without the slow prune path
quantize: {quant_bits_matrix: 5, quant_fit_mlp_bits: 4}
record:
  track: track_non_record_16mb
  name: pod_rehearsal
  author: pgolf rehearsal
  github_id: pgolf-rehearsal
  non_record: true
  min_seeds: 2
  enforce_time_limits: false
EOF

# 1. Without GPUs: refused before any job (no data/ folder, no job log).
t=$(date +%s)
rm -rf data/demo_wiki_sp1024 logs/data
CUDA_VISIBLE_DEVICES= timeout 120 snakemake --profile profiles/pod --configfile .gpu/rehearsal.yaml > "$OUT/refusal.log" 2>&1
rc=$?
jobs_ran=$( [ -e data/demo_wiki_sp1024 ] || [ -e logs/data ] && echo "a data job ran" || echo "no job ran")
ok_refusal=$([ "$rc" -ne 0 ] && [ "$jobs_ran" = "no job ran" ] && grep -q 'no CUDA GPU' "$OUT/refusal.log" && echo yes || echo no)
row "refusal without GPU" "$(since "$t")" "exit $rc" "$( (grep -m1 'no CUDA GPU' "$OUT/refusal.log" || grep -m1 -i 'gpu' "$OUT/refusal.log") | sed 's/^ *- //' | cut -c1-150); $jobs_ran"
tail -n 6 "$OUT/refusal.log"
rm -rf data/demo_wiki_sp1024 logs/data results/pod_rehearsal

# 2. The run: the README's command with the overlay; its console (progress lines, the closing summary) in console.log.
t=$(date +%s)
limit=$(( $(left) - 40 ))
[ "$limit" -ge 60 ] || limit=60
# --set-threads data=8: the demo corpus's encoding beside the FA3 build, as the hub download runs (min(8, cores)
# threads); the documents source would otherwise take every core and the build would wait for it
timeout "$limit" snakemake --profile profiles/pod --configfile .gpu/rehearsal.yaml --set-threads data=8 \
  > "$OUT/console.log" 2>&1
rc=$?
ok_run=$([ "$rc" -eq 0 ] && echo yes || echo no)
# the terminal's job status lines ([seed 42 train] 1m05s: ...): how many, and the longest silence within a job
gaps=$(python3 - "$OUT/console.log" <<'PY'
import re, sys
seen, worst = {}, {}
for line in open(sys.argv[1], errors="replace"):
    m = re.match(r"\[([^\]]+)\] (?:(\d+)m)?(\d+)s: ", line)
    if m:
        t = int(m.group(2) or 0) * 60 + int(m.group(3))
        worst[m.group(1)] = max(worst.get(m.group(1), 0), t - seen.get(m.group(1), 0))
        seen[m.group(1)] = t
lines = sum(1 for line in open(sys.argv[1], errors="replace") if re.match(r"\[[^\]]+\] \S+: ", line))
print(f"{lines} job status lines on the terminal, longest silence per job "
      + ", ".join(f"{k} {v}s" for k, v in worst.items()))
PY
)
row "snakemake --profile profiles/pod" "$(since "$t")" "exit $rc" "cap ${CAP} s, limit ${limit} s; $gaps"
grep -E "progress:|pgolf: " "$OUT/console.log" | tail -n 12
tail -n 25 "$OUT/console.log"

# 3. The record, checked as anyone would; disk; per-step times.
record=$(ls -d records/track_non_record_16mb/*_pod_rehearsal 2>/dev/null | head -n 1)
ok_check=no
t=$(date +%s)
if [ -n "$record" ]; then
  pgolf check "$record" > "$OUT/check.txt" 2>&1
  rc=$?
  ok_check=$([ "$rc" -eq 0 ] && echo yes || echo no)
  row "pgolf check $record" "$(since "$t")" "exit $rc" "$(head -n 1 "$OUT/check.txt" | cut -c1-150)"
else
  row "pgolf check" 0 "-" "no record folder"
fi
fa3_s=$(python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print(s.get("build_seconds") or s.get("state"))' \
  results/pod_rehearsal/env/fa3.json 2>/dev/null || echo n/a)
row "fa3 (in the run)" "${fa3_s}" "-" "$(python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print(s.get("state"), "available", s.get("available"), (s.get("verify") or {}).get("max_abs_diff"))' results/pod_rehearsal/env/fa3.json 2>/dev/null)"
disk=$(du -sch data/demo_wiki_sp1024 results/pod_rehearsal .cache logs/pod_rehearsal 2>/dev/null | tr '\t' ' ' | paste -sd';' -)
{
  echo "# Bare-pod rehearsal ($(nvidia-smi -L | head -n 1 | cut -d'(' -f1); $(nvidia-smi -L | wc -l) GPU), $(date -u +%FT%TZ)"
  echo
  echo "| step | s | result | notes |"
  echo "|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
  echo
  verdict=$([ "$ok_install$ok_refusal$ok_run$ok_check" = yesyesyesyes ] && echo PASS || echo FAIL)
  echo "REHEARSAL $verdict: install (torch untouched) $ok_install, refusal without GPU before any job $ok_refusal," \
    "pipeline $ok_run, plain pgolf check $ok_check"
  echo
  echo "whole script: $(since "$START") s; disk: $disk"
  echo
  python3 benchmarks/pod_table.py . --run pod_rehearsal 2>&1
} > "$table"
# the FA3 build's log can be megabytes: its last 200 lines only
tail -n 200 logs/pod_rehearsal/fa3.build.log > "$OUT/fa3.build.tail.log" 2>/dev/null
tar czf "$OUT/logs.tar.gz" --exclude=fa3.build.log logs/pod_rehearsal results/pod_rehearsal/*/*.json \
  results/pod_rehearsal/env ${record:+"$record"} .gpu/rehearsal.yaml $(ls .cache/fa3/*/flash_attn_3-*.whl 2>/dev/null) \
  2>/dev/null
cat "$table"
