"""Benchmark: MuQ-large (the released architecture, random weights) on CPU through the pipeline's load path.

Builds MuQ-large from `audio.muq_large`, writes it in the released format (config.json + model.safetensors),
loads it as the GPU run does (`registry.build_network` with `audio.muq_name_or_path` = that folder), then
times on 10 s (and 30 s) of audio at batch 1: the frozen forward of the embed rule (layers 9-12), A1's
forward + backward (LoRA rank 16 on linear_q/k/v of layers 9-12) and A3's forward + backward late in its
schedule (layers 9-12 trainable). Records wall times, the process's peak resident memory after each
phase, torch threads and the load average. Writes JSON.

    .venv/bin/python scripts/bench_muq_large.py --out results/benchmarks/muq_large_cpu.json
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from pianoeval.audio.backbones import MuQBackbone
from pianoeval.audio.muq_large import muq_large_config
from pianoeval.audio.muq_weights import save_released_format
from pianoeval.core.config import validate_config
from pianoeval.core.constants import SAMPLE_RATE
from pianoeval.core.io import write_json
from pianoeval.core.settings import FitSettings
from pianoeval.training.registry import build_module, build_network


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def pipeline_config(folder: Path, model: str) -> dict[str, Any]:
    """The config of a GPU run of `model` on the released MuQ in `folder` (plan's A1/A3 settings)."""
    audio = {"models": [model], "backbone": "muq", "muq_pretrained": True, "muq_name_or_path": str(folder)}
    audio |= {"lora_rank": 16, "lora_alpha": 32, "hidden": 512, "heads": 8}
    return validate_config({"audio": audio})


def timed(record: dict[str, Any], name: str, fn: Any, *args: Any) -> Any:
    """Run fn(*args), store its wall time (s) and the peak RSS so far under `name`."""
    start = time.perf_counter()
    out = fn(*args)
    record[name] = {"wall_s": round(time.perf_counter() - start, 2), "peak_rss_mb": round(peak_rss_mb())}
    return out


def train_step(module: Any, seconds: float) -> None:
    """One forward + backward of `seconds` of audio (batch 1) in training mode."""
    module.train()
    wave = 0.1 * torch.randn(1, int(seconds * SAMPLE_RATE), generator=torch.Generator().manual_seed(0))
    module.predict_scores({"wave": wave}).mean().backward()


def frozen_forward(backbone: MuQBackbone, seconds: float) -> None:
    """The embed rule's pass: layers 9-12, no gradient."""
    wave = 0.1 * torch.randn(1, int(seconds * SAMPLE_RATE), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        backbone.eval()(wave)


def run(folder: Path) -> dict[str, Any]:
    """All phases; the folder receives the 1.3 GB weights file."""
    record: dict[str, Any] = {"torch_threads": torch.get_num_threads(), "loadavg_start": os.getloadavg()}
    built = timed(record, "build", lambda: MuQBackbone.from_config(muq_large_config()).muq)
    record["n_parameters"] = sum(p.numel() for p in built.parameters())
    timed(record, "save_released_format", save_released_format, built, folder, muq_large_config())
    record["weights_file_mb"] = round((folder / "model.safetensors").stat().st_size / 2**20)
    del built
    gc.collect()
    net = timed(
        record,
        "load_pipeline_path",
        lambda: build_network("a3", {}, FitSettings.from_config(pipeline_config(folder, "a3"))),
    )
    timed(record, "embed_forward_10s", frozen_forward, net.backbone, 10.0)
    timed(record, "embed_forward_30s", frozen_forward, net.backbone, 30.0)
    a3 = build_module("a3", net, FitSettings.from_config(pipeline_config(folder, "a3")), label_mean=None)
    a3.unfreeze_due(6)  # late in the default schedule: layers 12, 11, 10, 9 trainable
    timed(record, "a3_layers_9_12_forward_backward_10s", train_step, a3, 10.0)
    del a3, net
    gc.collect()
    net = build_network("a1", {}, FitSettings.from_config(pipeline_config(folder, "a1")))
    a1 = build_module("a1", net, FitSettings.from_config(pipeline_config(folder, "a1")), label_mean=None)
    timed(record, "a1_lora_forward_backward_10s", train_step, a1, 10.0)
    record["a1_trainable_backbone_parameters"] = sum(
        p.numel() for n, p in a1.named_parameters() if p.requires_grad and n.startswith("encoder.backbone.")
    )
    record["loadavg_end"] = os.getloadavg()
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="muq_large_") as tmp:
        record = run(Path(tmp) / "MuQ-large-msd-iter")
    write_json(record, Path(args.out))
    print(record)


if __name__ == "__main__":
    main()
