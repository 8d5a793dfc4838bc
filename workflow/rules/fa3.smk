rule fa3:
    output:
        status=f"{OUT}/env/fa3.json",
        environment=f"{OUT}/env/environment.json",
    log:
        f"{LOGS}/fa3.log",
    conda:
        CONDA_ENV
    params:
        fa3=as_json(config["fa3"]),
    shell:
        "pgolf fa3 --fa3-json {params.fa3:q} --cache-dir .cache/fa3 --status {output.status}"
        " --environment {output.environment} > {log} 2>&1"
