#!/usr/bin/env bash
# Print the Python 3.11 interpreter the venv is made with (pyproject: requires-python 3.11; the pins were
# resolved on it). $PYTHON if set; else python3.11 or a python3 that is 3.11; else, as on stock Ubuntu
# 22.04 (3.10) or 24.04 (3.12) GPU images, uv's managed CPython 3.11: uv from PATH, or installed from
# PyPI with pip (--user), or with uv's installer, then `uv python install 3.11`.
set -euo pipefail
is311() { "$1" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' >/dev/null 2>&1; }
if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"; exit 0; fi
for candidate in python3.11 python3; do
  if command -v "$candidate" >/dev/null 2>&1 && is311 "$candidate"; then command -v "$candidate"; exit 0; fi
done
echo "find_python: no Python 3.11 on PATH; using uv's managed CPython 3.11" >&2
export PATH="$HOME/.local/bin:$PATH"
if ! command -v uv >/dev/null 2>&1; then
  # Ubuntu 24.04's system Python refuses user installs without --break-system-packages (PEP 668).
  python3 -m pip install --quiet --user uv >&2 2>/dev/null \
    || python3 -m pip install --quiet --user --break-system-packages uv >&2 \
    || { command -v curl >/dev/null 2>&1 && curl -LsSf https://astral.sh/uv/install.sh | sh >&2; } \
    || { echo "find_python: cannot install uv; install Python 3.11 and rerun with PYTHON=python3.11" >&2; exit 1; }
fi
uv python install 3.11 >&2
uv python find 3.11
