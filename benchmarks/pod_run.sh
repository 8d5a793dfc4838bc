#!/usr/bin/env bash
# The pipeline end to end on a GPU machine, as on a pod: `snakemake --profile profiles/pod` with the production config
# (the full 11-layer model, DDP over every GPU), two seeds, a short training cap, the demo corpus as data (a GPU
# machine here has no hub), then the table of where the time went (benchmarks/pod_table.py) and `pgolf check` of the
# record. Stages what such a machine lacks: the wheels in WHEELS (Snakemake and its dependencies, jsonschema,
# zstandard, brotli; see benchmarks/NOTES.md for the download command) installed into /tmp/pgolf-site without network,
# the project from src/ on PYTHONPATH.
#   benchmarks/pod_run.sh WHEELS OUT [CAP_SECONDS] [KEY=VALUE overlay lines are not supported: edit the overlay below]
set -euo pipefail
wheels=$1 out=$2 cap=${3:-30}
here=$(cd "$(dirname "$0")/.." && pwd)
site=/tmp/pgolf-site
if [ ! -d "$site/snakemake" ]; then
  python3 -m pip install -q --no-index --no-deps --target "$site" "$wheels"/*.whl
fi
mkdir -p "$site/bin" "$out"
cat > "$site/bin/pgolf" <<'EOF'
#!/usr/bin/env python3
import sys

from pgolf.cli import main

if __name__ == "__main__":
    sys.exit(main())
EOF
cat > "$site/bin/snakemake" <<'EOF'
#!/usr/bin/env python3
import sys

from snakemake.cli import main

if __name__ == "__main__":
    sys.exit(main())
EOF
chmod +x "$site/bin/pgolf" "$site/bin/snakemake"
export PYTHONPATH="$site:$here/src${PYTHONPATH:+:$PYTHONPATH}" PATH="$site/bin:$PATH" NCCL_NVLS_ENABLE=0
gpus=$(nvidia-smi -L | wc -l)
cat > "$out/pod_bench.yaml" <<EOF
run: pod_bench
seeds: [42, 1337]
nproc_per_node: $gpus
data:
  source: documents
  name: demo_wiki_sp1024
  documents: {path: demo/wiki_vital_en.jsonl.xz, vocab_size: 1024, val_docs: 300, shard_tokens: 1000000}
fa3: {enabled: false}
train: {max_wallclock_seconds: $cap, train_log_every: 50}
eval: {val_tokens_limit: 65536}
record:
  track: track_non_record_16mb
  name: pod_bench
  date: "2026-12-01"
  min_seeds: 2
  non_record: true
  enforce_time_limits: false
EOF
wd="${POD_WORKDIR:-$out/wd}"  # e.g. a local disk; the products (checkpoints) stay there
mkdir -p "$wd"
t0=$(date +%s)
set +e
# --resources gpus=<this machine's>: the pod profile's gpus=8 would let two 1-GPU jobs share one GPU here
timeout "${POD_TIMEOUT:-540}" snakemake -s "$here/Snakefile" -d "$wd" --profile "$here/profiles/pod" \
  --resources gpus="$gpus" --configfile "$here/config/config.yaml" "$out/pod_bench.yaml" > "$out/snakemake.log" 2>&1
rc=$?
set -e
echo "snakemake rc $rc in $(( $(date +%s) - t0 )) s (gpus: $gpus, training cap ${cap} s)"
tail -n 5 "$out/snakemake.log"
python3 "$here/benchmarks/pod_table.py" "$wd" --run pod_bench || true
record="$wd/records/track_non_record_16mb/2026-12-01_pod_bench"
[ -d "$record" ] && pgolf check "$record" --min-seeds 2 --no-time-limits || true
exit "$rc"
