# Featurize MIDI for the symbolic models and embed rendered audio for the audio models.
# Both cache per file (results/cache/...) so reruns and added files only compute what is new, and
# skip unusable files, listing them in their declared `skipped` report (core/skipped.py).


rule transcribe:
    input:
        manifest="results/render/manifest.parquet",
    output:
        manifest="results/transcribe/manifest.parquet",
        skipped="results/transcribe/skipped.json",
    log:
        "logs/transcribe/transcribe.log",
    benchmark:
        "benchmarks/transcribe/transcribe.tsv"
    conda:
        "../workflow/envs/pianoeval.yaml"
    threads: 2
    resources:
        mem_mb=6000,
        gpu=1,
    params:
        config=config_for("transcription", "max_skipped_fraction", "seed"),
    shell:
        "pianoeval transcribe --config {params.config} --manifest {input.manifest} --devices {resources.gpu}"
        " --out {output.manifest} --skipped {output.skipped} --cache-dir results/cache/transcribe"
        " --threads {threads} > {log} 2>&1"


rule featurize:
    input:
        manifest="results/prepare/manifest.parquet",
        # TransKun transcriptions of the renderings (symbolic training data), when views are configured.
        views=transcription_views,
    output:
        features="results/featurize/{kind}.pt",
        skipped="results/featurize/{kind}.skipped.json",
    log:
        "logs/featurize/{kind}.log",
    benchmark:
        "benchmarks/featurize/{kind}.tsv"
    conda:
        "../workflow/envs/pianoeval.yaml"
    threads: 2
    resources:
        mem_mb=4000,
    params:
        config=config_for("features", "max_skipped_fraction"),
        # A new featurizer version of the kind changes this param, so Snakemake reruns the rule.
        version=lambda wildcards: featurizer_version(wildcards.kind),
    shell:
        "pianoeval featurize {wildcards.kind} --config {params.config} --manifest {input.manifest}"
        " --extra-manifest {input.views} --out {output.features} --skipped {output.skipped}"
        " --cache-dir results/cache/{wildcards.kind} --threads {threads} > {log} 2>&1"


rule embed:
    input:
        manifest="results/render/manifest.parquet",
    output:
        embeddings="results/embed/{backbone}.pt",
        skipped="results/embed/{backbone}.skipped.json",
    log:
        "logs/embed/{backbone}.log",
    benchmark:
        "benchmarks/embed/{backbone}.tsv"
    wildcard_constraints:
        backbone="logmel|muq|transkun",
    conda:
        "../workflow/envs/pianoeval.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        gpu=1,
    params:
        # The audio keys the frozen backbone and the subset read, not the whole section: another audio
        # setting (a model's width, its training) re-embeds nothing.
        config=config_for(
            "render.sample_rate",
            "audio.backbone",
            "audio.muq_pretrained",
            "audio.muq_name_or_path",
            "audio.muq_small",
            "audio.hidden_layers",
            "audio.embed_per_group",
            "max_skipped_fraction",
            "seed",
        ),
    shell:
        "pianoeval embed {wildcards.backbone} --config {params.config} --manifest {input.manifest} --devices {resources.gpu}"
        " --out {output.embeddings} --skipped {output.skipped} --cache-dir results/cache/embed_{wildcards.backbone}"
        " > {log} 2>&1"
