# Export the served models (the track winners and the fusion winner, every fold) with their model card
# into one bundle that `pianoeval score --bundle` reads without results/ (steps/export.py).


rule export:
    input:
        unpack(export_inputs),
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
