# FlashAttention 3 (pgolf.fa3): the pinned prebuilt wheel or a build, cached in .cache/fa3 (locked per entry, so
# concurrent runs share it), checked against SDPA; or, with fa3.required false, the reason and the fallback recorded.
rule fa3:
    output:
        status=kept(here(f"{OUT}/env/fa3.json")),
        environment=kept(here(f"{OUT}/env/environment.json")),
        done=here(done_marker("fa3")),
    log:
        step=f"{LOGS}/fa3.log",
        build=f"{LOGS}/fa3.build.log",
    conda:
        CONDA_ENV
    params:
        fa3=as_json(config["fa3"]),
        stale=stale_markers("fa3"),
    shell:
        "rm -f {params.stale} && pgolf --console-fd 3 fa3 --fa3-json {params.fa3:q} --cache-dir .cache/fa3"
        " --status {output.status} --environment {output.environment} --build-log {log.build} 3>&2 > {log.step} 2>&1"
        " && touch {output.done}"
