rule record:
    input:
        metrics=expand(f"{OUT}/seed_{{seed}}/metrics.json", seed=SEEDS),
        logs=expand(
            f"{OUT}/seed_{{seed}}/{{stage}}.log",
            seed=SEEDS,
            stage=["train", "quantize", "eval"],
        ),
        environment=rules.fa3.output.environment,
        script=SCRIPT,
    output:
        directory(RECORD_DIR),
    log:
        f"{LOGS}/record.log",
    conda:
        CONDA_ENV
    params:
        settings=as_json(RECORD_SETTINGS),
        hparams=as_json(TRAIN_ENV),
        seeds=" ".join(str(s) for s in SEEDS),
        nproc=NPROC,
        run_dir=lambda wildcards, input: str(Path(input.environment).parents[1]),
    shell:
        "pgolf record --run-dir {params.run_dir} --seeds {params.seeds} --script {input.script}"
        " --environment {input.environment} --settings-json {params.settings:q} --hparams-json {params.hparams:q}"
        " --nproc {params.nproc} --out {output} > {log} 2>&1"
