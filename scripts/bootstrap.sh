#!/usr/bin/env bash
# Idempotent set-up: Debian packages (fluidsynth + a GM soundfont, rclone) and a Python 3.11 venv in .venv
# (uv's managed CPython when the machine's Python is another version) with this package, its pinned
# dependencies and the dev tools, and the Snakemake profiles linked by name. Safe to run repeatedly.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v fluidsynth >/dev/null 2>&1 || need_apt+=(fluidsynth)
[ -f /usr/share/sounds/sf2/FluidR3_GM.sf2 ] || need_apt+=(fluid-soundfont-gm)
command -v git >/dev/null 2>&1 || need_apt+=(git)
# rclone: `pianoeval persist` copies results to durable storage (ephemeral GPU instances, docs/thunder.md).
command -v rclone >/dev/null 2>&1 || need_apt+=(rclone)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "bootstrap: installing Debian packages: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  # Python 3.11 (the pins' interpreter): the machine's, or uv's managed one (scripts/find_python.sh).
  PY="$(bash scripts/find_python.sh)"
  echo "bootstrap: creating .venv with $PY"
  "$PY" -m venv .venv
fi
# muq and transkun declare torchaudio (no release for torch 2.13), so an installer would replace torch:
# they and their two pure-Python imports are installed without dependencies (docs/audio_backbones.md).
NO_DEPS='muq==0.1.0 transkun==2.0.1 einops==0.8.2 easydict==1.14'
uv_install() {
  local flags=(--python .venv/bin/python --index-strategy unsafe-best-match --compile-bytecode --quiet) key value v
  local cert="${SSL_CERT_FILE:-}"
  while IFS='=' read -r key value; do
    value="${value#\'}"; value="${value%\'}"
    for v in $value; do
      case "$key" in
        *.index-url) flags+=(--index-url "$v") ;;
        *.extra-index-url) flags+=(--extra-index-url "$v") ;;
        *.find-links) flags+=(--find-links "$v") ;;
        *.constraint) flags+=(--constraint "$v") ;;
        *.cert) cert="$v" ;;
      esac
    done
  done < <(.venv/bin/python -m pip config list 2>/dev/null | sort -u)
  SSL_CERT_FILE="$cert" .venv/bin/uv pip install "${flags[@]}" "torch==2.13.0" -e ".[dev]" \
    && SSL_CERT_FILE="$cert" .venv/bin/uv pip install "${flags[@]}" --no-deps $NO_DEPS
}
stamp=.venv/.pianoeval-installed
# True when the venv's pianoeval is this checkout's (an editable install made from another clone, e.g. a
# venv linked into a second checkout, points elsewhere and would run that code, or none once it is gone).
ours() { .venv/bin/python -c "import pathlib, sys, pianoeval; sys.exit(pathlib.Path('src').resolve() not in pathlib.Path(pianoeval.__file__).resolve().parents)" 2>/dev/null; }
# Reinstall only when the dependency pins change, or the installed package is not this checkout's.
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ scripts/bootstrap.sh -nt "$stamp" ] || ! ours; then
  echo "bootstrap: installing Python packages (torch 2.13.0 CPU wheel first, so nothing pulls a CUDA build)"
  # This machine's pip config lists local indexes that may not exist; drop those warnings only.
  pipq() { .venv/bin/python -m pip install -q "$@" 2>&1 | { grep -v "^WARNING: Location '.*' is ignored" || true; }; }
  # uv installs the same pins faster than pip (the whole bootstrap from a fresh clone: 64 s against 149 s,
  # docs/benchmarks.md); pip does it when uv cannot be installed or fails. uv does not read pip's
  # configuration: the indexes, find-links and constraints pip is configured with are passed on, and
  # every index is searched for the best match, as pip does. --compile-bytecode: pip compiles every module at
  # install; without it, where PYTHONDONTWRITEBYTECODE is set, each job would compile its imports again (Lightning
  # took 18 s to import instead of 8).
  if [ "${PIANOEVAL_PIP_ONLY:-0}" != 1 ] && pipq "uv==0.13.9" && [ -x .venv/bin/uv ] && uv_install; then
    :
  else
    echo "bootstrap: installing with pip"
    pipq --upgrade pip
    pipq "torch==2.13.0"
    pipq -e ".[dev]"
    pipq --no-deps $NO_DEPS
  fi
  .venv/bin/python -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('2.13.0') else 'torch was replaced')"
  touch "$stamp"
fi
# `snakemake --profile thunder ...` (a profile by name) from the repository root: link the profiles
# where Snakemake looks them up.
bash scripts/link_profiles.sh
versions=$(.venv/bin/python -c 'import torch, pianoeval; print("torch", torch.__version__, "pianoeval", pianoeval.__version__)') \
  || { echo "error: .venv: pianoeval does not import after the install; remove .venv and run again" >&2; exit 1; }
echo "bootstrap: ready ($versions)"
