# Self-supervised pretraining (symbolic, per fold: never on the fold's validation MIDI) and
# supervised training of every model on every fold.


# Once per model (not per fold): the unlabelled corpus (symbolic.corpus), cached; the per-fold pretrain
# starts from it. Its Lightning checkpoints (a cache, results/cache/pretrain_corpus/<model>) let a killed
# run resume.
rule pretrain_corpus:
    output:
        encoder="results/pretrain_corpus/{model}/encoder.pt",
    log:
        "logs/pretrain_corpus/{model}.log",
    benchmark:
        "benchmarks/pretrain_corpus/{model}.tsv"
    conda:
        "../workflow/envs/pianoeval.yaml"
    threads: 2
    resources:
        mem_mb=6000,
        gpu=1,
        runtime=60,
    params:
        config=config_for("features", "symbolic", "seed"),
        # The corpus is featurized in the step: a new featurizer version of its kind reruns it.
        version=lambda wildcards: featurizer_version(FEATURE_KIND[wildcards.model]),
        persist=persist_push,
    shell:
        "pianoeval pretrain-corpus {wildcards.model} --config {params.config} --out {output.encoder}"
        " --checkpoint-dir results/cache/pretrain_corpus/{wildcards.model}"
        " --cache-dir results/cache/corpus --threads {threads} --devices {resources.gpu} > {log} 2>&1"
        "{params.persist}"


rule pretrain:
    input:
        unpack(pretrain_inputs),
    output:
        encoder="results/pretrain/{model}/fold_{fold}/encoder.pt",
    log:
        "logs/pretrain/{model}/fold_{fold}.log",
    benchmark:
        "benchmarks/pretrain/{model}/fold_{fold}.tsv"
    conda:
        "../workflow/envs/pianoeval.yaml"
    threads: 2
    resources:
        mem_mb=6000,
        gpu=1,
        runtime=120,
    params:
        config=pretrain_config,
        corpus=corpus_flag,
        persist=persist_push,
    shell:
        "pianoeval pretrain {wildcards.model} --config {params.config} --fold {wildcards.fold}"
        " --manifest {input.manifest} --folds {input.folds} --features {input.features}"
        " {params.corpus} --devices {resources.gpu} --out {output.encoder} > {log} 2>&1"
        "{params.persist}"


rule train:
    input:
        unpack(train_inputs),
    output:
        metrics="results/train/{track}/{model}/fold_{fold}/metrics.json",
        predictions="results/train/{track}/{model}/fold_{fold}/predictions.csv",
        embeddings="results/train/{track}/{model}/fold_{fold}/embeddings.pt",
        model_spec="results/train/{track}/{model}/fold_{fold}/model_spec.json",
        resolved="results/train/{track}/{model}/fold_{fold}/config.yaml",
        provenance="results/train/{track}/{model}/fold_{fold}/provenance.json",
        model="results/train/{track}/{model}/fold_{fold}/model.ckpt",
    log:
        main="logs/train/{track}/{model}/fold_{fold}.log",
        curves="results/train/{track}/{model}/fold_{fold}/logs/metrics.csv",
        hparams="results/train/{track}/{model}/fold_{fold}/logs/hparams.yaml",
    benchmark:
        "benchmarks/train/{track}/{model}/fold_{fold}.tsv"
    wildcard_constraints:
        model=_alternatives(NETWORK_MODELS),
    conda:
        "../workflow/envs/pianoeval.yaml"
    threads: 2
    resources:
        mem_mb=6000,
        gpu=1,
        runtime=240,
    params:
        config=train_config,
        pretrained=pretrained_flag,
        unlabelled=unlabelled_flag,
        persist=persist_push,
    shell:
        "pianoeval train {wildcards.track} {wildcards.model} --config {params.config}"
        " --fold {wildcards.fold} --manifest {input.manifest} --folds {input.folds}"
        " --features {input.features} {params.pretrained} {params.unlabelled} --devices {resources.gpu}"
        " --out-dir results/train/{wildcards.track}/{wildcards.model}/fold_{wildcards.fold}"
        " --checkpoint-dir results/cache/train/{wildcards.track}/{wildcards.model}/fold_{wildcards.fold}"
        " > {log.main} 2>&1"
        "{params.persist}"


# The baselines' folds (the same step, `pianoeval train`): no network, so no spec, weights or curves.
rule train_baseline:
    input:
        unpack(train_inputs),
    output:
        metrics="results/train/{track}/{model}/fold_{fold}/metrics.json",
        predictions="results/train/{track}/{model}/fold_{fold}/predictions.csv",
        embeddings="results/train/{track}/{model}/fold_{fold}/embeddings.pt",
        resolved="results/train/{track}/{model}/fold_{fold}/config.yaml",
        provenance="results/train/{track}/{model}/fold_{fold}/provenance.json",
    log:
        "logs/train/{track}/{model}/fold_{fold}.log",
    benchmark:
        "benchmarks/train/{track}/{model}/fold_{fold}.tsv"
    wildcard_constraints:
        model=_alternatives(BASELINE_MODELS),
    conda:
        "../workflow/envs/pianoeval.yaml"
    threads: 2
    # No GPU: a baseline is a closed-form fit on the statistics (a profile's GPU partition is the train rule's).
    resources:
        mem_mb=6000,
        runtime=240,
    params:
        config=train_config,
        persist=persist_push,
    shell:
        "pianoeval train {wildcards.track} {wildcards.model} --config {params.config}"
        " --fold {wildcards.fold} --manifest {input.manifest} --folds {input.folds}"
        " --features {input.features} --devices 0"
        " --out-dir results/train/{wildcards.track}/{wildcards.model}/fold_{wildcards.fold} > {log} 2>&1"
        "{params.persist}"


# Stacking (training/stacking.py): each track winner retrained on the inner folds of an outer fold's
# training split, predicting the held-out inner part; the fusion learns from these out-of-fold rows.
# Only the winners' files are requested (fuse_inputs reads them from the compare checkpoint).
rule train_inner:
    input:
        unpack(train_inputs),
    output:
        oof="results/train_inner/{track}/{model}/fold_{fold}/inner_{inner}/oof.pt",
        metrics="results/train_inner/{track}/{model}/fold_{fold}/inner_{inner}/metrics.json",
        model_spec="results/train_inner/{track}/{model}/fold_{fold}/inner_{inner}/model_spec.json",
        resolved="results/train_inner/{track}/{model}/fold_{fold}/inner_{inner}/config.yaml",
        provenance="results/train_inner/{track}/{model}/fold_{fold}/inner_{inner}/provenance.json",
        model="results/train_inner/{track}/{model}/fold_{fold}/inner_{inner}/model.ckpt",
    log:
        main="logs/train_inner/{track}/{model}/fold_{fold}/inner_{inner}.log",
        curves="results/train_inner/{track}/{model}/fold_{fold}/inner_{inner}/logs/metrics.csv",
        hparams="results/train_inner/{track}/{model}/fold_{fold}/inner_{inner}/logs/hparams.yaml",
    benchmark:
        "benchmarks/train_inner/{track}/{model}/fold_{fold}/inner_{inner}.tsv"
    conda:
        "../workflow/envs/pianoeval.yaml"
    threads: 2
    resources:
        mem_mb=6000,
        gpu=1,
        runtime=240,
    params:
        config=train_inner_config,
        pretrained=pretrained_flag,
        persist=persist_push,
    shell:
        "pianoeval train-inner {wildcards.track} {wildcards.model} --config {params.config}"
        " --fold {wildcards.fold} --inner {wildcards.inner} --manifest {input.manifest} --folds {input.folds}"
        " --features {input.features} {params.pretrained} --devices {resources.gpu}"
        " --out-dir results/train_inner/{wildcards.track}/{wildcards.model}/fold_{wildcards.fold}/inner_{wildcards.inner}"
        " --checkpoint-dir results/cache/train_inner/{wildcards.track}/{wildcards.model}/fold_{wildcards.fold}/inner_{wildcards.inner}"
        " > {log.main} 2>&1"
        "{params.persist}"
