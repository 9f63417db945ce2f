#!/usr/bin/env bash
# Dry-run the full target for the demo, every shipped experiment (the CPU rehearsal of the GPU run,
# percepiano_muq_rehearsal, included) and every profile: CI checks the DAGs this way. Each runs in a
# scratch copy of the workflow, so that no experiment meets another's results/experiment.json.
set -euo pipefail
cd "$(dirname "$0")/.."
SM="$PWD/.venv/bin/snakemake"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
fresh() {
  # A fresh copy of the workflow beside ../shared, as a clone has it.
  rm -rf "$scratch/repo"
  mkdir -p "$scratch/repo"
  cp -r Snakefile rules config workflow profiles "$scratch/repo/"
  [ -e "$scratch/shared" ] || ln -s "$(cd .. && pwd)/shared" "$scratch/shared"
}
echo "dry run: config/config.yaml (the demo)"
fresh
(cd "$scratch/repo" && "$SM" results/fusion/winner.json -n --quiet --cores 2 >/dev/null)
for cfg in config/experiments/*.yaml; do
  echo "dry run: $cfg"
  fresh
  (cd "$scratch/repo" && "$SM" -n --quiet --cores 2 --configfile "$cfg" -- results/fusion/winner.json >/dev/null)
done
for profile in profiles/*/; do
  echo "dry run: profile $profile"
  fresh
  (cd "$scratch/repo" && "$SM" -n --quiet --profile "$profile" results/fusion/winner.json >/dev/null)
done
echo "dry runs: ok"
