# The per-machine steps as one target (`snakemake ... prepare`): the data folder and FA3 with the machine's probe. With
# durable results (a default storage provider, see common.smk) a new machine runs it first, so that the seeds already
# in the storage are reused; the run is then refused until it is done (durable_guard).
localrules:
    prepare,
    record_archive,


rule prepare:
    input:
        here(DATA_MANIFEST),
        here(f"{OUT}/env/fa3.json"),
        here(f"{OUT}/env/environment.json"),


if DURABLE:
    _REFUSAL = durable_guard(
        # the command line's words (Snakemake reads its targets after the workflow is parsed)
        set(sys.argv[1:]),
        [DATA_MANIFEST, f"{OUT}/env/fa3.json", f"{OUT}/env/environment.json"],
    )
    if _REFUSAL:
        raise WorkflowError(_REFUSAL)


# The record folder (local: it is what `pgolf check` reads and the PR adds) also goes to the storage, as one file.
rule record_archive:
    input:
        submission=here(rules.record.output.submission),
        done=rules.record.output.done,
    output:
        archive=f"{OUT}/record.tar.gz",
    log:
        f"{LOGS}/record_archive.log",
    conda:
        CONDA_ENV
    params:
        parent=lambda wildcards, input: str(Path(input.submission).parent.parent),
        folder=lambda wildcards, input: Path(input.submission).parent.name,
    shell:
        "tar -czf {output.archive} -C {params.parent:q} {params.folder:q} > {log} 2>&1"
