from pgolf.console import closing_summary


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
        artifacts=(
            []
            if UPSTREAM
            else expand(f"{OUT}/seed_{{seed}}/final_model.ptz", seed=SEEDS)
        ),
        # each seed's last step succeeded (a failed re-run leaves its kept products but not its marker)
        done=expand(
            done_marker("seed_{seed}.{step}"),
            seed=SEEDS,
            step="train_upstream" if UPSTREAM else "evaluate",
        ),
        environment=here(f"{OUT}/env/environment.json"),
        data=here(DATA_MANIFEST),
        script=SHIPPED if PACK_SCRIPT else here(SCRIPT),
        # the readable source beside a packed train_gpt.py (train_gpt_human.py)
        human=here(SCRIPT) if PACK_SCRIPT else [],
        extra=[here(f) for f in RECORD_SETTINGS.get("extra_files") or []],
    output:
        # the folder's files, not directory(): Snakemake would leave its .snakemake_timestamp in the record
        readme=kept(here(f"{RECORD_DIR}/README.md")),
        submission=kept(here(f"{RECORD_DIR}/submission.json")),
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
        csv=kept(f"{OUT}/report/seed_results.csv"),
        done=done_marker("record"),
    log:
        f"{LOGS}/record.log",
    conda:
        CONDA_ENV
    params:
        settings=as_json(RECORD_SETTINGS),
        hparams=as_json(TRAIN_ENV),
        configs=as_json(EXPECTED_CONFIGS),
        nproc=NPROC,
        staged=lambda wildcards, input: record_staged_args(input),
        report_dir=lambda wildcards, output: str(Path(output.curves).parent),
        record_dir=lambda wildcards, output: str(Path(output.submission).parent),
    shell:
        "pgolf record --metrics {input.metrics} --logs {input.logs} --artifacts {input.artifacts} --script {input.script}"
        " --environment {input.environment} --data-manifest {input.data} --settings-json {params.settings:q}"
        " --hparams-json {params.hparams:q} --nproc {params.nproc} {params.staged} --out {params.record_dir}"
        " --report-dir {params.report_dir} --expect-configs {params.configs:q} > {log} 2>&1 && touch {output.done}"


# The end of a run, on the terminal: the score, the record's path and the next commands (check, compare, open the pull
# request); pgolf.console.closing_summary.
onsuccess:
    _closing = closing_summary(RECORD_DIR, RECORD_SETTINGS.get("reference"))
    if _closing:
        print(_closing, file=sys.stderr)
