"""The `hummingbird` command end to end on tiny weights, and its answers to bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hummingbird_t2v.cli import main
from hummingbird_t2v.data.video_io import probe_video, read_video

TINY_SIZE = ["--frames", "5", "--height", "64", "--width", "128", "--steps", "2"]


@pytest.fixture(scope="module")
def tiny_folder(golden_dir: Path, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("models") / "tiny-hb07"
    assert main(["convert", str(golden_dir / "tiny_release_pickled.pt"), str(folder), "--text-heads", "4"]) == 0
    return folder


def run_cli(*args: str, capsys) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_generate_writes_an_mp4_with_the_right_frames_and_size(tiny_folder, tmp_path, capsys):
    out = tmp_path / "videos"
    code, stdout, _ = run_cli("generate", "a red ball bouncing", "--weights", str(tiny_folder), "--seed", "3", "4",
                              *TINY_SIZE, "-o", str(out), "--no-progress", capsys=capsys)
    assert code == 0
    files = sorted(out.glob("*.mp4"))
    assert [f.name for f in files] == ["a_red_ball_bouncing_seed3.mp4", "a_red_ball_bouncing_seed4.mp4"]
    info = probe_video(files[0])
    frames, fps = read_video(files[0])
    assert frames.shape == (5, 64, 128, 3)
    assert (info.width, info.height) == (128, 64) and fps == pytest.approx(8)
    assert "wrote" in stdout


def test_generate_to_a_named_gif(tiny_folder, tmp_path, capsys):
    target = tmp_path / "clip.gif"
    code, _, _ = run_cli("generate", "x", "--weights", str(tiny_folder), *TINY_SIZE, "-o", str(target), "--no-progress", capsys=capsys)
    assert code == 0 and target.stat().st_size > 0


def test_prompt_file_gives_one_video_per_line(tiny_folder, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a cat\n\na dog\n")
    code, _, _ = run_cli("generate", "--prompt-file", str(prompts), "--weights", str(tiny_folder), *TINY_SIZE,
                         "-o", str(tmp_path / "o"), "--no-progress", capsys=capsys)
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["a_cat_seed0.mp4", "a_dog_seed0.mp4"]


def test_info_describes_files_and_folders(golden_dir, tiny_folder, capsys):
    code, out, _ = run_cli("info", str(golden_dir / "tiny_vc2_lightning.ckpt"), capsys=capsys)
    assert code == 0
    assert "format: lightning" in out and "U-Net preset: tiny-vc2" in out and "4,061,284 parameters" in out
    code, out, _ = run_cli("info", str(tiny_folder), capsys=capsys)
    assert code == 0 and "U-Net preset: tiny-hb-0.7b" in out and "consistency" in out


@pytest.mark.parametrize("container", ["pickled_module", "deepspeed", "safetensors"])
def test_info_reads_every_checkpoint_format(container, golden_dir, tmp_path, capsys):
    import torch
    from safetensors.torch import save_file

    if container == "pickled_module":
        path, preset = golden_dir / "tiny_release_pickled.pt", "tiny-hb-0.7b"
    else:
        state = torch.load(golden_dir / "tiny_vc2_lightning.ckpt", weights_only=True)["state_dict"]
        preset = "tiny-vc2"
        if container == "deepspeed":
            path = tmp_path / "mp_rank_00_model_states.pt"
            torch.save({"module": {f"_forward_module.{k}": v for k, v in state.items()}}, path)
        else:
            path = tmp_path / "model.safetensors"
            save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    code, out, _ = run_cli("info", str(path), capsys=capsys)
    assert code == 0
    assert f"format: {container}" in out and f"U-Net preset: {preset}" in out
    assert "vae: 1,399,879 parameters" in out and "text_encoder: 1,622,721 parameters" in out


def _bad_inputs(tiny_folder: Path, tmp_path: Path) -> list[tuple[list[str], str]]:
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"PK\x03\x04 this is not a checkpoint")
    weights = ["--weights", str(tiny_folder)]
    return [
        (["generate", "", *weights], "empty"),
        (["generate", "a", *weights, "--height", "100", "--width", "128", "--frames", "2"], "multiple of 64"),
        (["generate", "a", *weights, "--frames", "0"], "--frames must be at least 1"),
        (["generate", "a", *weights, "--gamma", "2"], "--gamma must lie in [0, 1]"),
        (["generate", "a", "--weights", str(tiny_folder / "nope.pt")], "no such file"),
        (["generate", "a", "--weights", str(corrupt)], "corrupt.ckpt"),
        (["generate", "a", *weights, "--model", "hb-9b"], "hb-9b"),
        (["generate", "a", *weights, "--model", "tiny-vc2", "--frames", "2"], "does not fit"),
        (["generate", "a", *weights, "--device", "cuda"], "not available"),
        (["generate", "a", *weights, "--device", "tpu"], "device"),
        (["info", str(tmp_path / "missing.safetensors")], "no such file"),
        (["convert", str(corrupt), str(tmp_path / "out")], "corrupt.ckpt"),
    ]


def test_bad_input_gets_one_line_and_exit_code_2(tiny_folder, tmp_path, capsys):
    for args, message in _bad_inputs(tiny_folder, tmp_path):
        if "--device" in args and args[args.index("--device") + 1] == "cuda":
            import torch

            if torch.cuda.is_available():
                continue
        code, _, err = run_cli(*args, capsys=capsys)
        assert code == 2, (args, err)
        assert message in err, (args, err)
        assert "Traceback" not in err and err.count("\n") == 1, err


def test_output_path_that_is_a_file(tiny_folder, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run_cli("generate", "a", "--weights", str(tiny_folder), "-o", str(blocker / "videos"), capsys=capsys)
    assert code == 2 and "cannot write" in err


def test_console_script_runs_without_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "hummingbird_t2v.cli", "generate", "", "--weights", "x"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr
