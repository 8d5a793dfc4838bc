# Staged mode only: an upstream script (train.mode: upstream) quantizes and evaluates itself.
if not UPSTREAM:

    if PACK_SCRIPT:

        rule ship_script:
            input:
                script=here(SCRIPT),
            output:
                shipped=SHIPPED,
            log:
                f"{LOGS}/ship_script.log",
            conda:
                CONDA_ENV
            shell:
                "pgolf pack --script {input.script} --out {output.shipped} > {log} 2>&1"

    rule quantize:
        input:
            checkpoint=rules.train.output.checkpoint,
            train_summary=rules.train.output.summary,
            trained=rules.train.output.done,
            script=here(SCRIPT),
            shipped=SHIPPED if PACK_SCRIPT else here(SCRIPT),
        output:
            artifact=kept(seed_path("final_model.ptz")),
            summary=kept(seed_path("quantize.json")),
            qlog=kept(seed_path("quantize.log")),
            done=done_marker("seed_{seed}.quantize"),
        log:
            f"{LOGS}/seed_{{seed}}/quantize.log",
        conda:
            CONDA_ENV
        # GPTQ runs on the GPU when there is one (seconds instead of minutes): the step holds the GPUs as train and
        # evaluate do, so that it never shares one with a training (a slower rank slows every rank)
        resources:
            gpus=GPUS,
        params:
            quantize=as_json(config["quantize"]),
            train=as_json(TRAIN_SECTION),
            stale=lambda wildcards: stale_markers("quantize", wildcards.seed),
        shell:
            "rm -f {params.stale} && pgolf quantize --script {input.script} --checkpoint {input.checkpoint} --seed {wildcards.seed}"
            " --train-summary {input.train_summary} --train-json {params.train:q} --quantize-json {params.quantize:q}"
            " --code-file {input.shipped} --artifact {output.artifact} --summary {output.summary} --logfile {output.qlog} --console-fd 3 3>&2 > {log} 2>&1"
            " && touch {output.done}"
