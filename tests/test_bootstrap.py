"""bootstrap's choice of Python on a machine without 3.11 (stock Ubuntu 22.04/24.04 GPU images), with
stand-in `python3` and `uv` programs: which interpreter it settles on and what it runs to get it.

What this cannot test here: the real download of uv's managed CPython (no network to its host)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def stub(folder: Path, name: str, body: str) -> None:
    """An executable bash script `folder/name` that logs its arguments to $STUB_LOG, then runs `body`."""
    path = folder / name
    path.write_text(f'#!/bin/bash\necho "{name} $*" >> "$STUB_LOG"\n{body}\n')
    path.chmod(0o755)


def find_python(tmp_path: Path, python3_minor: int, have_uv: bool) -> tuple[subprocess.CompletedProcess[str], str]:
    bin_dir, home = tmp_path / "bin", tmp_path / "home"
    bin_dir.mkdir()
    home.mkdir()
    log = tmp_path / "calls.log"
    log.touch()
    # python3 reports its version through the exit status of the version check; `-m pip install ... uv`
    # puts a uv in ~/.local/bin, as pip --user does.
    uv_body = 'if [ "$1 $2" = "python find" ]; then echo /opt/uv/cpython-3.11/bin/python3.11; fi'
    stub(
        bin_dir,
        "python3",
        f'if [ "$1" = "-c" ]; then [ {python3_minor} -eq 11 ]; exit $?; fi\n'
        'if [ "$1 $2" = "-m pip" ]; then /bin/mkdir -p "$HOME/.local/bin"; '
        f'printf \'#!/bin/bash\\necho "uv $*" >> "$STUB_LOG"\\n{uv_body}\\n\' > "$HOME/.local/bin/uv"; '
        '/bin/chmod +x "$HOME/.local/bin/uv"; fi',
    )
    if have_uv:
        stub(bin_dir, "uv", uv_body)
    env = {"PATH": str(bin_dir), "HOME": str(home), "STUB_LOG": str(log)}
    run = subprocess.run(
        ["/bin/bash", str(REPO / "scripts" / "find_python.sh")], env=env, capture_output=True, text=True, timeout=60
    )
    return run, log.read_text()


def test_a_machine_with_python_3_10_gets_uvs_python_3_11(tmp_path: Path) -> None:
    run, calls = find_python(tmp_path, python3_minor=10, have_uv=False)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "/opt/uv/cpython-3.11/bin/python3.11"
    lines = calls.splitlines()
    assert "python3 -m pip install --quiet --user uv" in lines  # uv from PyPI
    assert lines[-2:] == ["uv python install 3.11", "uv python find 3.11"]


def test_uv_on_path_is_used_as_it_is(tmp_path: Path) -> None:
    run, calls = find_python(tmp_path, python3_minor=12, have_uv=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "/opt/uv/cpython-3.11/bin/python3.11"
    assert "pip" not in calls


def test_a_python3_that_is_3_11_is_used_directly(tmp_path: Path) -> None:
    run, calls = find_python(tmp_path, python3_minor=11, have_uv=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == str(tmp_path / "bin" / "python3")
    assert "uv" not in calls


def test_python_named_by_the_user_wins(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHON": "/usr/local/bin/python3.11"}
    run = subprocess.run(["bash", str(REPO / "scripts" / "find_python.sh")], env=env, capture_output=True, text=True)
    assert run.stdout.strip() == "/usr/local/bin/python3.11"
