"""The one place that knows where the pipeline's files are: a fold folder's files, and results/'s folders.

A *fold folder* is what the `train` and `fuse` rules (and the inner-fold training of the fusion's stacking)
write for one model on one fold: metrics, per-segment predictions, embeddings, the network's spec, the
resolved config and provenance, the trained weights (`model.ckpt`) and the training curves. `FoldDir`
names those files; `Results` names the folders of a results tree. The rules declare the same names
(`tests/test_layout.py` checks that `rules/*.smk` and `FoldDir.FILES` agree). Lightning's working
checkpoints (best and last epoch, what a killed run resumes from) are a cache the rules keep under
`results/cache/` (`--checkpoint-dir`); without one they go to the fold folder's `checkpoints/`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from pianoeval.core.errors import InputError


@dataclass(frozen=True)
class FoldDir:
    """The files of one trained fold folder (`results/train/<track>/<model>/fold_<k>`, `results/fuse/...`)."""

    path: Path

    # Output name -> file name, for the rules' `output:` blocks.
    FILES: ClassVar[dict[str, str]] = {
        "metrics": "metrics.json",
        "predictions": "predictions.csv",
        "embeddings": "embeddings.pt",
        "model_spec": "model_spec.json",
        "config": "config.yaml",
        "provenance": "provenance.json",
        "model": "model.ckpt",
    }
    # Lightning's CSV log (training curves), a `log:` of the rules.
    CURVES: ClassVar[str] = "logs/metrics.csv"
    HPARAMS: ClassVar[str] = "logs/hparams.yaml"
    CHECKPOINTS: ClassVar[str] = "checkpoints"

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def metrics(self) -> Path:
        """metrics.json: written last, so its presence means the fold is complete."""
        return self.path / self.FILES["metrics"]

    @property
    def predictions(self) -> Path:
        """predictions.csv: one row per segment (id, split, group, 19 predictions, 19 labels)."""
        return self.path / self.FILES["predictions"]

    @property
    def embeddings(self) -> Path:
        """embeddings.pt: {"ids", "split", "scores" [N, 19], "z" [N, H] or None}."""
        return self.path / self.FILES["embeddings"]

    @property
    def model_spec(self) -> Path:
        """model_spec.json: what rebuilds the network before its weights are loaded."""
        return self.path / self.FILES["model_spec"]

    @property
    def config(self) -> Path:
        """config.yaml: the resolved config the fold was trained with."""
        return self.path / self.FILES["config"]

    @property
    def provenance(self) -> Path:
        """provenance.json: seed, versions, git revision, host, time."""
        return self.path / self.FILES["provenance"]

    @property
    def model(self) -> Path:
        """model.ckpt: the chosen epoch's weights and hyper-parameters (no optimiser state): what loads."""
        return self.path / self.FILES["model"]

    @property
    def curves(self) -> Path:
        """logs/metrics.csv: Lightning's per-step and per-epoch metrics."""
        return self.path / self.CURVES

    @property
    def checkpoints(self) -> Path:
        """The default Lightning checkpoints folder (best.ckpt, last.ckpt) when no cache folder is given;
        also where folders written before model.ckpt existed, and export bundles, keep their weights."""
        return self.path / self.CHECKPOINTS

    @property
    def last_checkpoint(self) -> Path:
        """last.ckpt: written every epoch (what a killed run resumes from)."""
        return self.checkpoints / "last.ckpt"

    @property
    def best_checkpoint(self) -> Path:
        """best.ckpt: the epoch chosen on the dev split."""
        return self.checkpoints / "best.ckpt"

    def checkpoint(self) -> Path:
        """model.ckpt, else (an older folder, a bundle) the best checkpoint, else the last; InputError
        naming the folder when it has none."""
        for path in (self.model, self.best_checkpoint, self.last_checkpoint):
            if path.is_file():
                return path
        raise InputError("no checkpoint in this training folder; rerun its rule", self.path)


@dataclass(frozen=True)
class Results:
    """The folders of a results tree (default `results/`), as the rules lay it out."""

    root: Path = Path("results")

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    def fold(self, track: str, model: str, fold: int) -> FoldDir:
        """A model's fold folder: results/train/<track>/<model>/fold_<k>, results/fuse/<model>/fold_<k> for fusion."""
        if track == "fusion":
            return FoldDir(self.root / "fuse" / model / f"fold_{fold}")
        return FoldDir(self.root / "train" / track / model / f"fold_{fold}")

    def folds(self, track: str, model: str) -> list[FoldDir]:
        """Every fold folder of a model that exists, in fold order; InputError when there is none."""
        parent = self.fold(track, model, 0).path.parent
        dirs = sorted(parent.glob("fold_*"), key=lambda p: int(p.name.split("_")[1]))
        if not dirs:
            raise InputError(f"no trained folds of {track}/{model}; run the pipeline first", parent)
        return [FoldDir(d) for d in dirs]

    def compare(self, track: str) -> Path:
        """results/compare/<track>: comparison.json/.md, winner.json, plots."""
        return self.root / "compare" / track

    def winner(self, track: str) -> Path:
        """A track's winner.json (results/compare/<track>/winner.json)."""
        return self.compare(track) / "winner.json"

    @property
    def stats_store(self) -> Path:
        """results/featurize/stats.pt: the statistics store (the `_score` fusions' score-relative statistics)."""
        return self.root / "featurize" / "stats.pt"

    @property
    def final_winner(self) -> Path:
        """results/fusion/winner.json: the headline target."""
        return self.root / "fusion" / "winner.json"
