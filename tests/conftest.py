"""Shared pytest fixtures: the real data folder, a tiny Performance MIDI factory, one-fold folds files."""

from __future__ import annotations

import importlib.util
import os
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from pianoeval.data.midi import Performance, write_performance

# Real data (read-only): $PIANOEVAL_SHARED_DATA, else <repo>/../shared/data.
SHARED_DATA = Path(
    os.environ.get("PIANOEVAL_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data")
)


# The test files that take longest on 2 cores (pytest --durations, docs/benchmarks.md), longest first.
LONGEST_FILES = (
    "test_rerun_scope.py",
    "test_kill_rerun.py",
    "test_transcribe_onnx.py",
    "test_serve.py",
    "test_persist_workflow.py",
    "test_seams_robustness.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test not marked `slow` is `fast` (`pytest -m fast`, the edit-test loop); a `slow` mark must
    say why the test is slow: `@pytest.mark.slow(reason="...")`.

    Files are then ordered longest first (LONGEST_FILES, then files with a slow test, then by their number
    of tests): `make test` hands whole files to its workers in this order (`--dist loadfile
    --no-loadscope-reorder`), so a long end-to-end file starts at once instead of running alone at the end."""
    slow_files: set[str] = set()
    for item in items:
        slow = item.get_closest_marker("slow")
        if slow is None:
            item.add_marker(pytest.mark.fast)
        elif not slow.kwargs.get("reason"):
            raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.slow needs reason=... (why it is slow)")
        else:
            slow_files.add(item.path.name)
    count = Counter(item.path.name for item in items)

    def rank(item: pytest.Item) -> tuple[int, int]:
        name = item.path.name
        if name in LONGEST_FILES:
            return 0, LONGEST_FILES.index(name)
        return (1 if name in slow_files else 2), -count[name]

    items.sort(key=rank)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of the real data folder; skips the test only when that folder is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (set PIANOEVAL_SHARED_DATA to its location)")
    return SHARED_DATA


def load_script(name: str) -> ModuleType:
    """A module of the repository's `scripts/` folder (benchmark scripts are not part of the package)."""
    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def tiny_midi(tmp_path: Path) -> Callable[..., Path]:
    """Factory writing a small piano MIDI in tmp_path: one note per pitch, 0.5 s apart, pedal down then up."""

    def make(
        name: str = "tiny.mid",
        pitches: Sequence[int] = (60, 62, 64, 65, 67),
        step_s: float = 0.5,
        velocity: int = 80,
        pedal: bool = True,
    ) -> Path:
        onsets = np.arange(len(pitches)) * step_s
        notes = np.stack([onsets, onsets + 0.9 * step_s, np.asarray(pitches), np.full(len(pitches), velocity)], axis=1)
        ped = np.array([[0.0, 127.0], [onsets[-1] + step_s, 0.0]]) if pedal else np.zeros((0, 2))
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_performance(Performance(notes, ped), path)

    return make


@pytest.fixture(scope="session")
def one_fold() -> Callable[..., dict]:
    """Factory writing a folds file with fold 0 only: the corpus's segment groups in sorted order,
    the first `n_train` to train, the next `n_dev` to dev, the rest to val. Returns the folds dict."""
    from pianoeval.core.io import write_json

    def make(df, path: Path, n_train: int, n_dev: int) -> dict:
        fold: dict = {"fold": 0, "train": [], "dev": [], "val": []}
        for k, group in enumerate(sorted(df["segment_group"].unique())):
            split = "train" if k < n_train else "dev" if k < n_train + n_dev else "val"
            fold[split].extend(df.loc[df["segment_group"] == group, "segment_id"])
        folds = {"protocol": "segment", "k": 1, "seed": 0, "folds": [fold]}
        write_json(folds, path)
        return folds

    return make
