#!/usr/bin/env bash
# Link this checkout's Snakemake profiles (profiles/<name>) where Snakemake looks up a profile given by
# name: $XDG_CONFIG_HOME/snakemake/<name> (default ~/.config/snakemake/<name>; snakemake's cli.py
# get_profile_dir searches the working directory, then that user folder, then the site folder). Then,
# from the repository root, `snakemake --profile thunder results/fusion/winner.json` works as typed.
# A profile of that name that is not a link into a pianoeval checkout is left alone (with a warning); a
# dangling link (its checkout was deleted or moved) is replaced.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
dest="${XDG_CONFIG_HOME:-$HOME/.config}/snakemake"
mkdir -p "$dest"
for profile in "$repo"/profiles/*/; do
  name="$(basename "$profile")"
  link="$dest/$name"
  if [ -e "$link" ] && [ ! -L "$link" ]; then
    echo "link_profiles: $link exists and is not a link; left alone (use --profile profiles/$name)" >&2
    continue
  fi
  if [ -L "$link" ] && [ -e "$(readlink "$link")" ] && [ ! -f "$(readlink "$link")/../../scripts/link_profiles.sh" ]; then
    echo "link_profiles: $link points to $(readlink "$link"), not a pianoeval checkout; left alone" >&2
    continue
  fi
  ln -sfn "${profile%/}" "$link"
  linked="${linked:-}${linked:+ }$name"
done
echo "link_profiles: profiles ${linked:-(none)} linked in $dest"
