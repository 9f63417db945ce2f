#!/usr/bin/env bash
# Dry-run the full target for the demo, every shipped experiment (the CPU rehearsal of the GPU run,
# percepiano_muq_rehearsal, included) and every profile: CI checks the DAGs this way. Each runs in its own
# scratch copy of the workflow, so that no experiment meets another's results/experiment.json, and
# DRYRUN_JOBS of them (default: the number of cores) run at a time: a dry run is one busy Python process.
set -euo pipefail
cd "$(dirname "$0")/.."
SM="$PWD/.venv/bin/snakemake"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
ln -s "$(cd .. && pwd)/shared" "$scratch/shared"
jobs="${DRYRUN_JOBS:-$(nproc)}"

# One line per dry run: its name, then the arguments Snakemake gets before the target.
{
  printf 'config/config.yaml (the demo)\t--cores 2\n'
  for cfg in config/experiments/*.yaml; do printf '%s\t--cores 2 --configfile %s --\n' "$cfg" "$cfg"; done
  for profile in profiles/*/; do printf 'profile %s\t--profile %s\n' "$profile" "$profile"; done
} >"$scratch/plan"

dry_run() {
  # $1: the line number in the plan. A fresh copy of the workflow beside ../shared, as a clone has it.
  local name args dir="$scratch/run$1"
  IFS=$'\t' read -r name args < <(sed -n "${1}p" "$scratch/plan")
  mkdir -p "$dir/repo"
  cp -r Snakefile rules config workflow profiles "$dir/repo/"
  ln -s "$scratch/shared" "$dir/shared"
  # shellcheck disable=SC2086  # $args is a list of words
  if (cd "$dir/repo" && "$SM" -n --quiet $args results/fusion/winner.json >"$dir/log" 2>&1); then
    echo "dry run: $name ok"
  else
    echo "dry run: $name FAILED"; cat "$dir/log"; return 1
  fi
}
export -f dry_run
export SM scratch
seq "$(wc -l <"$scratch/plan")" | xargs -P "$jobs" -I{} bash -c 'dry_run {}'
echo "dry runs: ok"
