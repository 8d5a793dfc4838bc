#!/usr/bin/env bash
# CI: build the CPU twin of docker/Dockerfile (same file; base image overridden by a locally debootstrapped Ubuntu
# 24.04, no FA3 stage) and run the demo pipeline inside it on a copy of the working tree, as a non-root user.
# Needs root and package registries only (Debian apt, the Ubuntu archive, PyPI); installs and starts Debian's
# docker.io engine when no Docker daemon answers. Prints the build time, the image size and the demo time.
set -euo pipefail
cd "$(dirname "$0")/.."
TAG=${TAG:-pgolf:cpu-twin}
if ! command -v dockerd > /dev/null || ! command -v debootstrap > /dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io debootstrap > /dev/null
fi
DOCKER=docker
[ -x /usr/bin/docker ] && DOCKER=/usr/bin/docker   # Debian's client: BuildKit without the buildx plugin
started=""
if ! $DOCKER info > /dev/null 2>&1; then
  dockerd > /tmp/pgolf-dockerd.log 2>&1 &
  started=$!
  for _ in $(seq 60); do $DOCKER info > /dev/null 2>&1 && break; sleep 1; done
fi
cleanup() { if [ -n "$started" ]; then kill "$started"; wait "$started" || true; fi; }
trap cleanup EXIT
export PATH="$(dirname "$DOCKER"):$PATH"

t0=$(date +%s)
docker/make-base.sh pgolf-base:noble
t1=$(date +%s)
# A CA bundle for pip where a proxy intercepts TLS (harmless elsewhere): the build secret "ca".
DOCKER_BUILDKIT=1 $DOCKER build -f docker/Dockerfile -t "$TAG" --progress plain \
  --build-arg BASE_IMAGE=pgolf-base:noble --build-arg FA3_SOURCE=none \
  --secret id=ca,src=/etc/ssl/certs/ca-certificates.crt . > /tmp/pgolf-twin-build.log 2>&1 \
  || { tail -50 /tmp/pgolf-twin-build.log; exit 1; }
t2=$(date +%s)

work=$(mktemp -d /tmp/pgolf-twin-work.XXXXXX)
git clone -q . "$work"   # the committed tree, with its .git (the record names the commit)
chown -R 1000:1000 "$work"
$DOCKER run --rm -v "$work":/work "$TAG" --version
$DOCKER run --rm -v "$work":/work "$TAG" --profile profiles/demo --cores 2
record=$(ls -d "$work"/records/track_non_record_16mb/*_pgolf_cpu_demo)
$DOCKER run --rm -v "$work":/work --entrypoint pgolf "$TAG" check --min-seeds 2 --no-time-limits "records/track_non_record_16mb/${record##*/}"
python3 - "$record/submission.json" "$(git rev-parse HEAD)" << 'PY'
import json, sys
sub = json.load(open(sys.argv[1]))
assert sub["provenance"]["git_commit"] == sys.argv[2], sub["provenance"]["git_commit"]
assert sub["attention_backend"] and sub["provenance"]["image_base"] == "pgolf-base:noble", sub["provenance"]
assert sub["provenance"]["torch"] == "2.9.1+cu128", sub["provenance"]["torch"]
print("twin record:", sub["val_bpb"], sub["attention_backend"], sub["provenance"]["torch"], sub["provenance"]["fa3_state"])
PY
t3=$(date +%s)
rm -rf "$work"
size=$($DOCKER image inspect "$TAG" --format '{{.Size}}')
echo "ci-twin: base $((t1 - t0)) s, image build $((t2 - t1)) s, image size $((size / 1000000)) MB, demo in container $((t3 - t2)) s"
