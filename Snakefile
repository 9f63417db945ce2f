# pianoeval: prepare data -> featurize/render/embed -> pretrain/train per fold -> compare
# -> fuse -> robustness -> results/fusion/winner.json
from snakemake.utils import min_version

min_version("9.0")


# The demo unless config files are named (an experiment, by --configfile or a profile): those alone
# are then the config (rules/common.smk), and the demo's file is not read at all.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/features.smk"
include: "rules/train.smk"
include: "rules/compare.smk"
include: "rules/fusion.smk"
include: "rules/export.smk"


rule all:
    default_target: True
    input:
        "results/fusion/winner.json",
        "results/robustness/report.json",
        "results/report/index.html",
