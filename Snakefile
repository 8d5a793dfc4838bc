# pgolf: Parameter Golf submission pipeline.
#   data -> fa3 (+ environment) -> per seed: train -> quantize -> evaluate -> record
# Production default: config/config.yaml (8xH100 pod, profiles/pod). Embedded CPU demo: --profile profiles/demo.
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: f"{workflow.basedir}/config/config.yaml"


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


rule all:
    default_target: True
    input:
        rules.record.output.submission,
