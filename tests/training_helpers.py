"""Helpers shared by the training tests: killed runs, torchrun launches, weight comparisons, tiny teachers,
stand-ins for reward terms."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hummingbird_t2v.checkpoints.folder import save_component
from hummingbird_t2v.models.unet import UNet3D
from hummingbird_t2v.models.unet_config import get_unet_preset

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

# Runs a config and SIGKILLs itself in the middle of writing the checkpoint of the step named in
# argv[1] (after the weights, before the optimizer state): the worst moment for a crash.
# argv: kill_step config [overrides...]
KILLED_RUN = textwrap.dedent(
    """
    import os, signal, sys
    from hummingbird_t2v.training import checkpointing
    from hummingbird_t2v.training.config import load_config
    from hummingbird_t2v.training.loop import Trainer

    write_optimizer = checkpointing.save_optimizer_state
    kill_at = checkpointing.checkpoint_name(int(sys.argv[1]))

    def killed_while_saving(path, state):
        if kill_at in str(path):
            os.kill(os.getpid(), signal.SIGKILL)
        write_optimizer(path, state)

    checkpointing.save_optimizer_state = killed_while_saving
    Trainer(load_config(sys.argv[2], sys.argv[3:])).train()
    """
)


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def cpu_env() -> dict[str, str]:
    """Environment of child processes: one OpenMP thread each, no warnings on stderr."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def run_killed(tmp_path: Path, config: Path, overrides: Sequence[str], kill_at_step: int) -> None:
    """Run `config` in a child process that SIGKILLs itself while writing the step-`kill_at_step` checkpoint."""
    script = tmp_path / "killed_run.py"
    script.write_text(KILLED_RUN)
    child = subprocess.run(
        [sys.executable, str(script), str(kill_at_step), str(config), *overrides],
        check=False,
        env=cpu_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]


def cli_train_args(command: str, config: Path, output: Path, overrides: Sequence[str] = (), resume: bool = False) -> list[str]:
    """`hummingbird train <command> ...` arguments with `--set` overrides."""
    args = ["train", command, "--config", str(config), "--output", str(output)]
    args += [arg for item in overrides for arg in ("--set", item)]
    return args + (["--resume"] if resume else [])


def torchrun_train(command: str, config: Path, output: Path, overrides: Sequence[str] = (), processes: int = 2) -> None:
    """`torchrun --standalone --nproc_per_node N -m hummingbird_t2v.cli train ...` on the CPU (gloo)."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    args = cli_train_args(command, config, output, [*overrides, "run.device=cpu"])
    done = subprocess.run(
        [*launcher, "-m", "hummingbird_t2v.cli", *args],
        check=False,
        env=cpu_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def rank_paths(output: Path, world_size: int) -> list[list[str]]:
    """The clip paths each rank trained on (a run with data.record_paths=true)."""
    seen = []
    for rank in range(world_size):
        with (output / "data" / f"rank-{rank:05d}.tsv").open() as handle:
            seen.append([line.split("\t")[1].strip() for line in handle])
    return seen


def max_difference(a: Path, b: Path) -> float:
    """Largest absolute difference between two safetensors files with the same keys."""
    first, second = load_file(a), load_file(b)
    assert first.keys() == second.keys()
    return max(((first[k].double() - second[k].double()).abs().max().item() for k in first), default=0.0)


def noisy_unet(preset: str = "tiny-vc2", seed: int = 0) -> UNet3D:
    """A random U-Net whose prediction is not identically zero.

    A fresh U-Net starts its output conv (and the last layer of every residual branch) at zero, so
    it predicts 0 and a student distilled from it gets no gradient; these weights get noise here.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet3D(get_unet_preset(preset))
        with torch.no_grad():
            for parameter in unet.parameters():
                if parameter.ndim > 1 and not parameter.any():
                    parameter.normal_(0.0, 0.05)
    return unet.eval()


def save_unet_folder(unet: UNet3D, folder: Path) -> Path:
    """A U-Net component folder (config.json + model.safetensors)."""
    save_component(folder, unet, unet.config.to_dict())
    return folder


class FirstChannelDecoder(torch.nn.Module):
    """Stands in for the frozen VAE of reward terms: decodes (b, c, T, h, w) latents to the first channel as RGB."""

    def __init__(self) -> None:
        super().__init__()
        self.gain = torch.nn.Parameter(torch.ones(()))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.gain * z[:, :1].expand(-1, 3, -1, -1, -1)


class MeanFrameReward(torch.nn.Module):
    """A differentiable video-text reward on two strided frames: their mean; records what it scored."""

    kind = "video_text"
    num_frames = 2

    def __init__(self) -> None:
        super().__init__()
        self.calls = []

    def score(self, frames: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        self.calls.append((frames, prompts))
        return frames.mean(dim=(1, 2, 3, 4))
