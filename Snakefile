# pgolf: Parameter Golf submission pipeline.
#   data -> fa3 (+ environment) -> per seed: train -> quantize -> evaluate -> record
# Production default: config/config.yaml (8xH100 pod, profiles/pod). Embedded CPU demo: --profile profiles/demo.
import os
import sys

from snakemake.utils import min_version, validate

from pgolf.preflight import profile_overlays, yaml_problem

min_version("9.0")

BASE_CONFIG = f"{workflow.basedir}/config/config.yaml"
for _path in [BASE_CONFIG, *map(str, workflow.config_settings.configfiles)]:
    if _problem := yaml_problem(_path):
        raise WorkflowError(_problem)


configfile: BASE_CONFIG


# A --configfile on the command line replaces the config files a profile names (Snakemake's rule for options): load
# those under it, so that `--profile profiles/demo --configfile X` is the demo with X on top.
for _profile, _overlay in profile_overlays(
    sys.argv,
    os.environ,
    [str(p) for p in workflow.config_settings.configfiles],
    [os.getcwd(), workflow.basedir, os.environ.get("PWD", ".")],
):
    print(
        f"pgolf: {_overlay} (from --profile {_profile}) loaded under the --configfile given",
        file=sys.stderr,
    )
    workflow.configfile(_overlay)


validate(config, "workflow/schemas/config.schema.yaml")


# The pipeline's image, pinned by digest (docker://...@sha256:...): with --software-deployment-method apptainer
# (profiles/slurm) every job runs in it; null runs the jobs in the current environment.
container: config.get("container")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/fa3.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/quantize.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/record.smk"
include: "workflow/rules/durable.smk"


rule all:
    default_target: True
    input:
        here(rules.record.output.submission),
        rules.record.output.done,
        # with durable results, the record folder's copy in the storage
        rules.record_archive.output.archive if DURABLE else [],
