if not UPSTREAM:

    rule train:
        input:
            data=prepared(DATA_MANIFEST),
            fa3=prepared(f"{OUT}/env/fa3.json"),
            script=here(SCRIPT),
            # the data and fa3 steps succeeded (a failed re-run leaves its kept products but not its marker)
            steps=[prepared(DATA_DONE), prepared(done_marker("fa3"))],
        output:
            checkpoint=kept(seed_path("checkpoint.pt")),
            summary=kept(seed_path("train.json")),
            trainlog=kept(seed_path("train.log")),
            done=done_marker("seed_{seed}.train"),
        log:
            f"{LOGS}/seed_{{seed}}/train.log",
        conda:
            CONDA_ENV
        threads: NPROC
        resources:
            gpus=GPUS,
        params:
            train=as_json(TRAIN_SECTION),
            script_sha256=SCRIPT_SHA256,
            nproc=NPROC,
            run=RUN,
            stale=lambda wildcards: stale_markers("train", wildcards.seed),
        shell:
            "rm -f {params.stale} && pgolf train --script {input.script} --data-manifest {input.data} --seed {wildcards.seed}"
            " --run-id {params.run}_seed{wildcards.seed} --nproc {params.nproc} --train-json {params.train:q}"
            " --checkpoint {output.checkpoint} --summary {output.summary} --logfile {output.trainlog}"
            " --fa3-status {input.fa3} --console-fd 3 3>&2 > {log} 2>&1"
            " && touch {output.done}"

else:

    # Reproducing an upstream record: its train_gpt.py trains, quantizes and evaluates in one torchrun process, in
    # results/<run>/seed_<N>/upstream/; its output becomes the seed's train.log and the parsed log its metrics.json.
    rule train_upstream:
        input:
            data=prepared(DATA_MANIFEST),
            fa3=prepared(f"{OUT}/env/fa3.json"),
            script=here(SCRIPT),
            # the data and fa3 steps succeeded (a failed re-run leaves its kept products but not its marker)
            steps=[prepared(DATA_DONE), prepared(done_marker("fa3"))],
        output:
            metrics=kept(seed_path("metrics.json")),
            trainlog=kept(seed_path("train.log")),
            done=done_marker("seed_{seed}.train_upstream"),
        log:
            f"{LOGS}/seed_{{seed}}/train.log",
        conda:
            CONDA_ENV
        threads: NPROC
        resources:
            gpus=GPUS,
        params:
            env=as_json(config["train"].get("env") or {}),
            script_sha256=SCRIPT_SHA256,
            nproc=NPROC,
            run=RUN,
            device=config["device"],
            workdir=lambda wildcards: f"{OUT}/seed_{wildcards.seed}/upstream",
            stale=lambda wildcards: stale_markers("train_upstream", wildcards.seed),
        shell:
            "rm -f {params.stale} && pgolf run-upstream --script {input.script} --data-manifest {input.data} --seed {wildcards.seed}"
            " --run {params.run} --nproc {params.nproc} --env-json {params.env:q} --device {params.device}"
            " --workdir {params.workdir} --logfile {output.trainlog} --metrics {output.metrics}"
            " --fa3-status {input.fa3} --console-fd 3 3>&2 > {log} 2>&1"
            " && touch {output.done}"
