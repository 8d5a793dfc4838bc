# The record folder and, for `snakemake --report report.html`, its loss curves and per-seed table.
report: "../report/workflow.rst"


rule record:
    input:
        metrics=expand(f"{OUT}/seed_{{seed}}/metrics.json", seed=SEEDS),
        logs=expand(
            f"{OUT}/seed_{{seed}}/{{stage}}.log",
            seed=SEEDS,
            stage=SEED_LOGS,
        ),
        environment=rules.fa3.output.environment,
        script=SHIPPED,
        # the readable source beside a packed train_gpt.py (train_gpt_human.py)
        human=SCRIPT if PACK_SCRIPT else [],
        # staged mode: the data set, whose paths go into the README's reproducing command
        data=[] if UPSTREAM else DATA_MANIFEST,
        extra=RECORD_SETTINGS.get("extra_files") or [],
    output:
        # the folder's files, not directory(): Snakemake would leave its .snakemake_timestamp in the record
        readme=f"{RECORD_DIR}/README.md",
        submission=f"{RECORD_DIR}/submission.json",
        curves=report(
            f"{OUT}/report/loss_curves.png",
            caption="../report/loss_curves.rst",
            category="Record",
            labels={"figure": "loss curves"},
        ),
        table=report(
            f"{OUT}/report/seed_results.html",
            caption="../report/seed_results.rst",
            category="Record",
            labels={"figure": "per-seed results"},
        ),
        csv=f"{OUT}/report/seed_results.csv",
    log:
        f"{LOGS}/record.log",
    conda:
        CONDA_ENV
    params:
        settings=as_json(RECORD_SETTINGS),
        hparams=as_json(TRAIN_ENV),
        seeds=" ".join(str(s) for s in SEEDS),
        nproc=NPROC,
        staged=lambda wildcards, input: record_staged_args(input),
        run_dir=lambda wildcards, input: str(Path(input.environment).parents[1]),
        report_dir=lambda wildcards, output: str(Path(output.curves).parent),
        record_dir=lambda wildcards, output: str(Path(output.submission).parent),
    shell:
        "pgolf record --run-dir {params.run_dir} --seeds {params.seeds} --script {input.script}"
        " --environment {input.environment} --settings-json {params.settings:q} --hparams-json {params.hparams:q}"
        " --nproc {params.nproc} {params.staged} --out {params.record_dir} --report-dir {params.report_dir} > {log} 2>&1"
