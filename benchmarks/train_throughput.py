"""Training throughput (clips/s) of the toy teacher on this machine, through the real training loop.

The U-Net, data, optimizer, EMA and conditioning are those of configs/toy_teacher.yaml. Its VAE and
text encoder are replaced by random modules of the same architecture unless --real-components
is given (speed does not depend on the weights): the toy VAE (32/64/64 channels, 1 block per
level, 4x downsampling) and a 6-block, 384-wide text transformer standing in for MiniLM-L6.

    python benchmarks/train_throughput.py                     # 2 warm-up + 8 timed steps
    python benchmarks/train_throughput.py --threads 2 --steps 20
    python benchmarks/train_throughput.py --set data.batch_size=4 --set data.video_length=16

Prints the loop's own samples/s (median over the timed steps) and a breakdown of one step into
data loading, conditioning (VAE + text encoder) and the U-Net update, plus the hours the config's
max_steps would take at that rate.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from hummingbird_t2v.models.unet import count_parameters
from hummingbird_t2v.training.config import apply_overrides, config_from_dict, read_yaml
from hummingbird_t2v.training.loop import Trainer

REPO = Path(__file__).resolve().parents[1]
TOY_VAE_STANDIN = {
    "class_name": "VideoVAE",
    "config": {
        "base_channels": 32,
        "channel_multipliers": [1, 2, 2],
        "layers_per_block": 1,
        "latent_channels": 4,
        "sample_size": 64,
    },
}
# MiniLM-L6 shape: 6 blocks of width 384, 12 heads, MLP 1536 ("penultimate" runs layers - 1 blocks).
TEXT_ENCODER_STANDIN = {
    "class_name": "OpenCLIPTextEncoder",
    "config": {"width": 384, "layers": 7, "heads": 12},
}


def build_config(args: argparse.Namespace, output_dir: str):
    raw = read_yaml(args.config)
    if not args.real_components:
        raw["model"]["vae"] = dict(TOY_VAE_STANDIN)
        raw["model"]["text_encoder"] = dict(TEXT_ENCODER_STANDIN)
    max_steps = raw.get("run", {}).get("max_steps", 0)
    overrides = [
        f"output_dir={output_dir}",
        f"run.max_steps={args.warmup + args.steps}",
        "logging.every=1",
        "logging.tensorboard=false",
        "checkpoint.every=0",
        "sample.every=0",
        "sample.num_inference_steps=1",
        "sample.prompts=[benchmark]",
        "optim.warmup_steps=0",
        *([f"run.cpu_threads={args.threads}"] if args.threads else []),
        *args.overrides,
    ]
    return config_from_dict(apply_overrides(raw, overrides)), max_steps


def step_breakdown(trainer: Trainer, repeats: int) -> dict[str, float]:
    """Median seconds per micro-batch of: rendering/decoding the batch, conditioning, U-Net update."""
    data = trainer._data()
    times: dict[str, list[float]] = {"data": [], "conditioning": [], "unet_update": []}
    for index in range(repeats):
        start = time.perf_counter()
        raw = data[10_000 + index]
        loaded = time.perf_counter()
        batch = trainer.condition(raw)
        conditioned = time.perf_counter()
        loss = trainer.objective(batch, trainer.generator).loss
        loss.backward()
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)
        done = time.perf_counter()
        times["data"].append(loaded - start)
        times["conditioning"].append(conditioned - loaded)
        times["unet_update"].append(done - conditioned)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(REPO / "configs" / "toy_teacher.yaml"))
    parser.add_argument("--steps", type=int, default=8, help="timed optimizer steps")
    parser.add_argument(
        "--warmup",
        type=int,
        default=2,
        help="untimed first steps (allocator and kernel warm-up)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's choice)",
    )
    parser.add_argument(
        "--real-components",
        action="store_true",
        help="use the config's VAE and text encoder",
    )
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        config, config_steps = build_config(args, tmp)
        trainer = Trainer(config)
        trainer.train()
        with open(Path(tmp) / "logs" / "train.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        rates = [float(row["samples_per_s"]) for row in rows[args.warmup :]]
        breakdown = step_breakdown(trainer, repeats=3)

    data = config.data
    clips_per_step = data.batch_size * config.run.grad_accum * trainer.world_size
    rate = statistics.median(rates)
    report = {
        "device": str(trainer.device),
        "threads": torch.get_num_threads(),
        "unet_params_M": round(count_parameters(trainer.trainable) / 1e6, 2),
        "clip": f"{data.video_length}x{data.height}x{data.width}",
        "clips_per_step": clips_per_step,
        "samples_per_s": round(rate, 3),
        "samples_per_s_min_max": [round(min(rates), 3), round(max(rates), 3)],
        "s_per_step": round(clips_per_step / rate, 3),
        "micro_batch_breakdown_s": {k: round(v, 3) for k, v in breakdown.items()},
        "config_max_steps": config_steps,
        "hours_for_config_max_steps": round(config_steps * clips_per_step / rate / 3600, 2),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
