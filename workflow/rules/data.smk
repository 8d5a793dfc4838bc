# The data set: downloaded from the hub (verified against config data.hub.lock) or built from a documents file.
# Any change to the command (the data section that the chosen source uses) re-runs it; valid files already in
# data/<name>/ are kept, so a re-run only verifies them. A hub download needs few CPUs (hashing), which leaves the
# others to the FlashAttention build running beside it.
rule data:
    input:
        data_inputs,
    output:
        manifest=DATA_MANIFEST,
    log:
        f"logs/data/{config['data']['name']}.log",
    conda:
        CONDA_ENV
    threads: min(8, workflow.cores) if config["data"]["source"] == "hub" else workflow.cores
    params:
        cmd=data_command(),
    shell:
        "{params.cmd} --threads {threads} > {log} 2>&1"
