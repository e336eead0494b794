"""Kill-and-resume gives the same weights as an uninterrupted run; two processes (gloo) shard the data."""

from __future__ import annotations

import csv
import json

import pytest
from safetensors.torch import load_file
from training_helpers import (  # noqa: F401
    CONFIGS,
    cli_train_args,
    rank_paths,
    restore_threads,
    run_killed,
    torchrun_train,
)

from hummingbird_t2v.cli import main as cli_main
from hummingbird_t2v.errors import ConfigError
from hummingbird_t2v.training.config import load_config
from hummingbird_t2v.training.loop import Trainer

# Tests set run.cpu_threads; give the next test its thread count back.
pytestmark = pytest.mark.usefixtures("restore_threads")
TINY_CONFIG = CONFIGS / "tiny_test.yaml"
# Dropout (temporal convs), posterior sampling, prompt dropout, noise and timesteps all draw
# random numbers, so matching weights need every RNG stream and the data position restored.
RUN = [
    "run.cpu_threads=1",
    "run.max_steps=6",
    "checkpoint.every=2",
    "checkpoint.keep=0",
]


def test_killed_and_resumed_run_matches_an_uninterrupted_one(tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    Trainer(load_config(TINY_CONFIG, [f"output_dir={whole}", *RUN])).train()

    run_killed(tmp_path, TINY_CONFIG, [f"output_dir={killed}", *RUN], kill_at_step=4)
    checkpoints = killed / "checkpoints"
    assert (checkpoints / "step-00000002").is_dir()
    assert (checkpoints / ".tmp-step-00000004").is_dir() and not (checkpoints / "step-00000004").exists()

    assert cli_main(cli_train_args("base", TINY_CONFIG, killed, RUN, resume=True)) == 0
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
    torchrun_train("base", TINY_CONFIG, out, ["run.max_steps=2", "checkpoint.every=0", "data.record_paths=true"])
    seen = rank_paths(out, 2)
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


def test_a_resume_with_a_new_peak_learning_rate_uses_it(tmp_path, caplog):
    run = tmp_path / "run"
    base = [f"output_dir={run}", "run.cpu_threads=1", "checkpoint.every=2", "checkpoint.keep=0",
            "optim.schedule=constant", "optim.warmup_steps=0", "optim.lr=1e-3"]
    Trainer(load_config(TINY_CONFIG, [*base, "run.max_steps=2"])).train()
    resumed = Trainer(load_config(TINY_CONFIG, [*base, "run.max_steps=3", "optim.lr=5e-4"]), resume=True)
    assert resumed.step == 2 and "optim.lr changed from 0.001 to 0.0005" in caplog.text
    assert [group["lr"] for group in resumed.optimizer.param_groups] == pytest.approx([5e-4])
    resumed.train()
    with (run / "logs" / "train.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert float(rows[-1]["lr"]) == pytest.approx(5e-4)


def test_lr_multipliers_give_a_module_its_own_rate_and_a_resume_keeps_them(tmp_path):
    run = tmp_path / "run"
    base = [f"output_dir={run}", "run.cpu_threads=1", "checkpoint.every=2", "checkpoint.keep=0",
            "optim.schedule=constant", "optim.warmup_steps=0", "optim.lr=1e-3"]
    boosted = [*base, "optim.lr_multipliers={time_embed: 10}"]
    trainer = Trainer(load_config(TINY_CONFIG, [*boosted, "run.max_steps=2"]))
    groups = {group["lr_factor"]: group for group in trainer.optimizer.param_groups}
    assert set(groups) == {1.0, 10.0}
    assert groups[10.0]["lr"] == pytest.approx(1e-2) and groups[1.0]["lr"] == pytest.approx(1e-3)
    assert {id(p) for p in groups[10.0]["params"]} == {id(p) for p in trainer.trainable.time_embed.parameters()}
    trainer.train()
    with (run / "logs" / "train.csv").open() as handle:
        assert float(list(csv.DictReader(handle))[-1]["lr"]) == pytest.approx(1e-3)  # the log shows optim.lr's rate

    # A new peak at the resume keeps each group's factor; other factors than the run's are refused.
    resumed = Trainer(load_config(TINY_CONFIG, [*boosted, "run.max_steps=3", "optim.lr=5e-4"]), resume=True)
    assert sorted(group["lr"] for group in resumed.optimizer.param_groups) == pytest.approx([5e-4, 5e-3])
    with pytest.raises(ConfigError, match="other optim.lr_multipliers or other trainable parameters"):
        Trainer(load_config(TINY_CONFIG, [*base, "run.max_steps=3"]), resume=True)


@pytest.mark.parametrize(
    ("override", "message"),
    [("optim.lr_multipliers={nowhere: 10}", "match no trainable parameter.*time_embed"),
     ("optim.lr_multipliers={time_embed: -1}", "positive numbers"),
     ("optim.lr_multipliers={time_embed: fast}", "positive numbers")],
)
def test_bad_lr_multipliers_are_named(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        Trainer(load_config(TINY_CONFIG, [f"output_dir={tmp_path / 'run'}", "run.cpu_threads=1", override]))


def test_a_checkpoint_from_before_lr_multipliers_resumes_with_factor_one(tmp_path):
    from hummingbird_t2v.training import checkpointing

    run = tmp_path / "run"
    base = [f"output_dir={run}", "run.cpu_threads=1", "checkpoint.every=2", "checkpoint.keep=0", "optim.lr=1e-3"]
    Trainer(load_config(TINY_CONFIG, [*base, "run.max_steps=2"])).train()
    optimizer_file = checkpointing.list_checkpoints(run / "checkpoints")[-1][1] / checkpointing.OPTIMIZER_FILE
    state = checkpointing.load_optimizer_state(optimizer_file)
    for group in state["param_groups"]:
        del group["lr_factor"]  # what runs before optim.lr_multipliers wrote
    checkpointing.save_optimizer_state(optimizer_file, state)
    resumed = Trainer(load_config(TINY_CONFIG, [*base, "run.max_steps=3"]), resume=True)
    assert [group["lr_factor"] for group in resumed.optimizer.param_groups] == [1.0]
    resumed.train()
