# Fuse the winning audio and symbolic encoders per fold (training rows: their out-of-fold predictions,
# rules/train.smk train_inner), compare the variants, validate
# robustness of the selected model, and write the final winner.


rule fuse:
    input:
        folds="results/folds/folds.json",
        manifest="results/prepare/manifest.parquet",
        symbolic_winner="results/compare/symbolic/winner.json",
        symbolic_embeddings=winner_embeddings("symbolic"),
        symbolic_oof=winner_out_of_fold("symbolic"),
        audio_winner="results/compare/audio/winner.json",
        audio_embeddings=winner_embeddings("audio"),
        audio_oof=winner_out_of_fold("audio"),
        stats=fusion_score_stats,
    output:
        metrics="results/fuse/{fusion}/fold_{fold}/metrics.json",
        predictions="results/fuse/{fusion}/fold_{fold}/predictions.csv",
        embeddings="results/fuse/{fusion}/fold_{fold}/embeddings.pt",
        model_spec="results/fuse/{fusion}/fold_{fold}/model_spec.json",
        resolved="results/fuse/{fusion}/fold_{fold}/config.yaml",
        provenance="results/fuse/{fusion}/fold_{fold}/provenance.json",
        model="results/fuse/{fusion}/fold_{fold}/model.ckpt",
    log:
        main="logs/fuse/{fusion}/fold_{fold}.log",
        curves="results/fuse/{fusion}/fold_{fold}/logs/metrics.csv",
        hparams="results/fuse/{fusion}/fold_{fold}/logs/hparams.yaml",
    conda:
        "../workflow/envs/pianoeval.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        gpu=1,
        runtime=60,
    params:
        config=fuse_config,
        persist=persist_push,
        stats=stats_flag,
    shell:
        "pianoeval fuse {wildcards.fusion} --config {params.config} --fold {wildcards.fold}"
        " --manifest {input.manifest} --folds {input.folds} --symbolic-winner {input.symbolic_winner}"
        " --symbolic-embeddings {input.symbolic_embeddings} --symbolic-oof {input.symbolic_oof}"
        " --audio-winner {input.audio_winner} --audio-embeddings {input.audio_embeddings}"
        " --audio-oof {input.audio_oof} {params.stats} --devices {resources.gpu}"
        " --out-dir results/fuse/{wildcards.fusion}/fold_{wildcards.fold}"
        " --checkpoint-dir results/cache/fuse/{wildcards.fusion}/fold_{wildcards.fold} > {log.main} 2>&1"
        "{params.persist}"


rule robustness:
    input:
        fusion_winner="results/compare/fusion/winner.json",
        audio_winner="results/compare/audio/winner.json",
        symbolic_winner="results/compare/symbolic/winner.json",
        manifest="results/render/manifest.parquet",
        folds="results/folds/folds.json",
        fusion_folds=fusion_winner_folds,
        audio_folds=winner_folds("audio", "metrics.json", *MODEL_FILES),
        symbolic_embeddings=winner_folds("symbolic", "embeddings.pt"),
        symbolic_models=symbolic_winner_models,
        stats=robustness_score_stats,
    output:
        report="results/robustness/report.json",
        table="results/robustness/report.md",
        plot="results/robustness/score_drop.png",
    log:
        "logs/robustness/robustness.log",
    benchmark:
        "benchmarks/robustness/robustness.tsv"
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
        "pianoeval robustness --config {params.config} --manifest {input.manifest} --folds {input.folds} --devices {resources.gpu}"
        " --fusion-winner {input.fusion_winner} --results results --out-dir results/robustness > {log} 2>&1"


rule fusion:
    input:
        fusion="results/compare/fusion/comparison.json",
        symbolic="results/compare/symbolic/comparison.json",
        audio="results/compare/audio/comparison.json",
        robustness="results/robustness/report.json",
    output:
        winner="results/fusion/winner.json",
    log:
        "logs/fusion/fusion.log",
    conda:
        "../workflow/envs/pianoeval.yaml"
    shell:
        "pianoeval finalize --fusion {input.fusion} --symbolic {input.symbolic} --audio {input.audio}"
        " --robustness {input.robustness} --out {output.winner} > {log} 2>&1"


rule report:
    input:
        winner="results/fusion/winner.json",
        tables=expand(
            "results/compare/{track}/comparison.md", track=TRACKS + ["fusion"]
        ),
        plots=expand(
            "results/compare/{track}/{plot}.png",
            track=TRACKS + ["fusion"],
            plot=["differences", "per_dimension"],
        ),
        robustness="results/robustness/report.json",
        robustness_table="results/robustness/report.md",
        robustness_plot="results/robustness/score_drop.png",
    output:
        html="results/report/index.html",
    log:
        "logs/report/report.log",
    conda:
        "../workflow/envs/pianoeval.yaml"
    shell:
        "pianoeval report --results results --out {output.html} > {log} 2>&1"
