# Export the served models (the track winners and the fusion winner, every fold) with their model card
# into one bundle that `pianoeval score --bundle` reads without results/ (steps/export.py).


rule export:
    input:
        winner="results/fusion/winner.json",
        comparisons=expand(
            "results/compare/{track}/comparison.json", track=TRACKS + ["fusion"]
        ),
        manifest="results/prepare/manifest.parquet",
        folds=export_folds,
    output:
        bundle="results/export/pianoeval.bundle",
    log:
        "logs/export/export.log",
    benchmark:
        "benchmarks/export/export.tsv"
    conda:
        "../workflow/envs/pianoeval.yaml"
    shell:
        "pianoeval export --results results --manifest {input.manifest} --out {output.bundle} > {log} 2>&1"
