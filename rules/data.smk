# Data: generate the demo corpus or read a real one, build the manifest and the folds, render audio.


rule demo:
    output:
        manifest="results/demo/manifest.parquet",
    log:
        "logs/demo/demo.log",
    conda:
        "../workflow/envs/pianoeval.yaml"
    params:
        config=config_for("data"),
    shell:
        "pianoeval demo --config {params.config} --out-dir results/demo > {log} 2>&1"


rule fetch:
    output:
        record="resources/{dataset}.fetched.json",
    log:
        "logs/fetch/{dataset}.log",
    wildcard_constraints:
        dataset="percepiano|asap",
    conda:
        "../workflow/envs/pianoeval.yaml"
    params:
        config=config_for("data"),
    shell:
        "pianoeval fetch {wildcards.dataset} --config {params.config} --root resources/{wildcards.dataset}"
        " --out {output.record} > {log} 2>&1"


rule prepare:
    input:
        unpack(manifest_source),
    output:
        manifest="results/prepare/manifest.parquet",
        summary="results/prepare/summary.json",
    log:
        "logs/prepare/prepare.log",
    conda:
        "../workflow/envs/pianoeval.yaml"
    params:
        config=config_for("data", "seed"),
        demo=demo_manifest_flag,
    shell:
        "pianoeval prepare --config {params.config} {params.demo} --out {output.manifest}"
        " --summary {output.summary} > {log} 2>&1"


rule folds:
    input:
        manifest="results/prepare/manifest.parquet",
    output:
        folds="results/folds/folds.json",
    log:
        "logs/folds/folds.log",
    conda:
        "../workflow/envs/pianoeval.yaml"
    params:
        config=config_for("folds", "seed"),
    shell:
        "pianoeval folds --config {params.config} --manifest {input.manifest} --out {output.folds} > {log} 2>&1"


# The WAVs the manifest points at are the declared folder audio/, which Snakemake empties before a rerun;
# they are rendered into a per-file cache (results/cache/render) and linked from there, so a rerun or a
# killed run renders only what the cache lacks.
rule render:
    input:
        manifest="results/prepare/manifest.parquet",
    output:
        manifest="results/render/manifest.parquet",
        skipped="results/render/skipped.json",
        audio=directory("results/render/audio"),
    log:
        "logs/render/render.log",
    benchmark:
        "benchmarks/render/render.tsv"
    conda:
        "../workflow/envs/pianoeval.yaml"
    threads: 2
    resources:
        mem_mb=2000,
    params:
        config=config_for("render", "max_skipped_fraction"),
        unlabelled=render_unlabelled_flag,
    shell:
        "pianoeval render --config {params.config} --manifest {input.manifest} {params.unlabelled}"
        " --audio-dir {output.audio} --cache-dir results/cache/render --out {output.manifest}"
        " --skipped {output.skipped} --threads {threads} > {log} 2>&1"


# A2's unlabelled music (ASAP), requested only by a2's training when unlabelled_audio.root is set.
rule render_unlabelled:
    input:
        fetched=lambda wildcards: fetch_marker(
            "asap", config["unlabelled_audio"]["root"]
        ),
    output:
        manifest="results/render_unlabelled/manifest.parquet",
        skipped="results/render_unlabelled/skipped.json",
        audio=directory("results/render_unlabelled/audio"),
    log:
        "logs/render_unlabelled/render_unlabelled.log",
    benchmark:
        "benchmarks/render_unlabelled/render_unlabelled.tsv"
    conda:
        "../workflow/envs/pianoeval.yaml"
    threads: 2
    resources:
        mem_mb=2000,
    params:
        config=config_for("unlabelled_audio", "render", "max_skipped_fraction"),
        root=lambda wildcards: unlabelled_root(),
    shell:
        "pianoeval render-unlabelled --config {params.config} --root {params.root}"
        " --audio-dir {output.audio} --cache-dir results/cache/render_unlabelled --out {output.manifest}"
        " --skipped {output.skipped} --threads {threads} > {log} 2>&1"
