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
        index="resources/{dataset}/index.csv",
    log:
        "logs/fetch/{dataset}.log",
    wildcard_constraints:
        dataset="percepiano|asap",
    conda:
        "../workflow/envs/pianoeval.yaml"
    shell:
        "pianoeval fetch {wildcards.dataset} --root resources/{wildcards.dataset} > {log} 2>&1"


rule prepare:
    input:
        manifest_source,
    output:
        manifest="results/prepare/manifest.parquet",
        summary="results/prepare/summary.json",
    log:
        "logs/prepare/prepare.log",
    conda:
        "../workflow/envs/pianoeval.yaml"
    params:
        config=config_for("data"),
    shell:
        "pianoeval prepare --config {params.config} --out {output.manifest} > {log} 2>&1"


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
        config=config_for("data", "folds"),
    shell:
        "pianoeval folds --config {params.config} --manifest {input.manifest} --out {output.folds} > {log} 2>&1"


rule render:
    input:
        manifest="results/prepare/manifest.parquet",
    output:
        manifest="results/render/manifest.parquet",
        skipped="results/render/skipped.json",
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
    shell:
        "pianoeval render --config {params.config} --manifest {input.manifest}"
        " --audio-dir results/render/audio --out {output.manifest} --threads {threads} > {log} 2>&1"
