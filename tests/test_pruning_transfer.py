"""Weight transfer with real values: copied tensors equal their sources, the student is loaded strictly,
fresh layers are initialised reproducibly and the student never shares memory with a live teacher."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from hummingbird_t2v.errors import CheckpointError
from hummingbird_t2v.models.unet import UNet3D
from hummingbird_t2v.models.unet_config import get_unet_preset
from hummingbird_t2v.pruning.layouts import PruneLayout, paper_layout
from hummingbird_t2v.pruning.transfer import prune_unet

# The full-size structure (widths 1x2x4x4, so the level-1 and level-2 entry blocks have 1x1 skip convs,
# unlike the tiny goldens) at 1/10 of the width: every key of the full-size map exists here.
SMALL_VC2 = get_unet_preset("vc2").replace(model_channels=32, num_head_channels=8, context_dim=32)


@pytest.fixture(scope="module")
def small_vc2_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return UNet3D(SMALL_VC2).state_dict()


@pytest.mark.parametrize("layout", ["hb-0.9b", "hb-0.7b"])
def test_copied_tensors_equal_their_sources_in_the_full_size_structure(layout, small_vc2_state):
    teacher_state = small_vc2_state
    student = prune_unet(teacher_state, SMALL_VC2, paper_layout(layout))
    weights = student.unet.state_dict()
    assert student.unet.config == get_unet_preset(layout).replace(model_channels=32, num_head_channels=8, context_dim=32)
    assert "input_blocks.3.0.skip_connection.weight" in weights
    for key, source in student.sources.items():
        if source is not None:
            assert torch.equal(weights[key], teacher_state[source]), key
            assert weights[key].data_ptr() != teacher_state[source].data_ptr()  # a copy: training cannot touch the teacher
    assert student.fresh_keys == ["time_cond_proj.weight"]


def test_golden_tiny_weights_transfer(golden_dir):
    teacher_state = {k: v.float() for k, v in load_file(golden_dir / "tiny_vc2_unet.safetensors").items()}
    student_golden = load_file(golden_dir / "tiny_hb09_unet.safetensors")
    layout = paper_layout("hb-0.9b")
    student = prune_unet(teacher_state, get_unet_preset("tiny-vc2"), layout)
    weights = student.unet.state_dict()
    # The golden student was initialised differently, so only the copied structure is comparable;
    # its values must be the teacher's.
    assert set(weights) == set(student_golden)
    for key, source in student.sources.items():
        if source is not None:
            assert torch.equal(weights[key], teacher_state[source])


def test_fresh_guidance_projection_is_seeded_and_initialised_like_a_linear_layer():
    teacher_state = UNet3D(get_unet_preset("tiny-vc2")).state_dict()
    layout = paper_layout("hb-0.7b")
    first = prune_unet(teacher_state, get_unet_preset("tiny-vc2"), layout, seed=3).unet.time_cond_proj.weight
    again = prune_unet(teacher_state, get_unet_preset("tiny-vc2"), layout, seed=3).unet.time_cond_proj.weight
    other = prune_unet(teacher_state, get_unet_preset("tiny-vc2"), layout, seed=4).unet.time_cond_proj.weight
    assert torch.equal(first, again) and not torch.equal(first, other)
    bound = 1 / 256**0.5  # nn.Linear's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert first.abs().max() <= bound and first.abs().max() > 0.9 * bound
    assert first.requires_grad


def test_student_dtype_follows_the_teacher_and_without_projection_nothing_is_fresh():
    teacher_state = {k: v.to(torch.bfloat16) for k, v in UNet3D(get_unet_preset("tiny-vc2")).state_dict().items()}
    student = prune_unet(teacher_state, get_unet_preset("tiny-vc2"), paper_layout("hb-0.9b").replace(time_cond_proj_dim=None))
    assert student.fresh_keys == []
    assert {p.dtype for p in student.unet.parameters()} == {torch.bfloat16}
    assert not student.unet.training


def test_a_teacher_frame_position_embedding_is_copied_by_name():
    config = get_unet_preset("tiny-vc2").replace(frame_position_embedding=True)
    torch.manual_seed(0)
    teacher_state = UNet3D(config).state_dict()
    student = prune_unet(teacher_state, config, paper_layout("hb-0.7b").replace(time_cond_proj_dim=None))
    assert student.unet.config.frame_position_embedding and student.fresh_keys == []
    for key in ("frame_embedding.0.weight", "frame_embedding.2.bias"):
        assert student.sources[key] == key
        assert torch.equal(student.unet.state_dict()[key], teacher_state[key])


def test_a_teacher_s_spatiotemporal_convs_follow_their_resblocks_through_the_block_map():
    config = get_unet_preset("tiny-vc2").replace(spatiotemporal_conv=True)
    torch.manual_seed(0)
    teacher_state = UNet3D(config).state_dict()
    student = prune_unet(teacher_state, config, paper_layout("hb-0.9b").replace(time_cond_proj_dim=None))
    assert student.unet.config.spatiotemporal_conv and student.fresh_keys == []
    weights = student.unet.state_dict()
    copied = [key for key in weights if ".spatiotemporal_conv." in key]
    assert len(copied) == 4 * sum(".spatiotemporal_conv.conv.weight" in key for key in weights) > 0
    for key in copied:
        assert torch.equal(weights[key], teacher_state[student.sources[key]]), key
    # Input block 3 of the student is the teacher's block 4 (the paper's map).
    assert student.sources["input_blocks.3.0.spatiotemporal_conv.conv.weight"] == "input_blocks.4.0.spatiotemporal_conv.conv.weight"


def test_a_teacher_state_dict_that_does_not_fit_its_config_is_refused():
    teacher_state = UNet3D(get_unet_preset("tiny-vc2")).state_dict()
    del teacher_state["out.2.bias"]
    with pytest.raises(CheckpointError, match="1 missing key"):
        prune_unet(teacher_state, get_unet_preset("tiny-vc2"), paper_layout("hb-0.9b"))


def test_a_teacher_block_can_fill_two_slots():
    config = get_unet_preset("tiny-vc2")
    teacher_state = UNet3D(config).state_dict()
    layout = PruneLayout(encoder=((1, 1), (0,), (0,), (0,)), decoder=((0, 1, 1), (0, 2), (1, 2), (1, 2)))
    student = prune_unet(teacher_state, config, layout)
    weights = student.unet.state_dict()
    assert torch.equal(weights["input_blocks.1.1.proj_in.weight"], weights["input_blocks.2.1.proj_in.weight"])
    assert student.sources["input_blocks.2.1.proj_in.weight"] == "input_blocks.2.1.proj_in.weight"
    assert student.sources["input_blocks.1.1.proj_in.weight"] == "input_blocks.2.1.proj_in.weight"
