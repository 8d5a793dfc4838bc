#!/usr/bin/env bash
# Make a venv DEST layered over PYTHON's environment: `PYTHON -m venv --system-site-packages` alone makes a venv of
# the BASE interpreter when PYTHON itself lives in a venv (the GPU machine's /opt/torch/.venv/bin/python3, whose torch
# is then not importable: "No module named 'torch'", issue 27); a .pth file in DEST naming PYTHON's own site-packages
# makes them visible after DEST's own, so what is installed into DEST (FA3) shadows them and torch stays importable.
# Usage: bash benchmarks/layered_venv.sh PYTHON DEST   (then DEST/bin/python; pip comes from PYTHON's environment)
set -euo pipefail
py=${1:?usage: layered_venv.sh PYTHON DEST} dest=${2:?usage: layered_venv.sh PYTHON DEST}
rm -rf "$dest"
"$py" -m venv --without-pip --system-site-packages "$dest"
site=$("$dest/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
"$py" -c 'import site, sys; print("\n".join(p for p in site.getsitepackages() if p.startswith(sys.prefix)))' \
  >"$site/_pgolf_layered_parent.pth"
"$dest/bin/python" -c 'import sys; print("layered venv", sys.prefix, "over", open(sys.argv[1]).read().split())' \
  "$site/_pgolf_layered_parent.pth"
if "$py" -c 'import torch' 2>/dev/null; then
  "$dest/bin/python" -c 'import torch; print("torch", torch.__version__, "visible from", torch.__file__)'
fi
