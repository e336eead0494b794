"""`hummingbird train distill` (stage 1) end to end on tiny models: export, checkpoints without teacher
tensors, kill-and-resume, two processes, and where the teacher and the student come from."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
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

from hummingbird_t2v.checkpoints.folder import save_component
from hummingbird_t2v.checkpoints.unet_keys import expected_unet_shapes
from hummingbird_t2v.cli import main as cli_main
from hummingbird_t2v.errors import ConfigError
from hummingbird_t2v.models.caption_prior import CaptionMeanPrior, CaptionPriorConfig
from hummingbird_t2v.pipelines.hummingbird import HummingbirdPipeline
from hummingbird_t2v.pruning.layouts import paper_layout
from hummingbird_t2v.pruning.transfer import prune_unet
from hummingbird_t2v.training import checkpointing as ckpt
from hummingbird_t2v.training.components import build_from_spec
from hummingbird_t2v.training.config import ComponentSpec, load_config
from hummingbird_t2v.training.loop import Trainer
from hummingbird_t2v.training.objectives.distill import Stage1DistillObjective

# Tests set run.cpu_threads; give the next test its thread count back.
pytestmark = pytest.mark.usefixtures("restore_threads")

CONFIG = CONFIGS / "tiny_distill.yaml"


def _overrides(teacher_dir, output, *extra):
    return [f"output_dir={output}", f"model.unet={{path: {teacher_dir}}}", "run.cpu_threads=1", *extra]


def _student_shapes(teacher_dir) -> dict[str, tuple[int, ...]]:
    teacher = noisy_unet("tiny-vc2", seed=0).config
    return dict(expected_unet_shapes(paper_layout("hb-0.9b", teacher).replace(time_cond_proj_dim=None).student_config(teacher)))


def _file_shapes(path) -> dict[str, tuple[int, ...]]:
    with safe_open(str(path), framework="pt") as handle:
        return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}  # noqa: SIM118 (safe_open is not iterable)


def test_distill_run_exports_a_ddim_student_and_keeps_the_teacher_out(tmp_path, teacher_dir):
    out = tmp_path / "run"
    trainer = Trainer(load_config(CONFIG, _overrides(teacher_dir, out, "run.max_steps=2", "checkpoint.every=1", "checkpoint.keep=0")))
    objective = trainer.objective_module
    assert isinstance(objective, Stage1DistillObjective)
    teacher_before = {k: v.clone() for k, v in objective.teacher.state_dict().items()}
    student_before = {k: v.clone() for k, v in trainer.trainable.state_dict().items()}
    assert all(p.requires_grad for p in trainer.trainable.parameters())  # the whole student trains
    result = trainer.train()

    assert result.step == 2 and math.isfinite(result.loss) and result.loss > 0
    teacher = objective.teacher.state_dict()
    assert all(torch.equal(teacher[k], teacher_before[k]) for k in teacher)  # frozen
    trained = trainer.trainable.state_dict()
    assert any(not torch.equal(trained[k], student_before[k]) for k in trained)  # it learned

    # No teacher tensors anywhere: every weights file holds exactly the student's names and shapes.
    student = _student_shapes(teacher_dir)
    teacher_params = sum(p.numel() for p in objective.teacher.parameters())
    student_params = sum(math.prod(shape) for shape in student.values())
    assert student_params < 0.7 * teacher_params
    for step in (1, 2):
        folder = out / "checkpoints" / ckpt.checkpoint_name(step)
        assert sorted(p.name for p in folder.glob("*.safetensors")) == ["model.safetensors"]  # no EMA, no objective state
        assert _file_shapes(folder / "model.safetensors") == student
        optimizer = ckpt.load_optimizer_state(folder / "optimizer.pt")
        moments = sum(state["exp_avg"].numel() for state in optimizer["state"].values())
        assert moments == student_params
    assert _file_shapes(out / "model" / "unet" / "model.safetensors") == student

    pipe = HummingbirdPipeline.from_pretrained(result.model_dir)
    assert pipe.config.sampler == "ddim" and pipe.config.defaults.guidance_scale == 1.0
    assert pipe.config.use_scale is True  # tiny_distill trains with VC2's latent rescale
    exported = load_file(out / "model" / "unet" / "model.safetensors")
    assert all(torch.equal(exported[k], trained[k]) for k in exported)
    batch_sizes = []
    pipe.unet.register_forward_pre_hook(lambda _m, args: batch_sizes.append(args[0].shape[0]))
    frames = pipe("a red circle moving left", generator=torch.Generator().manual_seed(0), progress=False).frames
    assert frames.shape == (1, 4, 64, 64, 3) and np.isfinite(frames).all()
    assert batch_sizes == [1, 1]  # 2 DDIM steps, one pass each: no classifier-free guidance
    assert len(list((out / "samples" / "step-00000002").glob("*.mp4"))) == 1


def test_teacher_from_a_checkpoint_file_and_student_from_a_pruned_folder(tmp_path, teacher_dir):
    teacher_file = tmp_path / "teacher.safetensors"
    save_file(load_file(teacher_dir / "model.safetensors"), str(teacher_file))
    # What `hummingbird prune --layout hb-0.9b --no-guidance-projection` writes for a bare U-Net teacher.
    teacher_unet = noisy_unet("tiny-vc2", seed=0)
    layout = paper_layout("hb-0.9b").replace(time_cond_proj_dim=None)
    pruned = save_unet_folder(prune_unet(teacher_unet.state_dict(), teacher_unet.config, layout).unet, tmp_path / "pruned")

    overrides = _overrides(teacher_file, tmp_path / "run", f"objective.student={pruned}", "objective.layout=null")
    trainer = Trainer(load_config(CONFIG, overrides))
    teacher, loaded_teacher = load_file(teacher_dir / "model.safetensors"), trainer.objective_module.teacher.state_dict()
    assert all(torch.equal(loaded_teacher[k], teacher[k]) for k in teacher)
    student, loaded_student = load_file(pruned / "model.safetensors"), trainer.trainable.state_dict()
    assert loaded_student.keys() == student.keys()
    assert all(torch.equal(loaded_student[k], student[k]) for k in student)


def _prior_folder(folder, context_dim: int = 32):
    prior = CaptionMeanPrior(CaptionPriorConfig(context_dim=context_dim, hidden_dim=16, grid_frames=2, grid_height=2, grid_width=2))
    torch.nn.init.normal_(prior.mlp[-1].bias)  # a fresh prior predicts zero; this one does not
    save_component(folder, prior, prior.config.to_dict())
    return folder, prior


def test_the_teachers_caption_prior_goes_into_the_student_folder(tmp_path, teacher_dir):
    prior_dir, prior = _prior_folder(tmp_path / "prior")
    out = tmp_path / "run"
    trainer = Trainer(load_config(CONFIG, _overrides(teacher_dir, out, "run.max_steps=1", f"model.prior.path={prior_dir}")))
    assert not any(p.requires_grad for p in trainer.prior.parameters())  # carried, never trained
    result = trainer.train()
    loaded = HummingbirdPipeline.from_pretrained(result.model_dir).prior
    assert isinstance(loaded, CaptionMeanPrior)
    expected = prior.state_dict()
    assert all(torch.equal(value, expected[key]) for key, value in loaded.state_dict().items())
    # A student folder made from that one (a model folder) passes the prior on again.
    again = Trainer(load_config(CONFIG, _overrides(teacher_dir, tmp_path / "run2", f"model.prior.path={result.model_dir}")))
    assert isinstance(again.prior, CaptionMeanPrior)


def test_caption_prior_errors(tmp_path, teacher_dir):
    def build(*extra):
        return Trainer(load_config(CONFIG, _overrides(teacher_dir, tmp_path / "run", *extra)))

    with pytest.raises(ConfigError, match="model.prior needs a path"):
        build("model.prior.preset=tiny")
    spec = ComponentSpec(preset="tiny")
    plain = HummingbirdPipeline(noisy_unet(), build_from_spec(spec, "vae"), build_from_spec(spec, "text_encoder"))
    folder = plain.save_pretrained(tmp_path / "no-prior")
    with pytest.raises(ConfigError, match="model folder without prior/.*hummingbird train prior"):
        build(f"model.prior.path={folder}")
    with pytest.raises(ConfigError, match="does not exist"):
        build(f"model.prior.path={tmp_path / 'missing'}")
    narrow, _ = _prior_folder(tmp_path / "narrow", context_dim=16)
    with pytest.raises(ConfigError, match="fit a prior for this text encoder"):
        build(f"model.prior.path={narrow}")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["objective.student=somewhere"], "exactly one of objective.student"),
        (["objective.layout=null"], "exactly one of objective.student"),
        (["objective.layout=hb-0.5b"], "neither hb-0.9b nor hb-0.7b"),
    ],
)
def test_student_source_errors(tmp_path, teacher_dir, overrides, message):
    with pytest.raises(ConfigError, match=message):
        Trainer(load_config(CONFIG, _overrides(teacher_dir, tmp_path, *overrides)))


def test_a_student_with_a_guidance_projection_is_refused(tmp_path, teacher_dir):
    student = save_unet_folder(noisy_unet("tiny-hb-0.9b"), tmp_path / "student")
    overrides = _overrides(teacher_dir, tmp_path / "run", f"objective.student={student}", "objective.layout=null")
    with pytest.raises(ConfigError, match="--no-guidance-projection"):
        Trainer(load_config(CONFIG, overrides))


def test_killed_and_resumed_distillation_matches_an_uninterrupted_one(tmp_path, teacher_dir):
    run = ["run.max_steps=4", "checkpoint.every=2", "checkpoint.keep=0"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    Trainer(load_config(CONFIG, _overrides(teacher_dir, whole, *run))).train()
    run_killed(tmp_path, CONFIG, _overrides(teacher_dir, killed, *run), kill_at_step=4)
    assert (killed / "checkpoints" / ".tmp-step-00000004").is_dir()

    resumed = cli_train_args("distill", CONFIG, killed, _overrides(teacher_dir, killed, *run)[1:], resume=True)
    assert cli_main(resumed) == 0
    final = ckpt.checkpoint_name(4)
    # On one CPU with the same thread count the match is bitwise; 1e-6 leaves room for other BLAS builds.
    assert max_difference(whole / "checkpoints" / final / "model.safetensors", killed / "checkpoints" / final / "model.safetensors") <= 1e-6
    assert max_difference(whole / "model" / "unet" / "model.safetensors", killed / "model" / "unet" / "model.safetensors") <= 1e-6


def test_two_processes_shard_the_data_and_checkpoint_only_the_student(tmp_path, teacher_dir):
    out = tmp_path / "ddp"
    overrides = _overrides(teacher_dir, out, "run.max_steps=2", "checkpoint.every=1", "data.record_paths=true")[1:]
    torchrun_train("distill", CONFIG, out, overrides)

    seen = rank_paths(out, 2)
    assert [len(paths) for paths in seen] == [2, 2]  # 2 steps x batch 1 per rank
    assert not set(seen[0]) & set(seen[1])
    student = _student_shapes(teacher_dir)
    for step in (1, 2):
        folder = out / "checkpoints" / ckpt.checkpoint_name(step)
        assert ckpt.read_state(folder).world_size == 2
        assert _file_shapes(folder / "model.safetensors") == student
    assert _file_shapes(out / "model" / "unet" / "model.safetensors") == student
