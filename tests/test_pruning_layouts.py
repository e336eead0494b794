"""Pruning layouts and the teacher -> student key map: the paper map, the official golden map, full-size
parameter counts, the shape rule, YAML layouts and the per-level block counts of the U-Net."""

from __future__ import annotations

import json

import pytest
import torch

from hummingbird_t2v.checkpoints.unet_keys import expected_unet_shapes
from hummingbird_t2v.errors import ConfigError
from hummingbird_t2v.models.unet import UNet3D, count_parameters
from hummingbird_t2v.models.unet_config import UNetConfig, get_unet_preset
from hummingbird_t2v.pruning.layouts import (
    LayoutError,
    PruneLayout,
    block_index,
    check_layout,
    full_layout,
    layout_yaml,
    load_layout,
    paper_layout,
)
from hummingbird_t2v.pruning.transfer import prune_unet, student_key_sources

PAPER_INPUT_MAP = [(0, 0), (1, 1), (3, 2), (4, 3), (6, 4), (7, 5), (9, 6), (10, 7)]
PAPER_OUTPUT_MAP = [(1, 0), (2, 1), (4, 2), (5, 3), (6, 4), (8, 5), (9, 6), (11, 7)]


def test_paper_layout_is_the_spec_map():
    teacher = get_unet_preset("vc2")
    inputs, outputs = paper_layout("hb-0.9b", teacher).global_map(teacher)
    assert inputs == PAPER_INPUT_MAP and outputs == PAPER_OUTPUT_MAP
    described = paper_layout("hb-0.7b").describe(teacher)
    assert "3→2" in described and "11→7" in described and "middle block dropped" in described


@pytest.mark.parametrize("layout, golden_key", [("hb-0.9b", "tiny_hb09"), ("hb-0.7b", "tiny_hb07")])
def test_key_map_equals_the_official_loaders_map(layout, golden_key, golden_dir):
    golden = json.loads((golden_dir / "block_map_tiny.json").read_text())[golden_key]
    sources = student_key_sources(get_unet_preset("tiny-vc2"), paper_layout(layout))
    assert list(sources.items()) == list(golden.items())  # same keys, same module order, same sources
    assert [key for key, source in sources.items() if source is None] == ["time_cond_proj.weight"]


@pytest.mark.parametrize(
    "layout, params, manifest", [("hb-0.9b", 945_209_220, "keys_hb09_unet.tsv"), ("hb-0.7b", 772_091_780, "keys_hb07_unet.tsv")]
)
def test_full_size_pruning_counts_and_copies_every_tensor_from_its_source(layout, params, manifest, reference_dir):
    teacher_config = get_unet_preset("vc2")
    shapes = expected_unet_shapes(teacher_config)
    # Each teacher tensor is a distinct constant broadcast to its shape: no memory, yet every student
    # tensor reveals which teacher tensor it came from (the trick the golden map was made with).
    teacher = {name: torch.tensor(float(i)).expand(shape) for i, (name, shape) in enumerate(shapes.items())}
    marker = {name: float(i) for i, name in enumerate(shapes)}
    student = prune_unet(teacher, teacher_config, paper_layout(layout), share_storage=True)

    assert count_parameters(student.unet) == params
    assert student.unet.config == get_unet_preset(layout)
    weights = student.unet.state_dict()
    copied = {key: source for key, source in student.sources.items() if source is not None}
    assert len(copied) == len(weights) - 1
    for key, source in copied.items():
        assert weights[key].shape == teacher[source].shape
        assert weights[key].reshape(-1)[0].item() == marker[source], key
    # The two keys that exist only at full size come from the next teacher block (README, block map).
    assert student.sources["input_blocks.3.0.skip_connection.weight"] == "input_blocks.4.0.skip_connection.weight"
    # The student's names and shapes are the official manifest's.
    entries = [line.split("\t") for line in (reference_dir / manifest).read_text().splitlines()]
    assert [(name, tuple(int(n) for n in shape.split(","))) for name, shape, _ in entries] == [
        (name, tuple(tensor.shape)) for name, tensor in weights.items()
    ]


def test_sorted_keys_do_not_change_the_result():
    # The official in-place renaming fails for alphabetically sorted keys; a fresh dict does not care.
    config = get_unet_preset("tiny-vc2")
    shapes = expected_unet_shapes(config)
    teacher = {name: torch.tensor(float(i)).expand(shape) for i, (name, shape) in enumerate(shapes.items())}
    in_order = prune_unet(teacher, config, paper_layout("hb-0.9b"), share_storage=True).unet.state_dict()
    shuffled = prune_unet(dict(sorted(teacher.items())), config, paper_layout("hb-0.9b"), share_storage=True).unet.state_dict()
    assert all(torch.equal(in_order[k], shuffled[k]) for k in in_order)


def test_full_layout_reproduces_the_teacher_structure():
    teacher = get_unet_preset("tiny-vc2")
    layout = full_layout(teacher)
    sources = student_key_sources(teacher, layout)
    assert layout.student_config(teacher) == teacher
    assert all(key == source for key, source in sources.items())


def test_shape_rule_violation_names_the_slot_and_the_blocks_that_fit():
    teacher = get_unet_preset("vc2")
    bad = paper_layout("hb-0.9b").replace(decoder=((0, 2), (0, 1), (1, 2), (1, 2)))
    with pytest.raises(LayoutError) as info:
        check_layout(teacher, bad)
    message = str(info.value)
    assert "student output block 5 (level 1, decoder slot 1)" in message
    assert "640 + 320 = 960" in message and "teacher output block 7" in message and "fit: [8]" in message
    assert "\n" not in message

    widening = paper_layout("hb-0.9b").replace(encoder=((0,), (1,), (0,), (0,)))
    with pytest.raises(LayoutError, match=r"input block 3 \(level 1, encoder slot 0\) receives 320 channels.*fit: \[4\]"):
        check_layout(teacher, widening)


def test_other_shape_compatible_choices_are_accepted():
    # At level 0 the features from below and the skip are both 320 wide, so teacher output block 10 can
    # fill the last slot as well as 11; at levels 2 and 3 any two of the three blocks fit.
    teacher = get_unet_preset("vc2")
    layout = paper_layout("hb-0.9b").replace(decoder=((0, 1), (0, 2), (0, 2), (0, 1)), encoder=((1,), (0,), (0,), (1,)))
    check_layout(teacher, layout)
    sources = student_key_sources(teacher, layout)
    assert sources["output_blocks.7.0.in_layers.2.weight"] == "output_blocks.10.0.in_layers.2.weight"
    assert sources["input_blocks.7.0.in_layers.2.weight"] == "input_blocks.11.0.in_layers.2.weight"
    # The student's last level-3 slot carries the upsampler; it comes from the teacher's level-3 upsampler
    # (in output block 2) even though the slot's ResBlock comes from output block 1.
    assert sources["output_blocks.1.1.conv.weight"] == "output_blocks.2.1.conv.weight"
    assert sources["output_blocks.1.0.in_layers.2.weight"] == "output_blocks.1.0.in_layers.2.weight"


def test_layouts_with_different_block_counts_per_level():
    teacher = get_unet_preset("tiny-vc2")
    layout = PruneLayout(encoder=((0, 1), (1,), (0,), (1,)), decoder=((0, 1, 2), (0, 2), (1, 2), (0, 2)), middle_block=False)
    config = layout.student_config(teacher)
    assert config.num_res_blocks == (2, 1, 1, 1) and config.blocks_per_level == (2, 1, 1, 1)
    sources = student_key_sources(teacher, layout)
    assert set(sources.values()) <= set(expected_unet_shapes(teacher))
    model = UNet3D(config)
    assert list(sources) == list(model.state_dict())
    index = block_index(config)
    assert index.encoder == ((1, 2), (4,), (6,), (8,)) and index.decoder == ((6, 7, 8), (4, 5), (2, 3), (0, 1))


@pytest.mark.parametrize(
    "change, fragment",
    [
        ({"encoder": ((0,), (0,), (0,), ())}, "keeps no encoder block"),
        ({"decoder": ((0, 2), (0, 2), (1, 2), (2,))}, "needs 2 decoder blocks"),
        ({"encoder": ((0,), (0,), (0,))}, "3 encoder levels but 4 decoder"),
        ({"encoder": ((0,), (0,), (0,), (-1,))}, "block positions"),
        ({"time_cond_proj_dim": 0}, "time_cond_proj_dim"),
    ],
)
def test_malformed_layouts_raise_layout_errors(change, fragment):
    with pytest.raises(LayoutError, match=fragment):
        paper_layout("hb-0.9b").replace(**change)


def test_layout_must_fit_the_teacher():
    teacher = get_unet_preset("tiny-vc2")
    with pytest.raises(LayoutError, match="position 2 does not exist"):
        check_layout(teacher, paper_layout("hb-0.9b").replace(encoder=((2,), (0,), (0,), (0,))))
    with pytest.raises(LayoutError, match="teacher has none"):
        check_layout(teacher.replace(use_middle_block=False), paper_layout("hb-0.9b"))
    with pytest.raises(LayoutError, match="2 blocks"):
        paper_layout("hb-0.9b", teacher.replace(num_res_blocks=3))
    assert issubclass(LayoutError, ConfigError)


def test_yaml_round_trip_and_errors(tmp_path):
    teacher = get_unet_preset("tiny-vc2")
    layout = PruneLayout(encoder=((0, 1), (1,), (0,), (1,)), decoder=((0, 1, 2), (0, 2), (1, 2), (0, 2)), middle_block=False, name="mine")
    path = tmp_path / "layout.yaml"
    path.write_text(layout_yaml(layout, teacher, analysis={"note": "ignored on load"}))
    assert load_layout(path, teacher) == layout
    assert load_layout("hb-0.7b", teacher) == paper_layout("hb-0.7b")

    path.write_text("levels: [{encoder: [0], decoder: [0, 2]}]\nmiddle: true\n")
    with pytest.raises(LayoutError, match=r"unknown key\(s\) \['middle'\]"):
        load_layout(path)
    path.write_text("levels: [{encoder: [0]}]\n")
    with pytest.raises(LayoutError, match="exactly 'encoder' and 'decoder'"):
        load_layout(path)
    path.write_text("levels: [\n")
    with pytest.raises(LayoutError, match="not valid YAML"):
        load_layout(path)
    with pytest.raises(LayoutError, match="neither"):
        load_layout(tmp_path / "missing.yaml")


def test_per_level_block_counts_in_the_unet_config():
    base = get_unet_preset("tiny-vc2")
    assert base.replace(num_res_blocks=[1, 1, 1, 1]) == base.replace(num_res_blocks=1)  # uniform tuples collapse
    mixed = base.replace(num_res_blocks=[2, 1, 3, 1])
    assert mixed.num_res_blocks == (2, 1, 3, 1)
    assert UNetConfig.from_dict(json.loads(json.dumps(mixed.to_dict()))) == mixed
    with torch.device("meta"):
        model = UNet3D(mixed)
    assert len(model.input_blocks) == 1 + 7 + 3 and len(model.output_blocks) == 7 + 4
    with pytest.raises(ConfigError, match="lists 2 levels"):
        base.replace(num_res_blocks=(1, 2))
    with pytest.raises(ConfigError, match="positive integers"):
        base.replace(num_res_blocks=(1, 0, 1, 1))


def test_a_unet_with_different_block_counts_per_level_runs():
    config = UNetConfig(model_channels=32, channel_mult=(1, 2), attention_resolutions=(1,), num_head_channels=16,
                        context_dim=16, num_res_blocks=(2, 1))
    model = UNet3D(config).eval()
    with torch.no_grad():
        y = model(torch.randn(1, 4, 2, 8, 8), 10, torch.randn(1, 3, 16))
    assert y.shape == (1, 4, 2, 8, 8)
    # Level 1 (no attention): ResBlock, then ResBlock + upsampler; level 0: ResBlock + two transformers.
    assert [len(stage) for stage in model.output_blocks] == [1, 2, 3, 3, 3]
