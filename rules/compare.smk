# Compare the models of one track across folds and pick the winner by the documented rule.


rule audio_robustness:
    input:
        metrics=audio_model_metrics,
        manifest="results/render/manifest.parquet",
        folds="results/folds/folds.json",
        preflight=preflight_input,
    output:
        report="results/audio_robustness/{model}/report.json",
    log:
        "logs/audio_robustness/{model}.log",
    benchmark:
        "benchmarks/audio_robustness/{model}.tsv"
    conda:
        "../workflow/envs/pianoeval.yaml"
    threads: 2
    resources:
        mem_mb=6000,
        gpu=1,
        runtime=120,
    params:
        config=config_for("render", "audio", "robustness", "seed"),
    shell:
        "pianoeval audio-robustness {wildcards.model} --config {params.config} --manifest {input.manifest} --devices {resources.gpu}"
        " --folds {input.folds} --results results --out {output.report} > {log} 2>&1"


rule compare:
    input:
        metrics=track_metrics,
        robustness=track_robustness,
        preflight=preflight_input,
    output:
        comparison="results/compare/{track}/comparison.json",
        table="results/compare/{track}/comparison.md",
        winner="results/compare/{track}/winner.json",
        plot="results/compare/{track}/per_dimension.png",
    log:
        "logs/compare/{track}.log",
    conda:
        "../workflow/envs/pianoeval.yaml"
    params:
        # compare reads no setting (the veto comes with the robustness reports).
        config=config_for(),
    shell:
        "pianoeval compare {wildcards.track} --config {params.config} --metrics {input.metrics}"
        " --robustness {input.robustness} --out-dir results/compare/{wildcards.track} > {log} 2>&1"
