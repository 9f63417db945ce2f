"""Seeding every global random state, as Lightning's `seed_everything(seed, workers=True)` does, without
importing Lightning (about 3 s of a job's start on 2 cores: torchmetrics, torch._dynamo, transformers).
A baseline's training job seeds with this and never imports Lightning; networks import it anyway."""

from __future__ import annotations

import os
import random


def seed_everything(seed: int) -> int:
    """Seed Python's, NumPy's and torch's global generators with `seed` and set PL_GLOBAL_SEED and
    PL_SEED_WORKERS=1 (Lightning's `seed_everything(seed, workers=True, verbose=False)`, call for call)."""
    import numpy as np
    import torch

    seed = int(seed)
    os.environ["PL_GLOBAL_SEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ["PL_SEED_WORKERS"] = "1"
    return seed
