#!/usr/bin/env bash
# Stages, on a machine with network, what benchmarks/pod_run.sh (the bare-pod rehearsal) needs on a GPU machine
# without network, into two folders that .gitignore ignores and the device call carries (about 45 MB in all):
#   .gpu/wheels/  the wheels `pip install -e '.[pod]'` may need beyond what the machine's Python has (torch, numpy,
#                 matplotlib stay as they are): the Snakemake set of ../shared/wheels/gpu-py312/ plus the pinned
#                 huggingface_hub, sentencepiece, PyYAML, pygments and their dependencies, ninja (the pod extra),
#                 setuptools and wheel (the project's build backend, for pip's build isolation); Python 3.12, x86_64
#   .fa3src/      the FlashAttention 3 source bundle of ../shared/fa3/ (the fa3 step builds from it)
# Usage, from the repository root:  bash benchmarks/pod_stage.sh [SHARED]   (SHARED: ../shared by default)
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${1:-../shared}
[ -d "$shared/wheels/gpu-py312" ] || { echo "pod_stage.sh: $shared/wheels/gpu-py312: not found" >&2; exit 2; }
[ -f "$shared/fa3/flash-attention-0251105a-hopper.bundle" ] || { echo "pod_stage.sh: $shared/fa3: no bundle" >&2; exit 2; }
rm -rf .gpu/wheels
mkdir -p .gpu/wheels .fa3src
cp "$shared"/wheels/gpu-py312/*.whl .gpu/wheels/
# the project's pins (pyproject.toml) that the Snakemake set lacks or has at another version, with their dependencies
python3 -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .gpu/wheels huggingface_hub==2.4.0 sentencepiece==0.2.1 PyYAML==6.0.3 pygments==2.21.0 python-minifier==3.2.0 ninja==1.13.2 \
  setuptools==84.2.1 wheel==0.48.0
cp "$shared"/fa3/flash-attention-0251105a-hopper.bundle .fa3src/
du -sh .gpu .fa3src
echo "checkout (without .git, .venv, .gpu, .fa3src): $(du -sh --exclude=.git --exclude=.venv --exclude=.gpu --exclude=.fa3src . | cut -f1)"
