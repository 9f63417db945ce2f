# The commands of the README, plus the checks CI runs. Every target bootstraps first.
.PHONY: demo rehearsal test test-fast lint dryrun bootstrap clean

SNAKEMAKE = .venv/bin/snakemake
# Rules call the `pianoeval` command of the venv.
export PATH := $(CURDIR)/.venv/bin:$(PATH)
CORES ?= 2

bootstrap:
	bash scripts/bootstrap.sh

# The demo's networks are tiny: a training job is mostly imports and small ops, which one thread runs
# as fast as two, so two such jobs run side by side on 2 cores (docs/benchmarks.md, "Demo corpus"); the
# same for the baselines' fits, the featurizers and the audio robustness check. tests/test_rerun_scope.py
# runs its small demo with these and DEMO_ENV.
DEMO_THREADS = --set-threads pretrain=1 train=1 train_inner=1 fuse=1 featurize=1 train_baseline=1 audio_robustness=1
# Warm start (src/pianoeval/core/warm.py): torch and Lightning are imported once, not once per job.
DEMO_ENV = PIANOEVAL_WARM_START=1
demo: bootstrap
	$(DEMO_ENV) $(SNAKEMAKE) --cores $(CORES) $(DEMO_THREADS) --printshellcmds results/fusion/winner.json results/report/index.html \
		results/export/pianoeval.bundle

# The CPU rehearsal of the GPU experiment (profiles/thunder): the same rules, models and settings at small
# sizes, with a small MuQ of the released architecture loaded through the pretrained path (docs/thunder.md).
REHEARSAL_MUQ = resources/muq_rehearsal
rehearsal: bootstrap
	.venv/bin/pianoeval muq-small --out $(REHEARSAL_MUQ)
	$(SNAKEMAKE) --cores $(CORES) --printshellcmds --configfile config/experiments/percepiano_muq_rehearsal.yaml \
	  -- results/fusion/winner.json results/report/index.html

# One pytest worker per core, each test file on one worker (its module fixtures built once): the fast tests
# took 225 s against 294 s in one process on 2 idle cores (docs/benchmarks.md). Files are handed out longest
# first (tests/conftest.py; --no-loadscope-reorder keeps that order instead of xdist's most-tests-first).
test: bootstrap
	.venv/bin/python -m pytest -q -n $(CORES) --dist loadfile --no-loadscope-reorder

# The edit-test loop: every test not marked slow (tests/conftest.py).
test-fast: bootstrap
	.venv/bin/python -m pytest -q -m fast

lint: bootstrap
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/snakefmt --check Snakefile rules/
	$(SNAKEMAKE) --lint

dryrun: bootstrap
	bash scripts/dryrun_all.sh

clean:
	rm -rf results logs benchmarks .snakemake
