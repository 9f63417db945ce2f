"""Progress lines for training logs: the progress bar is off (logs are files), so say n/N in the log."""

from __future__ import annotations

import logging
import time
from typing import Any

from lightning.pytorch.callbacks import Callback

log = logging.getLogger(__name__)

# Within a long epoch, at most one "batch n/N" line per this many seconds.
BATCH_LOG_INTERVAL_S: float = 60.0


class EpochLog(Callback):
    """Log one line per epoch (`<what> epoch 3/30 (2.1 s): train/loss 0.41, dev/r2 0.12, ...`, the
    progress-bar metrics) and, in epochs longer than BATCH_LOG_INTERVAL_S, batch n/N now and then."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._epoch_start = 0.0
        self._last_line = 0.0

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self._epoch_start = self._last_line = time.perf_counter()

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        now = time.perf_counter()
        if now - self._last_line >= BATCH_LOG_INTERVAL_S:
            self._last_line = now
            log.info(
                "%s epoch %d/%d: batch %d/%s",
                self.what,
                trainer.current_epoch + 1,
                trainer.max_epochs,
                batch_idx + 1,
                trainer.num_training_batches,
            )

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        shown = ", ".join(f"{k} {float(v):.4f}" for k, v in sorted(trainer.progress_bar_metrics.items()))
        log.info(
            "%s epoch %d/%d (%.1f s)%s",
            self.what,
            trainer.current_epoch + 1,
            trainer.max_epochs,
            time.perf_counter() - self._epoch_start,
            f": {shown}" if shown else "",
        )
