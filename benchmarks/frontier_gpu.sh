#!/usr/bin/env bash
# The frontier's own scripts through the pipeline on one GPU (issue 27): the 1.0611 record and the audited 1.05651
# (#2135) in upstream mode, with real FlashAttention 3 built from the bundle, SP8192 CaseOps shards made from
# documents by each record's own prepare_caseops_data.py, lrzip (per-group compression) and gcc (#2135's n-gram
# tilt); each script once under the pipeline (snakemake, train.mode: upstream, a short cap, a short eval with TTT on a
# small validation set, the record checked with plain `pgolf check`) and once under bare torchrun (stopped when its
# training loop ends: only its step time is compared). A table last.
#
# 1. Here (CPU machine, repository root): bash benchmarks/frontier_stage.sh   (stages upstream/ and .frontier/)
# 2. The device calls, in this order, each under 9 minutes (back to back: a warm machine keeps /tmp/frontier, the
#    FA3 cache .cache/fa3, data/ and the inductor cache; a cold one redoes what is missing):
#      run(command="bash benchmarks/frontier_gpu.sh prep bare", carry=["upstream", ".frontier"], timeout_s=600)
#      run(command="bash benchmarks/frontier_gpu.sh r0611", carry=["upstream", ".frontier"], timeout_s=600)
#      run(command="bash benchmarks/frontier_gpu.sh r0565 table", carry=["upstream", ".frontier"], timeout_s=600)
#    and, if the table shows a bare run skipped (the call's budget spent): run(command="bash benchmarks/frontier_gpu.sh
#    bare table", ...) (a bare run whose training loop already ended on this machine is not run again).
#    The machine goes back after 30 s idle: a later call may start cold. So the first call returns the FA3 wheel it
#    built (flash_attn_3-*.whl beside table.txt): copy it into .frontier/fa3/ before the next calls, which then
#    install it (seconds) instead of building it. Each call returns rows.tsv and logs.tar.gz: for the whole table
#    from several machines, unpack every logs.tar.gz into one folder, concatenate the rows.tsv files, and run
#      python benchmarks/frontier_table.py --rows ROWS.tsv --logs FOLDER
#    (on a machine without a 10-minute limit: bash benchmarks/frontier_gpu.sh all)
#    Expected (not measured; from the records' 8xH100 logs and issue 19's FA3 build): FA3 build 2-4 min cold (VARLEN
#    is built: the scripts call flash_attn_varlen_func), 15 s cached; each CaseOps prep under a minute; a bare run
#    1-2 min of compiling and warm-up plus the cap; a pipeline run that plus about 2 min of lrzip compression and
#    decompression and 1.5-2.5 min of TTT compile and eval. COMPRESSOR=brotli saves the lrzip part if a call runs out.
# Phases: prep (wheels, a layered venv, tool checks, the pipeline's fa3 and data steps for both configs: FA3 build or
# cache hit, the CaseOps shards), bare (each script under bare torchrun until its training loop ends), r0611 / r0565
# (the pipeline end to end for one script, then `pgolf check` of its record), table. Each phase stops before the
# call's CALL_BUDGET_S (default 540 s) runs out, leaving a row that says so. Logs and table.txt go to $OUT.
# Knobs (environment): CAP_S (training cap, default 60), VAL_DOCS (default 400), PREFIX_DOCS (phased TTT prefix
# documents, default 40), COMPRESSOR (default: the records' pergroup, i.e. lrzip).
set -uo pipefail
START=$(date +%s)
CALL_BUDGET_S=${CALL_BUDGET_S:-540}
ROOT=$(pwd)
[ -f "$ROOT/src/pgolf/upstream.py" ] || { echo "frontier_gpu.sh: run it from the repository root" >&2; exit 2; }
[ -d "$ROOT/.frontier/wheels" ] && [ -d "$ROOT/upstream/records" ] || {
  echo "frontier_gpu.sh: .frontier/ or upstream/ missing: run benchmarks/frontier_stage.sh here and carry both" >&2
  exit 2
}
OUTDIR=${OUT:-/tmp/frontier_out}  # what comes back: table.txt, rows.tsv, logs.tar.gz (at most 8 files come back)
STATE=/tmp/frontier                # kept by a warm machine between calls
DEST=$STATE/logs                   # every log of every call; this call's go into $OUTDIR/logs.tar.gz
SITE=$STATE/site
VENV=$STATE/venv
mkdir -p "$OUTDIR" "$DEST" "$STATE"
CALL_START_MARK=$STATE/.call_start
touch "$CALL_START_MARK"
CAP_S=${CAP_S:-60}
# EAGER=1: torch.compile off (TORCH_COMPILE_DISABLE=1) and 3 warm-up steps, for both the pipeline and the bare runs:
# on one H200 the scripts' cold compile (fullgraph, 4 cu_seqlens buckets x loop on/off) took over 230 s before the first
# step (2026-12-02), more than a 9-minute call holds beside the rest; the comparison stays like for like
if [ "${EAGER:-0}" = 1 ]; then
  export TORCH_COMPILE_DISABLE=1
  WARMUP_ENV="    WARMUP_STEPS: 3"
else
  WARMUP_ENV=""
fi
VAL_DOCS=${VAL_DOCS:-400}
PREFIX_DOCS=${PREFIX_DOCS:-40}
REC=upstream/records/track_10min_16mb
declare -A FOLDER=([r0611]=2026-04-27_SP8192_LQER_SparseGate_BOSSmearFix_9HpStack_1.0611
  [r0565]=2026-05-01_SP8192_PR2130Base_Calib32)
declare -A EXAMPLE=([r0611]=config/examples/upstream_1.0611_caseops.yaml
  [r0565]=config/examples/upstream_1.0565_caseops.yaml)
TOK=tokenizers/fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model
BUNDLE=$(ls "$ROOT"/.frontier/fa3/*.bundle | head -n 1)
COMMIT=$(git bundle list-heads "$BUNDLE" | awk '$2 == "HEAD" {print $1}')
[ -n "$COMMIT" ] || COMMIT=$(git bundle list-heads "$BUNDLE" | awk 'NR == 1 {print $1}')
export NCCL_NVLS_ENABLE=0
# one compile cache for the bare and the pipeline runs (the later runs start faster; step times exclude compiling)
export TORCHINDUCTOR_CACHE_DIR=$STATE/inductor TRITON_CACHE_DIR=$STATE/triton
export PATH="/usr/local/cuda/bin:$ROOT/.frontier/lrzip/bin:$SITE/bin:$PATH"
export PYTHONPATH="$SITE:$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
ROWS=$STATE/rows.tsv  # phase \t what \t seconds \t outcome (kept across calls on a warm machine)
touch "$ROWS"

left() { echo $((START + CALL_BUDGET_S - $(date +%s))); }
row() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" | tee -a "$ROWS"; }

setup() {  # wheels into $SITE, a venv layered over python3's environment, launchers, tool checks
  local t0=$(date +%s)
  mkdir -p "$SITE/bin"
  if [ ! -d "$SITE/snakemake" ] && ! { python3 -c 'import snakemake, jsonschema, brotli' 2>/dev/null && command -v pyminify >/dev/null; }; then
    python3 -m pip install -q --no-index --no-deps --target "$SITE" \
      $(ls "$ROOT"/.frontier/wheels/*.whl | grep -v sentencepiece) >"$DEST/pip.log" 2>&1 ||
      { row prep wheels - "pip install failed: $(tail -n 1 "$DEST/pip.log")"; return 1; }
  fi
  # the CaseOps prepare scripts call SentencePieceProcessor.encode_as_immutable_proto: 0.2.2 (the GPU machine's) keeps
  # the name but raises "immutable_proto is deprecated", 0.2.3 removed it; the project pins 0.2.1
  if ! python3 -c 'import sentencepiece as s, sys; sys.exit(s.__version__ != "0.2.1")' 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --target "$SITE" "$ROOT"/.frontier/wheels/sentencepiece-*.whl >>"$DEST/pip.log" 2>&1
  fi
  # a venv made with python3 -m venv from /opt/torch/.venv's python is a venv of the BASE interpreter (no torch):
  # benchmarks/layered_venv.sh adds a .pth naming python3's own site-packages, so FA3 installs into $VENV and torch
  # stays visible (issue 27)
  [ -x "$VENV/bin/python" ] || bash "$ROOT/benchmarks/layered_venv.sh" python3 "$VENV" >"$DEST/venv.log" 2>&1 ||
    { row prep venv - "layered venv failed: $(tail -n 1 "$DEST/venv.log")"; return 1; }
  PY=$VENV/bin/python
  for tool in pgolf snakemake; do
    mod=$([ "$tool" = pgolf ] && echo pgolf.cli || echo snakemake.cli)
    printf '#!%s\nimport sys\n\nfrom %s import main\n\nif __name__ == "__main__":\n    sys.exit(main())\n' "$PY" "$mod" \
      >"$SITE/bin/$tool"
    chmod +x "$SITE/bin/$tool"
  done
  "$PY" - >"$DEST/tools.txt" 2>&1 <<'EOF'
import importlib, shutil, subprocess, sys
print("python", sys.version.split()[0], sys.executable)
for m in ("torch", "triton", "numpy", "sentencepiece", "brotli", "snakemake", "jsonschema", "zstandard", "yaml"):
    try:
        mod = importlib.import_module(m)
        extra = ""
        if m == "sentencepiece":
            extra = " encode_as_immutable_proto=" + str(hasattr(mod.SentencePieceProcessor, "encode_as_immutable_proto"))
        if m == "torch":
            extra = f" cuda {mod.version.cuda} {mod.cuda.get_device_name(0) if mod.cuda.is_available() else 'no GPU'}"
        print(m, getattr(mod, "__version__", "?"), extra, mod.__file__)
    except Exception as e:
        print(m, "MISSING", type(e).__name__, e)
for t in ("lrzip", "gcc", "nvcc", "pyminify"):
    path = shutil.which(t)
    ver = ""
    if path:
        args = {"lrzip": ["-V"], "pyminify": ["--version"]}.get(t, ["--version"])
        p = subprocess.run([path, *args], capture_output=True, text=True)
        ver = (p.stdout + p.stderr).strip().splitlines()[:1]
    print(t, path or "MISSING", ver)
EOF
  cat "$DEST/tools.txt"
  local missing
  missing=$(grep -c MISSING "$DEST/tools.txt")
  row prep tools "$(($(date +%s) - t0))" "$(grep -E '^(python|torch|sentencepiece) ' "$DEST/tools.txt" | awk '{print $1, $2}' | paste -sd, -); missing: $missing"
}

# FA3: a wheel an earlier call built and returned (copied into .frontier/fa3/ and carried: a cold machine installs it
# in seconds), else a build from the bundle (the examples' switches: VARLEN kept)
WHEEL=$(ls "$ROOT"/.frontier/fa3/flash_attn_3-*.whl 2>/dev/null | head -n 1)
if [ -n "$WHEEL" ]; then
  FA3_SOURCE="  source: wheel
  wheel: {url: $WHEEL, sha256: $(sha256sum "$WHEEL" | cut -d' ' -f1)}"
else
  FA3_SOURCE="  source: build
  repo: $BUNDLE
  commit: $COMMIT"
fi

overlay() {  # overlay TAG: the short-run config on top of the record's example
  local tag=$1 folder=${FOLDER[$1]}
  cat >"$DEST/overlay_$tag.yaml" <<EOF
run: frontier_$tag
seeds: [42]
nproc_per_node: 1
data:
  source: documents
  name: caseops_$tag
  documents:
    path: $STATE/docs.jsonl
    vocab_size: 8192
    val_docs: $VAL_DOCS
    prepare_script: $REC/$folder/prepare_caseops_data.py
    tokenizer: $REC/$folder/$TOK
fa3:
  enabled: true
  required: true
$FA3_SOURCE
train:
  env:
    MAX_WALLCLOCK_SECONDS: $CAP_S
    TRAIN_LOG_EVERY: 10
    VAL_LOSS_EVERY: 0
    PHASED_TTT_PREFIX_DOCS: $PREFIX_DOCS
    COMPRESSOR: ${COMPRESSOR:-pergroup}
$WARMUP_ENV
record:
  track: track_non_record_16mb
  name: frontier_$tag
  date: "2026-12-02"
  min_seeds: 1
  non_record: true
  enforce_time_limits: false
  reference: null
EOF
}

smk() {  # smk TAG TIMEOUT ARGS...: snakemake with the example and the overlay, in the repository
  local tag=$1 limit=$2
  shift 2
  # a call cut short by its timeout may have left the working folder locked (the next call keeps .snakemake/)
  snakemake -s "$ROOT/Snakefile" -d "$ROOT" --configfile "$ROOT/config/config.yaml" "$ROOT/${EXAMPLE[$tag]}" \
    "$DEST/overlay_$tag.yaml" --unlock >/dev/null 2>&1
  timeout "$limit" snakemake -s "$ROOT/Snakefile" -d "$ROOT" --profile "$ROOT/profiles/pod" --resources gpus=1 \
    --configfile "$ROOT/config/config.yaml" "$ROOT/${EXAMPLE[$tag]}" "$DEST/overlay_$tag.yaml" "$@"
}


prep() {
  setup || return 1
  if [ ! -s "$STATE/docs.jsonl" ]; then  # the blog validation text first (the validation documents), then the demo
    xz -dc "$ROOT/.frontier/docs/blogs_val_text.jsonl.xz" "$ROOT/demo/wiki_vital_en.jsonl.xz" >"$STATE/docs.jsonl"
  fi
  for tag in r0611 r0565; do
    overlay "$tag"
    local t0=$(date +%s) lim
    lim=$(left)
    [ "$lim" -gt 30 ] || { row prep "fa3+data $tag" - "skipped (call budget spent)"; continue; }
    smk "$tag" "$lim" --until fa3 data >"$DEST/prep_$tag.log" 2>&1
    local rc=$? secs=$(($(date +%s) - t0))
    local fa3log=logs/frontier_$tag/fa3.log datalog=logs/data/caseops_$tag.log
    [ -f "$fa3log" ] || fa3log=$(ls -t logs/*/fa3.log 2>/dev/null | head -n 1)
    cp -f "$fa3log" "$DEST/fa3_$tag.log" 2>/dev/null
    cp -f "${fa3log%.log}.build.log" "$DEST/fa3build_$tag.log" 2>/dev/null
    cp -f "$datalog" "$DEST/data_$tag.log" 2>/dev/null
    local fa3=$(grep -m1 -E "^fa3: (available|not available)|error: " "$DEST/fa3_$tag.log" 2>/dev/null | cut -c1-160)
    local built=$(grep -m1 -oE "built .* in [0-9]+ s|cache hit" "$DEST/fa3_$tag.log" 2>/dev/null)
    local data=$(grep -m1 -oE "[0-9]+ docs -> .*train_shards: [0-9]+" "$DEST/data_$tag.log" 2>/dev/null)
    row prep "fa3+data $tag" "$secs" "rc $rc; ${fa3:-no fa3 line} (${built:-?}); ${data:-data: see data_$tag.log}"
    # the built wheel comes back: carried in .frontier/fa3/ by the next calls, a cold machine need not build it again
    local whl
    whl=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1])).get("wheel") or "")' \
      "results/frontier_$tag/env/fa3.json" 2>/dev/null)
    if [ -z "$WHEEL" ] && [ -f "$whl" ] && [ ! -f "$OUTDIR/$(basename "$whl")" ]; then cp "$whl" "$OUTDIR/"; fi
  done
}

bare() {  # bare TAG...: each script under bare torchrun in a copy of its folder, the pipeline's data; stopped after
  # its training loop (only its step time is compared)
  [ -n "${PY:-}" ] || setup || return 1
  local tag
  for tag in "$@"; do
    overlay "$tag"
    local manifest=data/caseops_$tag/manifest.json wd=$STATE/bare_$tag log=$DEST/bare_$tag.log lim
    [ -f "$manifest" ] || { row bare "$tag" - "no $manifest: run the prep phase first"; continue; }
    if grep -qE "^stopping_early" "$log" 2>/dev/null; then
      echo "bare $tag: its training loop already ended on this machine ($log)"
      continue
    fi
    lim=$(left)
    [ "$lim" -gt "${BARE_NEED_S:-$((CAP_S + 150))}" ] || { row bare "$tag" - "skipped (call budget spent)"; continue; }
    "$PY" - "$ROOT/${EXAMPLE[$tag]}" "$DEST/overlay_$tag.yaml" "$manifest" "$REC/${FOLDER[$tag]}/train_gpt.py" "$wd" \
      >"$STATE/bare_$tag.env" <<'EOF' || { row bare "$tag" - "setup failed"; continue; }
import shlex, sys, yaml
from pgolf.stages import env_value
from pgolf.upstream import DATA_LINKS, link_data, prepare_workdir
example, overlay, manifest, script, wd = sys.argv[1:]
env = {**yaml.safe_load(open(example))["train"]["env"], **yaml.safe_load(open(overlay))["train"]["env"]}
env = {k: env_value(v) for k, v in env.items()}
copy = prepare_workdir(script, wd)
env.update(link_data(manifest, copy.parent / DATA_LINKS), SEED="42", RUN_ID="bare")
print("\n".join(f"export {k}={shlex.quote(v)}" for k, v in sorted(env.items())))
EOF
    local t0=$(date +%s)
    rm -f "$STATE/bare_$tag.pid"
    # its own session and process group (setsid), whose id the shell writes before it becomes torchrun: the group
    # (torchrun and its worker) is stopped as one once the training loop has ended
    setsid -w bash -c 'echo $$ >"$1"; cd "$2" && . "$3" && echo "+ cd $2 && torchrun --standalone --nproc_per_node=1 train_gpt.py" &&
      exec "$4" -m torch.distributed.run --standalone --nproc_per_node=1 train_gpt.py' _ \
      "$STATE/bare_$tag.pid" "$wd" "$STATE/bare_$tag.env" "$PY" >"$log" 2>&1 &
    local pid=$! ended="" pgid
    while kill -0 "$pid" 2>/dev/null; do
      if grep -qE "^stopping_early|^peak memory" "$log"; then ended=1; break; fi
      [ $(($(date +%s) - START)) -lt $((CALL_BUDGET_S - 10)) ] || break
      sleep 2
    done
    sleep 1
    pgid=$(cat "$STATE/bare_$tag.pid" 2>/dev/null)
    [ -n "$pgid" ] && kill -TERM -- "-$pgid" 2>/dev/null
    sleep 3
    [ -n "$pgid" ] && kill -KILL -- "-$pgid" 2>/dev/null
    wait "$pid" 2>/dev/null
    local why
    why=$(grep -E "Error|error:" "$log" 2>/dev/null | grep -v "ChildFailedError\|^ *File \|raise " | tail -n 1 | cut -c1-140)
    row bare "$tag" "$(($(date +%s) - t0))" \
      "$([ -n "$ended" ] && echo "training loop done, stopped" || echo "did not finish training (${why:-see bare_$tag.log})")"
  done
}

pipeline() {  # pipeline TAG: the whole run (fa3, data, the script under pgolf run-upstream, the record), then check
  local tag=$1
  [ -n "${PY:-}" ] || setup || return 1
  [ -s "$STATE/docs.jsonl" ] || xz -dc "$ROOT/.frontier/docs/blogs_val_text.jsonl.xz" "$ROOT/demo/wiki_vital_en.jsonl.xz" >"$STATE/docs.jsonl"
  overlay "$tag"
  local lim t0=$(date +%s)
  lim=$(($(left) - 15))
  [ "$lim" -gt 120 ] || { row pipeline "$tag" - "skipped (call budget spent)"; return 0; }
  smk "$tag" "$lim" >"$DEST/pipeline_$tag.log" 2>&1
  local rc=$? secs=$(($(date +%s) - t0))
  cp -f "logs/frontier_$tag/seed_42/train.log" "$DEST/step_$tag.log" 2>/dev/null
  cp -f "results/frontier_$tag/seed_42/train.log" "$DEST/train_$tag.log" 2>/dev/null ||
    cp -f "results/frontier_$tag/seed_42/train.log.partial" "$DEST/train_$tag.log" 2>/dev/null
  cp -f "results/frontier_$tag/seed_42/metrics.json" "$DEST/metrics_$tag.json" 2>/dev/null
  local record verdict="no record"
  record=$(ls -d records/track_non_record_16mb/*_frontier_"$tag" 2>/dev/null | head -n 1)
  if [ -n "$record" ]; then
    pgolf check "$record" >"$DEST/check_$tag.txt" 2>&1
    verdict="pgolf check exit $? ($(grep -m1 -oE "\b(PASS|FAIL)\b" "$DEST/check_$tag.txt" || echo '?'))"
  fi
  row pipeline "$tag" "$secs" "snakemake rc $rc ($([ "$rc" = 124 ] && echo TIMEOUT || tail -n 1 "$DEST/pipeline_$tag.log" | cut -c1-80)); $verdict"
}

table() {
  "${PY:-python3}" "$ROOT/benchmarks/frontier_table.py" --rows "$ROWS" --logs "$DEST" | tee "$OUTDIR/table.txt"
}

finish() {  # what comes back: the table, the rows, this call's logs (big ones cut to their head and tail)
  cp -f "$ROWS" "$OUTDIR/rows.tsv"
  [ -f "$OUTDIR/table.txt" ] || table >/dev/null 2>&1
  local f
  for f in $(find "$DEST" -type f -newer "$CALL_START_MARK"); do
    if [ "$(wc -c <"$f")" -gt 3000000 ]; then
      { head -c 1000000 "$f"; echo; echo "[... cut by frontier_gpu.sh ...]"; tail -c 1000000 "$f"; } >"$f.cut" && mv "$f.cut" "$f"
    fi
  done
  (cd "$DEST" && find . -type f -newer "$CALL_START_MARK" -print0 | tar --null -czf "$OUTDIR/logs.tar.gz" -T -)
  echo "frontier_gpu.sh: $(($(date +%s) - START)) s; $OUTDIR: $(ls "$OUTDIR" | paste -sd' ' -)"
}
trap finish EXIT

[ $# -gt 0 ] || set -- all
for phase in "$@"; do
  case $phase in
    prep) prep ;;
    bare) bare r0611 r0565 ;;
    bare_r0611 | bare_r0565) bare "${phase#bare_}" ;;
    r0611 | r0565) pipeline "$phase" ;;
    table) table ;;
    all) CALL_BUDGET_S=100000; prep && bare r0611 r0565; pipeline r0611; pipeline r0565; table ;;
    *) echo "frontier_gpu.sh: unknown phase $phase (prep, bare, bare_r0611, bare_r0565, r0611, r0565, table, all)" >&2
      exit 2 ;;
  esac
done
[ -f "$OUTDIR/table.txt" ] || table
