#!/usr/bin/env bash
# Stage, on this (CPU, networked) machine, what benchmarks/frontier_gpu.sh needs on the GPU machine (issue 27), into
# two ignored folders of the checkout that the device call carries:
#   upstream/   a stand-in clone of openai/parameter-golf: records/track_10min_16mb/ with the 1.0611 record folder and
#               the audited 1.05651 one (#2135), copied from ../shared/fixtures (what config/examples/ expect there)
#   .frontier/  wheels/ (the Snakemake set of ../shared/wheels/gpu-py312, sentencepiece 0.2.1 for the CaseOps prepare
#               script's encode_as_immutable_proto, python-minifier for the scripts' pyminify), lrzip/ (Debian 12's
#               lrzip 0.651 binary and the shared libraries an Ubuntu 24.04 image may lack, behind a wrapper that sets
#               LD_LIBRARY_PATH for it alone; glibc 2.36 binaries run on 24.04's 2.39), fa3/ (the FA3 git bundle),
#               docs/ (the blog validation text; the demo corpus travels with the checkout)
# Usage (repository root): bash benchmarks/frontier_stage.sh [SHARED=../shared]; prints the carried size (< 64 MiB).
set -euo pipefail
shared=$(readlink -f "${1:-../shared}")
root=$(pwd)
[ -f "$root/src/pgolf/upstream.py" ] || { echo "frontier_stage.sh: run it from the repository root" >&2; exit 2; }
for p in fixtures/frontier/2026-05-01_SP8192_PR2130Base_Calib32 \
  fixtures/upstream-corpus/track_10min_16mb/2026-04-27_SP8192_LQER_SparseGate_BOSSmearFix_9HpStack_1.0611 \
  wheels/gpu-py312 fa3 data/blog_authorship_sp1024/blogs_val_text.jsonl.xz; do
  [ -e "$shared/$p" ] || { echo "frontier_stage.sh: $shared/$p is missing" >&2; exit 2; }
done
rec=upstream/records/track_10min_16mb
mkdir -p "$rec"
for src in "$shared/fixtures/frontier/2026-05-01_SP8192_PR2130Base_Calib32" \
  "$shared/fixtures/upstream-corpus/track_10min_16mb/2026-04-27_SP8192_LQER_SparseGate_BOSSmearFix_9HpStack_1.0611"; do
  rm -rf "${rec:?}/$(basename "$src")"
  cp -r "$src" "$rec/"
  chmod -R u+w "$rec/$(basename "$src")"
done
st=.frontier
rm -rf "$st"
mkdir -p "$st/wheels" "$st/lrzip/bin" "$st/lrzip/lib" "$st/fa3" "$st/docs"
cp "$shared"/wheels/gpu-py312/*.whl "$st/wheels/"
python3 -m pip download -q --only-binary=:all: --no-deps --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$st/wheels" sentencepiece==0.2.1 python-minifier==3.2.0
cp "$shared"/fa3/*.bundle "$st/fa3/"
cp "$shared/data/blog_authorship_sp1024/blogs_val_text.jsonl.xz" "$st/docs/"
tmp=$(mktemp -d)
(cd "$tmp" && apt-get download lrzip liblzo2-2 liblz4-1 libbz2-1.0 >/dev/null 2>&1) || {
  echo "frontier_stage.sh: apt-get download lrzip failed (run apt-get update first)" >&2
  exit 2
}
for deb in "$tmp"/*.deb; do dpkg-deb -x "$deb" "$tmp/x"; done
cp "$tmp/x/usr/bin/lrzip" "$st/lrzip/bin/lrzip.bin"
cp -L "$tmp"/x/lib/x86_64-linux-gnu/liblzo2.so.2 "$tmp"/x/usr/lib/x86_64-linux-gnu/liblz4.so.1 \
  "$tmp"/x/lib/x86_64-linux-gnu/libbz2.so.1.0 "$st/lrzip/lib/" 2>/dev/null ||
  cp -L $(find "$tmp/x" -name 'liblzo2.so.2' -o -name 'liblz4.so.1' -o -name 'libbz2.so.1.0') "$st/lrzip/lib/"
cat >"$st/lrzip/bin/lrzip" <<'EOF'
#!/bin/sh
# lrzip staged by benchmarks/frontier_stage.sh: Debian 12's binary with its libraries beside it
here=$(dirname "$(readlink -f "$0")")
LD_LIBRARY_PATH="$here/../lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "$here/lrzip.bin" "$@"
EOF
chmod +x "$st/lrzip/bin/lrzip" "$st/lrzip/bin/lrzip.bin"
rm -rf "$tmp"
# the staged lrzip works here (this machine lacks liblzo2 too): a round trip through ZPAQ, as the scripts call it
t=$(mktemp -d)
head -c 200000 /dev/urandom | base64 >"$t/in"
"$st/lrzip/bin/lrzip" -q -z -L 9 -o "$t/in.lrz" "$t/in" && "$st/lrzip/bin/lrzip" -q -d -o "$t/out" "$t/in.lrz"
cmp -s "$t/in" "$t/out" && echo "staged lrzip: ZPAQ round trip ok"
rm -rf "$t"
du -sh "$st" upstream
du -sbc "$st" upstream | tail -1 | awk '{ if ($1 > 64 * 1048576) { print "frontier_stage.sh: carried " $1 " bytes > 64 MiB" > "/dev/stderr"; exit 1 } else print "carried in all: " $1 " bytes (limit 67108864)" }'
