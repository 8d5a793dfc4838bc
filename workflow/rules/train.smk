rule train:
    input:
        data=DATA_MANIFEST,
        fa3=rules.fa3.output.status,
        script=SCRIPT,
    output:
        checkpoint=seed_path("checkpoint.pt"),
        summary=seed_path("train.json"),
        trainlog=seed_path("train.log"),
    log:
        f"{LOGS}/seed_{{seed}}/train.log",
    conda:
        CONDA_ENV
    threads: NPROC
    resources:
        gpus=GPUS,
    params:
        train=as_json(config["train"]),
        script_sha256=file_sha256(SCRIPT),
        nproc=NPROC,
        run=RUN,
    shell:
        "pgolf train --script {input.script} --data-manifest {input.data} --seed {wildcards.seed}"
        " --run-id {params.run}_seed{wildcards.seed} --nproc {params.nproc} --train-json {params.train:q}"
        " --checkpoint {output.checkpoint} --summary {output.summary} --logfile {output.trainlog} > {log} 2>&1"
