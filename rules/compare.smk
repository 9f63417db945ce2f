# Compare the models of one track across folds (paired bootstrap intervals) and pick the winner by the
# documented rule (evaluation/compare.py).


rule audio_robustness:
    input:
        metrics=audio_model_metrics,
        manifest="results/render/manifest.parquet",
        folds="results/folds/folds.json",
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


# A checkpoint: the track winners it writes decide which models train_inner retrains and fuse reads.
# The audio track's comparison is compare_audio (below): it also draws the robustness chart.
checkpoint compare:
    input:
        metrics=track_metrics,
        predictions=track_predictions,
        robustness=track_robustness,
        references=track_references,
        reference_predictions=track_reference_predictions,
    output:
        comparison="results/compare/{track}/comparison.json",
        table="results/compare/{track}/comparison.md",
        winner="results/compare/{track}/winner.json",
        plot="results/compare/{track}/per_dimension.png",
        differences="results/compare/{track}/differences.png",
    log:
        "logs/compare/{track}.log",
    wildcard_constraints:
        track=_alternatives(NON_AUDIO_TRACKS),
    conda:
        "../workflow/envs/pianoeval.yaml"
    params:
        # The bootstrap (its resamples and seed); the veto comes with the robustness reports.
        config=config_for("compare", "seed"),
    shell:
        "pianoeval compare {wildcards.track} --config {params.config} --metrics {input.metrics}"
        " --predictions {input.predictions} {input.reference_predictions}"
        " --robustness {input.robustness} --reference {input.references}"
        " --out-dir results/compare/{wildcards.track} > {log} 2>&1"


# The audio comparison: the same step and folder as compare, and the chart of the audio models' score
# drops under recording conditions (their robustness reports, the veto), which only this track has.
checkpoint compare_audio:
    input:
        metrics=track_metrics,
        predictions=track_predictions,
        robustness=track_robustness,
        references=track_references,
        reference_predictions=track_reference_predictions,
    output:
        comparison="results/compare/{track}/comparison.json",
        table="results/compare/{track}/comparison.md",
        winner="results/compare/{track}/winner.json",
        plot="results/compare/{track}/per_dimension.png",
        differences="results/compare/{track}/differences.png",
        robustness="results/compare/{track}/robustness.png",
    log:
        "logs/compare/{track}.log",
    wildcard_constraints:
        track="audio",
    conda:
        "../workflow/envs/pianoeval.yaml"
    params:
        config=config_for("compare", "seed"),
    shell:
        "pianoeval compare {wildcards.track} --config {params.config} --metrics {input.metrics}"
        " --predictions {input.predictions} {input.reference_predictions}"
        " --robustness {input.robustness} --reference {input.references}"
        " --out-dir results/compare/{wildcards.track} > {log} 2>&1"
