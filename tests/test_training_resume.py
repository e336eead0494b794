"""Kill-and-resume gives the same weights as an uninterrupted run; two processes (gloo) shard the data."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hummingbird_t2v.cli import main as cli_main
from hummingbird_t2v.training.config import load_config
from hummingbird_t2v.training.loop import Trainer

TINY_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny_test.yaml"
# Dropout (temporal convs), posterior sampling, prompt dropout, noise and timesteps all draw
# random numbers, so matching weights need every RNG stream and the data position restored.
RUN = [
    "run.cpu_threads=1",
    "run.max_steps=6",
    "checkpoint.every=2",
    "checkpoint.keep=0",
]

# Runs the tiny config and SIGKILLs itself in the middle of writing the step-4 checkpoint
# (after the weights, before the optimizer state): the worst moment for a crash.
KILLED_RUN = textwrap.dedent(
    """
    import os, signal, sys
    from hummingbird_t2v.training import checkpointing
    from hummingbird_t2v.training.config import load_config
    from hummingbird_t2v.training.loop import Trainer

    write_optimizer = checkpointing.save_optimizer_state

    def killed_while_saving(path, state):
        if "step-00000004" in str(path):
            os.kill(os.getpid(), signal.SIGKILL)
        write_optimizer(path, state)

    checkpointing.save_optimizer_state = killed_while_saving
    Trainer(load_config(sys.argv[1], sys.argv[2:])).train()
    """
)


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def test_killed_and_resumed_run_matches_an_uninterrupted_one(tmp_path, restore_threads):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    Trainer(load_config(TINY_CONFIG, [f"output_dir={whole}", *RUN])).train()

    script = tmp_path / "killed_run.py"
    script.write_text(KILLED_RUN)
    child = subprocess.run(
        [sys.executable, str(script), str(TINY_CONFIG), f"output_dir={killed}", *RUN],
        check=False,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    checkpoints = killed / "checkpoints"
    assert (checkpoints / "step-00000002").is_dir()
    assert (checkpoints / ".tmp-step-00000004").is_dir() and not (checkpoints / "step-00000004").exists()

    args = [
        "train",
        "base",
        "--config",
        str(TINY_CONFIG),
        "--output",
        str(killed),
        "--resume",
    ]
    assert cli_main([*args, *[a for item in RUN for a in ("--set", item)]]) == 0
    assert not (checkpoints / ".tmp-step-00000004").exists()

    for name in ("model.safetensors", "ema.safetensors"):
        expected = load_file(whole / "checkpoints" / "step-00000006" / name)
        resumed = load_file(checkpoints / "step-00000006" / name)
        assert expected.keys() == resumed.keys()
        worst = max((expected[k] - resumed[k]).abs().max().item() for k in expected)
        assert worst <= 1e-6, f"{name}: resumed weights differ by {worst}"
    exported = load_file(killed / "model" / "unet" / "model.safetensors")
    reference = load_file(whole / "model" / "unet" / "model.safetensors")
    # On one CPU with the same thread count the match is bitwise; 1e-6 leaves room for other BLAS builds.
    assert max((exported[k] - reference[k]).abs().max().item() for k in reference) <= 1e-6

    with (killed / "logs" / "train.csv").open() as handle:
        resumed_rows = list(csv.DictReader(handle))
    with (whole / "logs" / "train.csv").open() as handle:
        whole_rows = list(csv.DictReader(handle))
    assert [r["step"] for r in resumed_rows] == [
        "1",
        "2",
        "3",
        "4",
        "5",
        "6",
    ]  # rows of the killed steps replaced
    assert [float(r["loss"]) for r in resumed_rows] == pytest.approx([float(r["loss"]) for r in whole_rows], rel=1e-5)


def test_two_processes_with_gloo_train_on_disjoint_clips(tmp_path):
    out = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "hummingbird_t2v.cli", "train", "base", "--config", str(TINY_CONFIG), "--output", str(out),
        "--set", "run.max_steps=2", "--set", "checkpoint.every=0", "--set", "data.record_paths=true",
        "--set", "run.device=cpu",
    ]  # fmt: skip
    done = subprocess.run(command, check=False, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    seen = []
    for rank in range(2):
        with (out / "data" / f"rank-{rank:05d}.tsv").open() as handle:
            seen.append([line.split("\t")[1].strip() for line in handle])
    per_rank = 2 * 2 * 2  # steps x grad_accum x batch_size
    assert [len(paths) for paths in seen] == [per_rank, per_rank]
    assert not set(seen[0]) & set(seen[1])  # disjoint shards
    assert len(set(seen[0]) | set(seen[1])) == 16  # together: the whole 16-clip toy dataset (one epoch)

    checkpoint = out / "checkpoints" / "step-00000002"
    assert json.loads((checkpoint / "state.json").read_text())["world_size"] == 2
    assert sorted(p.name for p in (checkpoint / "rng").iterdir()) == [
        "rank-00000.json", "rank-00000.safetensors", "rank-00001.json", "rank-00001.safetensors",
    ]  # fmt: skip
    assert (out / "model" / "model_index.json").is_file()
