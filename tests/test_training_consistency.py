"""`hummingbird train consistency` (stage 2) end to end on tiny models: LoRA-only optimisation, a tiny
reward, periodic 4-step samples, the merged export, `train merge-lora`, kill-and-resume, two processes."""

from __future__ import annotations

import copy
import csv
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from training_helpers import (  # noqa: F401
    CONFIGS,
    cli_train_args,
    max_difference,
    noisy_unet,
    rank_paths,
    restore_threads,
    run_killed,
    save_unet_folder,
    torchrun_train,
)

from hummingbird_t2v.checkpoints.folder import read_json
from hummingbird_t2v.cli import main as cli_main
from hummingbird_t2v.errors import ConfigError
from hummingbird_t2v.pipelines.hummingbird import HummingbirdPipeline
from hummingbird_t2v.pruning.layouts import paper_layout
from hummingbird_t2v.pruning.transfer import prune_unet
from hummingbird_t2v.training import checkpointing as ckpt
from hummingbird_t2v.training.config import load_config, save_config
from hummingbird_t2v.training.loop import Trainer
from hummingbird_t2v.training.lora import has_lora, trainable_lora_parameters

# Tests set run.cpu_threads; give the next test its thread count back.
pytestmark = pytest.mark.usefixtures("restore_threads")

CONFIG = CONFIGS / "tiny_consistency.yaml"


def _overrides(teacher_dir, *extra):
    return [f"model.unet={{path: {teacher_dir}}}", "run.cpu_threads=1", *extra]


def _inputs(seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 4, 4, 8, 8, generator=generator, dtype=torch.float64)
    context = torch.randn(1, 77, 32, generator=generator, dtype=torch.float64)
    w = torch.randn(1, 256, generator=generator, dtype=torch.float64)
    return (x, torch.tensor([500]), context), {"fps": torch.tensor([8]), "timestep_cond": w}


def test_consistency_run_trains_lora_samples_in_4_steps_and_exports_the_merged_student(tmp_path, teacher_dir):
    out = tmp_path / "run"
    overrides = _overrides(teacher_dir, f"output_dir={out}", "run.max_steps=2", "checkpoint.every=1", "sample.every=1")
    trainer = Trainer(load_config(CONFIG, overrides))
    student = trainer.trainable
    assert has_lora(student) and student.config.time_cond_proj_dim == 256  # the projection was added
    lora = {id(p) for p in trainable_lora_parameters(student)}
    optimised = [p for group in trainer.optimizer.param_groups for p in group["params"]]
    assert {id(p) for p in optimised} == lora and len(optimised) == len(lora)  # only LoRA weights
    result = trainer.train()

    assert result.step == 2 and math.isfinite(result.loss)
    with (out / "logs" / "train.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["step"]) for r in rows] == [1, 2]
    assert all(math.isfinite(float(r["loss_cd"])) and math.isfinite(float(r["reward_hpsv2.1"])) for r in rows)
    assert float(rows[0]["loss_cd"]) > 0
    for step in (1, 2):  # periodic sample videos (step 1) and the final ones
        assert len(list((out / "samples" / ckpt.checkpoint_name(step)).glob("*.mp4"))) == 1

    # Checkpoints: the LoRA student only (its frozen base weights and the adapter), trained adapters.
    saved = load_file(out / "checkpoints" / ckpt.checkpoint_name(2) / "model.safetensors")
    assert saved.keys() == student.state_dict().keys()
    assert any(".lora_B." in k and saved[k].any() for k in saved)

    pipe = HummingbirdPipeline.from_pretrained(result.model_dir)
    assert pipe.config.sampler == "consistency" and pipe.config.defaults.num_inference_steps == 4
    assert not has_lora(pipe.unet) and pipe.unet.config.time_cond_proj_dim == 256
    frames = pipe("a red circle moving left", generator=torch.Generator().manual_seed(0), progress=False).frames
    assert frames.shape == (1, 4, 64, 64, 3) and np.isfinite(frames).all()

    # The export is the objective's merge of the LoRA student, which computes what the LoRA student
    # computes. The merge is compared in float64: in float32 the rounding of W + BA alone is amplified
    # to ~1e-5 by the random tiny networks (docs/stage2.md).
    exported_weights, merged_here = pipe.unet.state_dict(), trainer.objective_module.exportable_unet(student).state_dict()
    assert exported_weights.keys() == merged_here.keys()
    assert all(torch.equal(exported_weights[k], merged_here[k]) for k in merged_here)
    lora_model = copy.deepcopy(student).double().eval()
    merged = trainer.objective_module.exportable_unet(lora_model).eval()
    assert not has_lora(merged) and has_lora(lora_model)  # merged into a copy
    args, kwargs = _inputs()
    with torch.no_grad():
        expected, actual = lora_model(*args, **kwargs), merged(*args, **kwargs)
    assert (actual - expected).abs().max().item() <= 1e-5

    # `train merge-lora` writes the same merged U-Net from the run (and from a checkpoint folder).
    exported = out / "model" / "unet"
    assert cli_main(["train", "merge-lora", "--run", str(out), "-o", str(tmp_path / "merged")]) == 0
    assert read_json(tmp_path / "merged" / "config.json") == read_json(exported / "config.json")
    assert max_difference(tmp_path / "merged" / "model.safetensors", exported / "model.safetensors") <= 1e-6
    checkpoint = out / "checkpoints" / ckpt.checkpoint_name(1)
    assert cli_main(["train", "merge-lora", "--checkpoint", str(checkpoint), "-o", str(tmp_path / "merged1")]) == 0
    assert load_file(tmp_path / "merged1" / "model.safetensors").keys() == load_file(exported / "model.safetensors").keys()


def test_killed_and_resumed_lora_run_with_an_ema_target_matches_an_uninterrupted_one(tmp_path, teacher_dir):
    run = ["run.max_steps=4", "checkpoint.every=2", "checkpoint.keep=0", "objective.target=ema"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    Trainer(load_config(CONFIG, _overrides(teacher_dir, f"output_dir={whole}", *run))).train()
    run_killed(tmp_path, CONFIG, _overrides(teacher_dir, f"output_dir={killed}", *run), kill_at_step=4)
    assert (killed / "checkpoints" / ".tmp-step-00000004").is_dir()

    assert cli_main(cli_train_args("consistency", CONFIG, killed, _overrides(teacher_dir, *run), resume=True)) == 0
    for name in ("model.safetensors", "objective.safetensors"):  # the LoRA student and the EMA target
        final = ckpt.checkpoint_name(4)
        assert max_difference(whole / "checkpoints" / final / name, killed / "checkpoints" / final / name) <= 1e-6, name
    target = load_file(whole / "checkpoints" / ckpt.checkpoint_name(4) / "objective.safetensors")
    assert target and all(".lora_" in key for key in target)  # the EMA target holds the trainable weights only
    assert max_difference(whole / "model" / "unet" / "model.safetensors", killed / "model" / "unet" / "model.safetensors") <= 1e-6


def test_two_processes_shard_the_data(tmp_path, teacher_dir):
    out = tmp_path / "ddp"
    torchrun_train("consistency", CONFIG, out, _overrides(teacher_dir, "run.max_steps=2", "checkpoint.every=0", "data.record_paths=true"))
    seen = rank_paths(out, 2)
    assert [len(paths) for paths in seen] == [2, 2] and not set(seen[0]) & set(seen[1])
    checkpoint = out / "checkpoints" / ckpt.checkpoint_name(2)
    assert ckpt.read_state(checkpoint).world_size == 2
    # Per-rank seeds: the ranks' generators (timesteps, noise, w, reward frames) are in different states.
    streams = [load_file(checkpoint / "rng" / f"rank-0000{rank}.safetensors") for rank in (0, 1)]
    assert streams[0].keys() == streams[1].keys()
    assert any(not torch.equal(streams[0][k], streams[1][k]) for k in streams[0])
    assert HummingbirdPipeline.from_pretrained(out / "model").config.sampler == "consistency"


def test_a_stage1_student_from_a_folder_with_full_fine_tuning(tmp_path, teacher_dir, capsys):
    teacher = noisy_unet("tiny-vc2", seed=0)
    layout = paper_layout("hb-0.9b").replace(time_cond_proj_dim=None)
    stage1 = save_unet_folder(prune_unet(teacher.state_dict(), teacher.config, layout).unet, tmp_path / "stage1")
    overrides = _overrides(
        teacher_dir, f"output_dir={tmp_path / 'run'}", f"objective.student={stage1}", "objective.layout=null",
        "objective.trainable=full", "objective.rewards=[]",
    )  # fmt: skip
    trainer = Trainer(load_config(CONFIG, overrides))
    student = trainer.trainable
    assert not has_lora(student) and student.config.time_cond_proj_dim == 256
    weights, loaded = load_file(stage1 / "model.safetensors"), student.state_dict()
    assert all(torch.equal(loaded[k], weights[k]) for k in weights)
    assert set(loaded) - set(weights) == {"time_cond_proj.weight"}
    optimised = sum(p.numel() for group in trainer.optimizer.param_groups for p in group["params"])
    assert optimised == sum(p.numel() for p in student.parameters())  # every weight trains
    assert trainer.objective_module.exportable_unet(student) is student

    # merge-lora has nothing to merge in a fully fine-tuned run, and says so.
    save_config(trainer.config, tmp_path / "run" / "config.yaml")
    trainer.save_checkpoint()
    assert cli_main(["train", "merge-lora", "--run", str(tmp_path / "run"), "-o", str(tmp_path / "merged")]) == 2
    assert "no LoRA to merge" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["objective.student=somewhere"], "exactly one of objective.student"),
        (["objective.rewards=[{weight: 1.0}]"], "needs a name"),
        (["objective.rewards=[{name: pickscore}]"], "unknown reward model"),
        (["objective.trainable=half"], "objective.trainable must be one of"),
    ],
)
def test_config_errors(tmp_path, teacher_dir, overrides, message):
    with pytest.raises(ConfigError, match=message):
        Trainer(load_config(CONFIG, _overrides(teacher_dir, f"output_dir={tmp_path}", *overrides)))


def test_8bit_adamw_without_bitsandbytes_says_how_to_install_it(tmp_path, teacher_dir):
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("bitsandbytes is installed")
    with pytest.raises(ConfigError, match="pip install bitsandbytes"):
        Trainer(load_config(CONFIG, _overrides(teacher_dir, f"output_dir={tmp_path}", "optim.name=adamw8bit")))
