#!/usr/bin/env bash
# Dry-run the full target for every shipped config and every profile (CI checks the DAG this way).
set -euo pipefail
cd "$(dirname "$0")/.."
SM=.venv/bin/snakemake
for cfg in config/config.yaml config/percepiano.yaml config/audio_cpu.yaml; do
  echo "dry run: $cfg"
  $SM results/fusion/winner.json -n --quiet --cores 2 --configfile "$cfg" >/dev/null
done
# The benchmarks' overlays, stacked on config/percepiano.yaml as docs/benchmarks.md runs them: audio
# (logmel, TransKun subset, small MuQ), symbolic (2-core budget, performer protocol, pretraining) and
# training on transcriptions.
for overlays in "config/percepiano_audio_cpu.yaml" \
  "config/percepiano_audio_cpu.yaml config/percepiano_audio_subset.yaml config/percepiano_audio_transkun.yaml" \
  "config/percepiano_audio_cpu.yaml config/percepiano_audio_muq_cpu.yaml" \
  "config/percepiano_cpu.yaml" \
  "config/percepiano_cpu.yaml config/percepiano_performer.yaml" \
  "config/percepiano_cpu.yaml config/percepiano_cpu_pretrain.yaml" \
  "config/percepiano_cpu.yaml config/percepiano_fusion_cpu.yaml" \
  "config/percepiano_transcribed.yaml"; do
  echo "dry run: config/percepiano.yaml + $overlays"
  # shellcheck disable=SC2086  # the overlays are separate words on purpose
  $SM results/fusion/winner.json -n --quiet --cores 2 --configfile config/percepiano.yaml $overlays >/dev/null
done
for profile in profiles/*/; do
  echo "dry run: profile $profile"
  $SM -n --quiet --profile "$profile" results/fusion/winner.json >/dev/null
done
echo "dry runs: ok"
