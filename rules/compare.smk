# Compare the models of one track across folds and pick the winner by the documented rule.


rule compare:
    input:
        metrics=track_metrics,
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
        config=config_for("robustness"),
    shell:
        "pianoeval compare {wildcards.track} --config {params.config} --metrics {input.metrics}"
        " --out-dir results/compare/{wildcards.track} > {log} 2>&1"
