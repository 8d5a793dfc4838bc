rule data:
    input:
        data_inputs,
    output:
        manifest=DATA_MANIFEST,
    log:
        f"logs/data/{config['data']['name']}.log",
    conda:
        CONDA_ENV
    threads: workflow.cores
    params:
        section=as_json(config["data"]),
        cmd=data_command(),
    shell:
        "{params.cmd} > {log} 2>&1"
