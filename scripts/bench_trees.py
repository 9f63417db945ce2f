"""Trees in torch: our `side_input.TreeEnsemble` against hummingbird-ml, on the same fitted forest.

The forest is the wide part's (`side_input.make_trees`, 300 extremely randomised trees), fitted as
`WithStatistics.init_trees` fits it: the statistics of a seeded sample of PercePiano segments
(`symbolic.stats.performance_statistics`, with the score-relative part) against the logits of their
canonical labels (19 outputs). Both compilers are compared with sklearn's own `predict`:

- equality: the largest absolute difference over the fitted rows and held-out rows, and over rows with
  one feature exactly on a split threshold (rounded to float32, as a float32 input can be);
- speed: compile time, inference time for a batch of 1 and of 256 (median of repeats, 1 thread);
- checkpoint: whether the compiled trees are buffers that a fresh network of the same class loads from
  a state dict saved with `torch.save` and read with `torch.load(weights_only=True)` (no pickle).

    .venv/bin/python scripts/bench_trees.py --out bench_trees.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pianoeval.core.io import write_json
from pianoeval.networks.side_input import TreeEnsemble, make_trees

# hummingbird-ml's three tree strategies (its `tree_implementation` option).
HB_IMPLEMENTATIONS: tuple[str, ...] = ("gemm", "tree_trav", "perf_tree_trav")


def shared_data() -> Path:
    """The shared data folder (as the tests find it): $PIANOEVAL_SHARED_DATA or ../shared/data."""
    env = os.environ.get("PIANOEVAL_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


def percepiano_rows(root: Path, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Statistics [n, S] float32 and label logits [n, 19] of a seeded sample of labelled PercePiano segments."""
    import pandas as pd

    from pianoeval.data.midi import load_performance
    from pianoeval.symbolic.stats import performance_statistics

    labels = json.loads((root / "labels" / "label_2round_mean_reg_19_with0_rm_highstd0.json").read_text())
    index = pd.read_csv(root / "index.csv")
    index = index[index["id"].isin(labels)]
    picked = index.iloc[np.sort(np.random.default_rng(seed).choice(len(index), size=n, replace=False))]
    x = np.stack(
        [
            performance_statistics(load_performance(root / r.midi), load_performance(root / r.score_midi))
            for r in picked.itertuples()
        ]
    )
    y = np.array([labels[i][:19] for i in picked["id"]], dtype=np.float64)
    logits = np.log(np.clip(y, 1e-4, 1 - 1e-4) / np.clip(1 - y, 1e-4, 1))
    return x.astype(np.float32), logits - logits.mean(axis=0)


def boundary_rows(reg: Any, x: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Rows [n, S] of x with one feature set to a split threshold rounded to float32: the inputs on which
    a float32 comparison (x <= float32(t)) and sklearn's (float32 x <= float64 t) can disagree."""
    rng = np.random.default_rng(seed)
    out = x[rng.integers(len(x), size=n)].copy()
    for row in out:
        tree = reg.estimators_[int(rng.integers(len(reg.estimators_)))].tree_
        node = int(rng.choice(np.flatnonzero(tree.children_left != -1)))
        row[tree.feature[node]] = np.float32(tree.threshold[node])
    return out


def timed(fn: Callable[[], Any], repeats: int) -> float:
    """Median wall seconds of `repeats` calls of fn (after one warm-up call)."""
    fn()
    walls = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        walls.append(time.perf_counter() - start)
    return float(np.median(walls))


def ours(reg: Any, n_out: int) -> tuple[torch.nn.Module, float]:
    """Our compiler: a TreeEnsemble loaded from the forest, and the compile seconds."""
    start = time.perf_counter()
    module = TreeEnsemble(n_out)
    module.load_sklearn(reg)
    return module.eval(), time.perf_counter() - start


def hummingbird(reg: Any, x: np.ndarray, implementation: str) -> tuple[torch.nn.Module, float]:
    """hummingbird-ml's compiler (torch backend, one tree strategy): its executor module and the compile seconds."""
    from hummingbird.ml import convert

    start = time.perf_counter()
    container = convert(reg, "torch", x[:1], extra_config={"tree_implementation": implementation})
    return container.model.eval(), time.perf_counter() - start


def round_trip(module: torch.nn.Module, make_fresh: Callable[[], torch.nn.Module], x: torch.Tensor) -> dict:
    """Save the state dict (torch.save), read it without pickle, load it into a fresh module, compare outputs."""
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    buffer.seek(0)
    try:
        state = torch.load(buffer, weights_only=True)
        fresh = make_fresh()
        fresh.load_state_dict(state)
        same = bool(torch.equal(predict(fresh, x), predict(module, x)))
        return {"state_dict_round_trip": same, "error": None}
    except Exception as exc:  # the failure is the finding
        return {"state_dict_round_trip": False, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}


def predict(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Outputs [B, O] of a compiled forest (hummingbird's executor returns a tensor for regressors)."""
    with torch.no_grad():
        out = module(x)
    return (out[0] if isinstance(out, tuple) else out).reshape(x.shape[0], -1)


def compare(
    reg: Any, other: Any, x_fit: np.ndarray, x_all: np.ndarray, x_edge: np.ndarray, repeats: int
) -> dict[str, Any]:
    """Equality, speed and checkpoint round trip of every compiler on one fitted forest.

    The round trip loads the checkpoint into the module a network holds *before* it sees the checkpoint:
    ours an empty TreeEnsemble; hummingbird's executor can only be made from a fitted forest, so it is
    made from `other` (the same settings fitted on other rows), as a network rebuilt for scoring would.
    """
    expected = reg.predict(x_all).reshape(len(x_all), -1)
    n_out = expected.shape[1]
    xt = torch.from_numpy(x_all)
    one, batch = xt[:1], xt[: min(256, len(xt))]
    compilers: dict[str, Callable[[], tuple[torch.nn.Module, float]]] = {"ours": lambda: ours(reg, n_out)}
    for impl in HB_IMPLEMENTATIONS:
        compilers[f"hummingbird_{impl}"] = lambda impl=impl: hummingbird(reg, x_fit, impl)
    results = {}
    for name, build in compilers.items():
        module, compile_s = build()
        diff = np.abs(predict(module, xt).double().numpy() - expected)
        edge = np.abs(predict(module, torch.from_numpy(x_edge)).double().numpy() - reg.predict(x_edge))
        impl = name.removeprefix("hummingbird_")
        fresh = (lambda: TreeEnsemble(n_out)) if name == "ours" else (lambda i=impl: hummingbird(other, x_fit, i)[0])
        entry = {
            "compile_s": compile_s,
            "max_abs_diff": float(diff.max()),
            "mean_abs_diff": float(diff.mean()),
            "max_abs_diff_on_thresholds": float(edge.max()),
            "rows_differing_on_thresholds": int((edge.max(axis=1) > 1e-4).sum()),
            "infer_s_batch_1": timed(lambda m=module: predict(m, one), repeats),
            f"infer_s_batch_{len(batch)}": timed(lambda m=module: predict(m, batch), max(3, repeats // 10)),
            "n_buffer_bytes": int(sum(t.numel() * t.element_size() for t in module.state_dict().values())),
            **round_trip(module, fresh, xt),
        }
        results[name] = entry
        print(name, {k: v for k, v in entry.items() if k != "error"}, flush=True)
    return results


def machine() -> dict[str, Any]:
    """Load averages, CPU count, platform, commit and library versions, to print beside the figures."""
    from importlib.metadata import version

    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True).stdout.strip())
    return {
        "loadavg": list(os.getloadavg()),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "commit": rev + ("+dirty" if dirty else ""),
        "torch_threads": torch.get_num_threads(),
        "versions": {p: version(p) for p in ("hummingbird-ml", "scikit-learn", "torch")},
    }


def main() -> None:
    """Fit the forest on PercePiano statistics, compare the compilers, write the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=shared_data())
    parser.add_argument("--segments", type=int, default=400, help="PercePiano segments featurized")
    parser.add_argument("--min-leaf", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)  # a shared 2-core machine: one thread is what scoring uses under load
    report: dict[str, Any] = {"command": "scripts/bench_trees.py", "args": {k: str(v) for k, v in vars(args).items()}}
    report["machine_before"] = machine()
    start = time.perf_counter()
    x, y = percepiano_rows(args.data / "percepiano", args.segments, args.seed)
    n_fit = int(0.75 * len(x))
    reg = make_trees(args.min_leaf).fit(x[:n_fit], y[:n_fit])
    report["data"] = {"n_fit": n_fit, "n_held_out": len(x) - n_fit, "n_stats": x.shape[1], "n_out": y.shape[1]}
    report["forest"] = {
        "n_trees": len(reg.estimators_),
        "max_nodes": max(e.tree_.node_count for e in reg.estimators_),
        "max_depth": max(e.tree_.max_depth for e in reg.estimators_),
    }
    other = make_trees(args.min_leaf).fit(x[: int(0.9 * n_fit)], y[: int(0.9 * n_fit)])
    edge = boundary_rows(reg, x, 1000, args.seed)
    report["data"]["n_threshold_rows"] = len(edge)
    report["compilers"] = compare(reg, other, x[:n_fit], x, edge, args.repeats)
    report["wall_s"] = round(time.perf_counter() - start, 1)
    report["machine_after"] = machine()
    write_json(report, args.out)


if __name__ == "__main__":
    main()
