#!/bin/sh
# The image's entry point: Snakemake with the arguments given (`docker run IMAGE --cores all --profile profiles/pod`),
# or the command itself when the first argument is one: a pod's start command (RunPod's "Container Start Command",
# e.g. `sleep infinity`) replaces the image's CMD, not its entry point, and must still run.
set -e
if [ "$#" -gt 0 ] && [ "${1#-}" = "$1" ] && command -v "$1" > /dev/null 2>&1; then
  exec "$@"
fi
exec snakemake "$@"
