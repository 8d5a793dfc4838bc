# The data set: downloaded from the hub (verified against config data.hub.lock) or built from a documents file. The
# command gets the data section as JSON, narrowed to what the chosen source uses (the hub: only the variant's repo),
# and the repository (--root) that the section's paths are relative to. Any change to that part of the section re-runs
# it; valid files already in data/<name>/ are kept, so a re-run only verifies them. A hub download needs few CPUs
# (hashing), which leaves the others to the FlashAttention build running beside it.
rule data:
    input:
        data_inputs,
    output:
        manifest=kept(here(DATA_MANIFEST)),
        done=here(DATA_DONE),
    log:
        f"logs/data/{config['data']['name']}.log",
    conda:
        CONDA_ENV
    threads: min(8, workflow.cores) if config["data"]["source"] == "hub" else workflow.cores
    params:
        data=as_json(data_section()),
        root=repo_path("."),
        out=lambda wildcards, output: os.path.dirname(output.manifest),
        stale=stale_markers("data"),
    shell:
        "rm -f {params.stale} && pgolf data --data-json {params.data:q} --root {params.root:q} --out {params.out:q} --threads {threads}"
        " > {log} 2>&1 && touch {output.done}"
