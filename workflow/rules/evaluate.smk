# Staged mode only: an upstream script (train.mode: upstream) quantizes and evaluates itself.
if not UPSTREAM:

    rule evaluate:
        input:
            data=prepared(DATA_MANIFEST),
            artifact=rules.quantize.output.artifact,
            train_summary=rules.train.output.summary,
            quantize_summary=rules.quantize.output.summary,
            quantized=rules.quantize.output.done,
            script=here(SCRIPT),
        output:
            metrics=kept(seed_path("metrics.json")),
            summary=kept(seed_path("eval.json")),
            evallog=kept(seed_path("eval.log")),
            done=done_marker("seed_{seed}.evaluate"),
        log:
            f"{LOGS}/seed_{{seed}}/evaluate.log",
        conda:
            CONDA_ENV
        threads: NPROC
        resources:
            gpus=GPUS,
        params:
            eval=as_json(config["eval"]),
            quantize=as_json(config["quantize"]),
            nproc=NPROC,
            run=RUN,
            stale=lambda wildcards: stale_markers("evaluate", wildcards.seed),
        shell:
            "rm -f {params.stale} && pgolf evaluate --script {input.script} --data-manifest {input.data} --artifact {input.artifact}"
            " --seed {wildcards.seed} --run {params.run} --nproc {params.nproc} --eval-json {params.eval:q}"
            " --quantize-json {params.quantize:q}"
            " --train-summary {input.train_summary} --quantize-summary {input.quantize_summary}"
            " --summary {output.summary} --logfile {output.evallog} --metrics {output.metrics} --console-fd 3 3>&2 > {log} 2>&1"
            " && touch {output.done}"
