"""The whole Hummingbird recipe at toy scale, in one command.

    hummingbird toyworld recipe -o runs/toy --minutes 120          # training time split over the stages
    hummingbird toyworld recipe -o runs/toy --steps teacher=1500,distill=500,consistency=500
    hummingbird toyworld recipe -o runs/toy --teacher MODEL --vocabulary core --steps distill=500,consistency=500

Stages, each a folder under the output (a rerun skips the finished ones and resumes the one that
was interrupted):

    teacher             `train base` with configs/toy_teacher.yaml (2 blocks per level, like VideoCrafter2),
                        or --teacher MODEL_FOLDER: an already trained teacher (e.g. the built-in model)
    pruned-paper        `prune` with the paper's block map (configs/toy_paper_layout.yaml), no training
    importance.yaml     `prune --analyze` on toy clips: the layout of the same size that keeps the
                        blocks whose removal changes the teacher's guided prediction the most
    distill-paper       stage 1 (`train distill`, configs/toy_distill.yaml) of the paper-map student
    distill-importance  stage 1 of the importance-layout student
    consistency         stage 2 (`train consistency`, configs/toy_consistency.yaml) from distill-paper
                        (--consistency-from distill-importance: from the other student), no reward
    consistency-reward  the same with the toy reward on one attribute (--reward-attribute)

then every model is scored by the toy evaluator on the same prompts and starting noise
(results.json, results.md), with the agreement of the stage-1 students, sampled with DDIM and no
guidance, with the teacher sampled with classifier-free guidance.

One guidance scale, --teacher-guidance (default: the one the teacher samples with, from its
model_index.json), is what the teacher rows sample with, what stage 1 distils
(objective.guidance_scale) and what the importance analysis measures: the paper distils
VideoCrafter2 at 12, the scale it samples with, and a toy teacher best at 3 is distilled at 3.
Stage 2 trains around the same scale: its guidance embedding takes the LCM form w = g − 1 (the
teacher's u + g·(c − u) is c + (g − 1)·(c − u)), so it draws w ~ U[(g − 1)/2, 3(g − 1)/2] and its
students sample at w = g − 1 by default (the paper's U[5, 15] is for a teacher at 12; for a toy teacher
at 3 it would train the student on guidance 6–16, which that teacher renders badly).

With --minutes, each stage first trains a few probe steps to measure its speed on this machine,
then gets the number of steps that fills its share of the budget. --set STAGE:KEY=VALUE changes one
stage's config (STAGE all: every stage), e.g. --set all:data.num_workers=4 on a many-core GPU host.
--vocabulary core trains every stage on, and evaluates with prompts of, the built-in model's smaller
vocabulary (hummingbird_t2v.toyworld.scene.VOCABULARY_PRESETS).

--parallel trains the two stage-1 students at once, then the two stage-2 students at once, each in
its own process (its output in STAGE/recipe-train.log): one toy training leaves a GPU mostly idle,
so two side by side take little longer than one. On a CPU it only splits the cores. (With --minutes
the probes time each stage alone, so stages side by side may run past their share.)
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hummingbird_t2v.checkpoints.folder import CONFIG_NAME, write_json
from hummingbird_t2v.errors import ConfigError, HummingbirdError

__all__ = ["RecipeError", "RecipeSettings", "add_recipe_parser", "run_recipe"]

TRAIN_STAGES = ("teacher", "distill-paper", "distill-importance", "consistency", "consistency-reward")
# Share of the --minutes budget: the teacher learns from scratch; the students start from it.
BUDGET_SHARE = {"teacher": 0.5, "distill-paper": 0.125, "distill-importance": 0.125, "consistency": 0.125, "consistency-reward": 0.125}
STEP_GROUPS = {"teacher": "teacher", "distill-paper": "distill", "distill-importance": "distill", "consistency": "consistency", "consistency-reward": "consistency"}
PROBE_STEPS = 20
DONE_MARKER = "recipe-stage-done.json"


class RecipeError(HummingbirdError):
    """A stage of the toy recipe failed."""


@dataclass
class RecipeSettings:
    output: Path
    configs: Path = Path("configs")
    minutes: float | None = None
    steps: dict[str, int] = field(default_factory=dict)  # keys: teacher, distill, consistency
    overrides: dict[str, list[str]] = field(default_factory=dict)  # stage (or "all") -> KEY=VALUE
    reward_attribute: str = "motion"
    reward_weight: float = 1.0
    n: int = 200
    eval_batch_size: int = 50
    teacher_steps: int = 50
    agreement_prompts: int = 64  # prompts of the stage-1-vs-guided-teacher pixel check
    calibration_clips: int = 8  # real toy clips the importance analysis measures the blocks on
    # The guidance the teacher rows sample with and stage 1 distils (objective.guidance_scale) and the
    # importance analysis measures; None: the teacher's own default (its model_index.json), the way the
    # paper distils VideoCrafter2 at the scale it samples with (12).
    teacher_guidance: float | None = None
    device: str = "auto"
    vocabulary: str = "full"  # a toy vocabulary preset: the training clips and evaluation prompts
    teacher: Path | None = None  # a trained teacher model folder: skip the teacher stage
    consistency_from: str = "distill-paper"  # the stage-1 student that stage 2 starts from
    parallel: bool = False  # train the two students of each stage in two processes at once

    def config_file(self, name: str) -> Path:
        path = self.configs / name
        if not path.is_file():
            raise ConfigError(f"{path} is missing; run from a checkout of the repository or pass --configs DIR (the repo's configs/)")
        return path

    def sets(self, stage: str) -> list[str]:
        return [f"data.toyworld.vocabulary={self.vocabulary}", *self.overrides.get("all", []), *self.overrides.get(stage, [])]

    def budget_shares(self) -> dict[str, float]:
        """Share of --minutes per trained stage (a given teacher's share goes to the others)."""
        stages = {stage: share for stage, share in BUDGET_SHARE.items() if not (stage == "teacher" and self.teacher)}
        total = sum(stages.values())
        return {stage: share / total for stage, share in stages.items()}


# ------------------------------------------------------------------------------------ stages
def _cli(argv: list[str], stage: str) -> None:
    from hummingbird_t2v.cli import main

    code = main(argv)
    if code != 0:
        raise RecipeError(f"stage {stage} failed (exit {code}: `hummingbird {' '.join(argv)}`); see the message above")


def _done(folder: Path) -> bool:
    return (folder / DONE_MARKER).is_file()


def _mark_done(folder: Path, record: dict[str, Any]) -> None:
    write_json(folder / DONE_MARKER, record)


def _model_paths(teacher_model: Path) -> list[str]:
    sets = [f"model.{role}.path={teacher_model}" for role in ("unet", "vae", "text_encoder")]
    if (teacher_model / "prior" / CONFIG_NAME).is_file():
        # The students share the teacher's VAE and text encoder, so its caption prior fits them too:
        # they start sampling where the teacher does, and the comparison stays like for like.
        sets.append(f"model.prior.path={teacher_model}")
    return sets


def _read_speed(run: Path) -> float:
    """Samples per second over the last logging window of a run's train.csv."""
    with (run / "logs" / "train.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise RecipeError(f"the probe run {run} logged no step")
    return float(rows[-1]["samples_per_s"])


def _batch_size(config: Path, sets: list[str]) -> int:
    from hummingbird_t2v.training.config import load_config

    loaded = load_config(config, sets)
    return loaded.data.batch_size * loaded.run.grad_accum


@dataclass(frozen=True)
class StageRun:
    """One stage's training command, ready to run."""

    stage: str
    folder: Path
    argv: list[str]  # without --resume
    steps: int
    resume: bool


def _prepare_stage(settings: RecipeSettings, stage: str, command: str, config: Path, sets: list[str], budget_s: float | None) -> StageRun | None:
    """The training command of one stage (None when it finished in an earlier run); with a time
    budget, first a few probe steps measure its speed here."""
    folder = settings.output / stage
    sets = [*sets, *settings.sets(stage)]
    if _done(folder):
        print(f"[recipe] {stage}: done already ({folder})")
        return None
    steps = settings.steps.get(STEP_GROUPS[stage])
    resume = (folder / "checkpoints").is_dir()
    if resume:
        steps = json.loads((folder / "recipe-steps.json").read_text())["steps"]
    elif steps is None:
        if budget_s is None:
            raise ConfigError("give --minutes (a training budget) or --steps teacher=N,distill=N,consistency=N")
        probe = settings.output / f".probe-{stage}"
        shutil.rmtree(probe, ignore_errors=True)
        probe_sets = [*sets, f"run.max_steps={PROBE_STEPS}", f"logging.every={PROBE_STEPS // 2}", "checkpoint.every=0",
                      "sample.every=0", "sample.num_inference_steps=2", "logging.tensorboard=false"]
        started = time.perf_counter()
        _cli(["train", command, "--config", str(config), "--output", str(probe), *_set_args(probe_sets)], stage)
        speed = _read_speed(probe)
        shutil.rmtree(probe, ignore_errors=True)
        steps = max(1, int(budget_s * speed / _batch_size(config, sets)))
        print(f"[recipe] {stage}: {speed:.1f} samples/s measured (probe {time.perf_counter() - started:.0f} s); "
              f"{steps} steps fill its {budget_s / 60:.1f} min")
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "recipe-steps.json", {"steps": steps})  # a resumed stage keeps its step count
    argv = ["train", command, "--config", str(config), "--output", str(folder), *_set_args([*sets, f"run.max_steps={steps}"])]
    return StageRun(stage, folder, argv, steps, resume)


def _finish_stage(run: StageRun, seconds: float) -> None:
    _mark_done(run.folder, {"steps": run.steps, "seconds": seconds, "command": "hummingbird " + " ".join(run.argv)})


def _run_in_process(run: StageRun) -> None:
    started = time.perf_counter()
    _cli(run.argv + (["--resume"] if run.resume else []), run.stage)
    _finish_stage(run, time.perf_counter() - started)


def _run_side_by_side(runs: list[StageRun]) -> None:
    """Each stage in its own `hummingbird` process, all at once; every one is waited for, and the
    finished ones are marked done even when another failed (a rerun then resumes only that one)."""
    started = time.perf_counter()
    processes = []
    for run in runs:
        log = run.folder / "recipe-train.log"
        print(f"[recipe] {run.stage}: training in its own process, output in {log}", flush=True)
        with log.open("w", encoding="utf-8") as stream:
            argv = [sys.executable, "-m", "hummingbird_t2v.cli", *run.argv, *(["--resume"] if run.resume else [])]
            processes.append((run, log, subprocess.Popen(argv, stdout=stream, stderr=subprocess.STDOUT)))
    failed = []
    try:
        for run, log, process in processes:
            code = process.wait()
            if code == 0:
                _finish_stage(run, time.perf_counter() - started)
            else:
                failed.append(f"stage {run.stage} failed (exit {code}); its output is in {log}")
    except BaseException:  # e.g. Ctrl-C: stop the trainings too (a rerun resumes them)
        for _, _, process in processes:
            process.terminate()
        raise
    if failed:
        raise RecipeError("; ".join(failed))


def _train_stages(settings: RecipeSettings, stages: list[tuple[str, str, Path, list[str]]], budget: dict[str, float]) -> dict[str, Path]:
    """Train (stage, command, config, sets) stages one after the other, or with --parallel at once;
    return each stage's exported model folder."""
    runs = [_prepare_stage(settings, stage, command, config, sets, budget.get(stage)) for stage, command, config, sets in stages]
    pending = [run for run in runs if run is not None]
    if settings.parallel and len(pending) > 1:
        _run_side_by_side(pending)
    else:
        for run in pending:
            _run_in_process(run)
    return {stage: settings.output / stage / "model" for stage, *_ in stages}


def resolve_teacher_guidance(settings: RecipeSettings, teacher_model: Path) -> float:
    """--teacher-guidance, or the guidance scale the teacher model folder samples with by default."""
    if settings.teacher_guidance is not None:
        return settings.teacher_guidance
    from hummingbird_t2v.checkpoints.folder import read_json

    return float(read_json(teacher_model / "model_index.json")["defaults"]["guidance_scale"])


def stage2_guidance(teacher_guidance: float) -> tuple[float, float, float]:
    """Stage 2's guidance range (w_min, w_max) and sampling guidance, in the LCM form w = g − 1, for a
    teacher sampled at classifier-free guidance g: the range spans half to one and a half times w."""
    w = max(teacher_guidance - 1.0, 0.0)
    return w / 2, 3 * w / 2, w


def _set_args(sets: Sequence[str]) -> list[str]:
    return [arg for item in sets for arg in ("--set", item)]


def _write_calibration(teacher_model: Path, path: Path, vocabulary: str, count: int) -> None:
    """Real toy clips as the importance analysis's calibration batch: teacher-VAE latents and captions."""
    import torch
    from safetensors.torch import save_file

    from hummingbird_t2v.data.sampling import frames_to_tensor
    from hummingbird_t2v.pipelines.hummingbird import HummingbirdPipeline
    from hummingbird_t2v.toyworld.components import TRAIN_WORLD_SEED
    from hummingbird_t2v.toyworld.generator import ToyWorld, ToyWorldConfig
    from hummingbird_t2v.toyworld.scene import resolve_vocabulary

    pipe = HummingbirdPipeline.from_pretrained(teacher_model, device="cpu")
    defaults = pipe.config.defaults
    world = ToyWorld(ToyWorldConfig(seed=TRAIN_WORLD_SEED, num_frames=defaults.num_frames, height=defaults.height, width=defaults.width,
                                    vocabulary=resolve_vocabulary(vocabulary)))
    clips = [world.clip(index) for index in range(count)]
    with torch.no_grad():
        video = torch.stack([frames_to_tensor(clip.frames) for clip in clips])
        latents = pipe.vae.encode(video)
        context = pipe.encode_prompt([clip.caption for clip in clips])
        uncond = pipe.encode_prompt([""])
    fps = torch.full((count,), defaults.fps, dtype=torch.long)
    tensors = {"latents": latents.float(), "context": context.float(), "uncond_context": uncond.float(), "fps": fps}
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
    tmp.replace(path)


def _prune_stages(settings: RecipeSettings, teacher_model: Path, guidance: float) -> tuple[Path, Path]:
    """The paper-map student (untrained, for the table) and the importance layout file."""
    paper_layout = settings.config_file("toy_paper_layout.yaml")
    pruned = settings.output / "pruned-paper"
    if not _done(pruned):
        _cli(["prune", "--teacher", str(teacher_model), "--layout", str(paper_layout), "-o", str(pruned), "--overwrite"], "pruned-paper")
        _mark_done(pruned, {"layout": str(paper_layout)})
    importance = settings.output / "importance.yaml"
    if not importance.is_file():
        calibration = settings.output / "calibration.safetensors"
        _write_calibration(teacher_model, calibration, settings.vocabulary, settings.calibration_clips)
        _cli(["prune", "--analyze", "--teacher", str(teacher_model), "--calibration", str(calibration),
              "--guidance-scale", str(guidance), "--no-guidance-projection", "--device", settings.device, "-o", str(importance),
              "--overwrite"], "importance")
    return pruned / "model" if (pruned / "model").is_dir() else pruned, importance


def _reward_yaml(settings: RecipeSettings) -> str:
    reward = {"name": "toy", "weights": None, "weight": settings.reward_weight, "num_frames": None,
              "options": {"attributes": [settings.reward_attribute], "mode": "log_prob"}}
    return json.dumps([reward])  # JSON is YAML: --set parses it


def train_all(settings: RecipeSettings) -> dict[str, Path]:
    budget = {stage: settings.minutes * 60 * share for stage, share in settings.budget_shares().items()} if settings.minutes else {}
    models: dict[str, Path] = {}
    if settings.teacher is not None:
        models["teacher"] = settings.teacher
    else:
        models.update(_train_stages(settings, [("teacher", "base", settings.config_file("toy_teacher.yaml"), [])], budget))
    guidance = resolve_teacher_guidance(settings, models["teacher"])
    models["pruned-paper"], importance = _prune_stages(settings, models["teacher"], guidance)
    distill = settings.config_file("toy_distill.yaml")
    teacher_sets = _model_paths(models["teacher"])
    models.update(_train_stages(settings, [
        (stage, "distill", distill, [*teacher_sets, f"objective.layout={layout}", f"objective.guidance_scale={guidance}"])
        for stage, layout in (("distill-paper", settings.config_file("toy_paper_layout.yaml")), ("distill-importance", importance))
    ], budget))
    consistency = settings.config_file("toy_consistency.yaml")
    w_min, w_max, w_sample = stage2_guidance(guidance)
    student = [*teacher_sets, f"objective.student={models[settings.consistency_from]}",
               f"objective.w_min={w_min}", f"objective.w_max={w_max}", f"sample.guidance_scale={w_sample}"]
    models.update(_train_stages(settings, [
        ("consistency", "consistency", consistency, [*student, "objective.rewards=[]"]),
        ("consistency-reward", "consistency", consistency, [*student, f"objective.rewards={_reward_yaml(settings)}"]),
    ], budget))
    return models


# -------------------------------------------------------------------------------- evaluation
@dataclass(frozen=True)
class EvalRow:
    label: str
    model: str  # key into the trained models
    steps: int | None  # None: the model's default
    guidance: float | None


def eval_rows(settings: RecipeSettings) -> list[EvalRow]:
    t, g = settings.teacher_steps, settings.teacher_guidance
    return [
        EvalRow(f"teacher, DDIM {t}, CFG {g:g}", "teacher", t, g),
        EvalRow(f"teacher, DDIM {t}, no CFG", "teacher", t, 1.0),
        EvalRow(f"pruned (paper map), not distilled, DDIM {t}, CFG {g:g}", "pruned-paper", t, g),
        EvalRow(f"stage 1, paper map, DDIM {t}, no CFG", "distill-paper", t, 1.0),
        EvalRow(f"stage 1, importance layout, DDIM {t}, no CFG", "distill-importance", t, 1.0),
        EvalRow("stage 2, 4 steps", "consistency", 4, None),
        EvalRow("stage 2, 8 steps", "consistency", 8, None),
        EvalRow(f"stage 2 + {settings.reward_attribute} reward, 4 steps", "consistency-reward", 4, None),
        EvalRow(f"stage 2 + {settings.reward_attribute} reward, 8 steps", "consistency-reward", 8, None),
    ]


def _parameters(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())


def evaluate_all(settings: RecipeSettings, models: dict[str, Path]) -> dict[str, Any]:
    import numpy as np

    from hummingbird_t2v.commands.common import resolve_device
    from hummingbird_t2v.pipelines.hummingbird import HummingbirdPipeline
    from hummingbird_t2v.toyworld.evaluator import (
        eval_scenes,
        evaluate_pipeline,
        evaluate_real_clips,
        format_eval_table,
        generate_eval_videos,
        load_toy_evaluator,
    )

    device = resolve_device(settings.device)
    evaluator = load_toy_evaluator(device="cpu")
    _, prompts, _ = eval_scenes(settings.n, vocabulary=settings.vocabulary)
    results = [evaluate_real_clips(settings.n, vocabulary=settings.vocabulary, evaluator=evaluator)]
    rows: list[dict[str, Any]] = [{"label": "real clips", **dataclasses.asdict(results[0])}]
    pipes: dict[str, Any] = {}
    for row in eval_rows(settings):
        if row.model not in pipes:
            pipes[row.model] = HummingbirdPipeline.from_pretrained(models[row.model], device=device)
        pipe = pipes[row.model]
        result = evaluate_pipeline(pipe, settings.n, source=row.label, vocabulary=settings.vocabulary, num_inference_steps=row.steps,
                                   guidance_scale=row.guidance, batch_size=settings.eval_batch_size, evaluator=evaluator)
        results.append(result)
        rows.append({"label": row.label, "model": row.model, "steps": row.steps or pipe.config.defaults.num_inference_steps,
                     "guidance": row.guidance if row.guidance is not None else pipe.config.defaults.guidance_scale,
                     "parameters": _parameters(pipe.unet), **dataclasses.asdict(result)})
        print(f"[recipe] scored {row.label}: " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in result.accuracy.items()), flush=True)

    # Does the stage-1 student without guidance reproduce the teacher with guidance? Same prompts,
    # same starting noise, deterministic DDIM (eta 0): mean absolute pixel difference in [0, 1].
    count = min(settings.agreement_prompts, settings.n)
    t, g = settings.teacher_steps, settings.teacher_guidance
    reference = None
    agreement: dict[str, float] = {}
    for label, model, guidance in (("teacher, CFG", "teacher", g), ("teacher, no CFG", "teacher", 1.0),
                                   ("pruned, not distilled, CFG", "pruned-paper", g),
                                   ("stage 1 paper map, no CFG", "distill-paper", 1.0),
                                   ("stage 1 importance layout, no CFG", "distill-importance", 1.0)):
        pipe = pipes[model]
        pipe.config = dataclasses.replace(pipe.config, ddim_eta=0.0)
        videos = generate_eval_videos(pipe, prompts[:count], num_inference_steps=t, guidance_scale=guidance, batch_size=settings.eval_batch_size)
        videos = videos.astype(np.float32) / 255.0
        if reference is None:
            reference = videos
            continue
        agreement[label] = float(np.abs(videos - reference).mean())

    summary = {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(settings).items()},
        "device": str(device),
        "rows": rows,
        "agreement_with_teacher_cfg": {"prompts": count, "ddim_eta": 0.0, "mean_abs_pixel_difference": agreement},
        "table": format_eval_table(results),
    }
    return summary


def _markdown(summary: dict[str, Any]) -> str:
    from hummingbird_t2v.toyworld.evaluator import chance_accuracy

    rows = summary["rows"]
    names = list(rows[0]["accuracy"])
    lines = ["| model | U-Net params | " + " | ".join(names) + " | flicker |", "|---|---:|" + "---:|" * (len(names) + 1)]
    lines.append("| chance | | " + " | ".join(f"{100 * chance_accuracy(n):.1f}" for n in names) + " | |")
    for row in rows:
        params = f"{row['parameters'] / 1e6:.2f} M" if "parameters" in row else ""
        lines.append(f"| {row['label']} | {params} | " + " | ".join(f"{100 * row['accuracy'][n]:.1f}" for n in names)
                     + f" | {row['temporal_flickering']:.4f} |")
    agreement = summary["agreement_with_teacher_cfg"]
    lines += ["", f"Mean absolute pixel difference from the teacher with CFG ({agreement['prompts']} prompts, same noise, DDIM eta 0):", ""]
    lines += [f"- {label}: {value:.4f}" for label, value in agreement["mean_abs_pixel_difference"].items()]
    return "\n".join(lines) + "\n"


def run_recipe(settings: RecipeSettings) -> dict[str, Any]:
    if settings.n < 1:
        raise ConfigError(f"--n must be at least 1, got {settings.n}")
    if settings.agreement_prompts < 1:
        raise ConfigError(f"--agreement-prompts must be at least 1, got {settings.agreement_prompts}")
    if settings.calibration_clips < 1:
        raise ConfigError(f"--calibration-clips must be at least 1, got {settings.calibration_clips}")
    settings.output.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    models = train_all(settings)
    settings = dataclasses.replace(settings, teacher_guidance=resolve_teacher_guidance(settings, models["teacher"]))
    trained = time.perf_counter()
    summary = evaluate_all(settings, models)
    summary["seconds"] = {"training": trained - started, "evaluation": time.perf_counter() - trained}
    summary["stages"] = {stage: json.loads((settings.output / stage / DONE_MARKER).read_text())
                         for stage in TRAIN_STAGES if not (stage == "teacher" and settings.teacher)}
    if settings.teacher:
        summary["stages"]["teacher"] = {"given": str(settings.teacher)}
    write_json(settings.output / "results.json", summary)
    (settings.output / "results.md").write_text(_markdown(summary), encoding="utf-8")
    print(summary["table"])
    print(_markdown(summary))
    return summary


# ---------------------------------------------------------------------------------------- CLI
def _parse_steps(text: str | None) -> dict[str, int]:
    if not text:
        return {}
    steps = {}
    for item in text.split(","):
        key, _, value = item.partition("=")
        key = key.strip()
        if key not in ("teacher", "distill", "consistency") or not value.strip().isdigit() or int(value) < 1:
            raise ConfigError(f"--steps takes teacher=N,distill=N,consistency=N with N >= 1, got {item!r}")
        steps[key] = int(value)
    return steps


def _parse_overrides(items: Sequence[str]) -> dict[str, list[str]]:
    overrides: dict[str, list[str]] = {}
    for item in items:
        stage, sep, assignment = item.partition(":")
        if not sep or stage not in ("all", *TRAIN_STAGES) or "=" not in assignment:
            raise ConfigError(f"--set takes STAGE:KEY=VALUE with STAGE one of all, {', '.join(TRAIN_STAGES)}; got {item!r}")
        overrides.setdefault(stage, []).append(assignment)
    return overrides


def _run(args: argparse.Namespace) -> int:
    from hummingbird_t2v.toyworld.labels import ATTRIBUTE_CLASSES
    from hummingbird_t2v.toyworld.scene import VOCABULARY_PRESETS

    if args.minutes is None and not args.steps:
        raise ConfigError("give --minutes (a training budget split over the stages) or --steps teacher=N,distill=N,consistency=N")
    if args.minutes is not None and args.minutes <= 0:
        raise ConfigError(f"--minutes must be positive, got {args.minutes}")
    if args.reward_attribute not in ATTRIBUTE_CLASSES:
        raise ConfigError(f"--reward-attribute must be one of {', '.join(ATTRIBUTE_CLASSES)}, got {args.reward_attribute!r}")
    steps = _parse_steps(args.steps)
    needed = {"distill", "consistency"} | (set() if args.teacher else {"teacher"})
    if args.minutes is None and not needed <= set(steps):
        raise ConfigError(f"without --minutes, --steps must name {', '.join(sorted(needed))}")
    if args.teacher is not None and not (Path(args.teacher) / "model_index.json").is_file():
        raise ConfigError(f"--teacher {args.teacher} is not a model folder (no model_index.json); pass a trained teacher's model folder")
    if args.vocabulary not in VOCABULARY_PRESETS:
        raise ConfigError(f"--vocabulary must be one of {', '.join(VOCABULARY_PRESETS)}, got {args.vocabulary!r}")
    settings = RecipeSettings(
        output=Path(args.output),
        configs=Path(args.configs),
        minutes=args.minutes,
        steps=steps,
        overrides=_parse_overrides(args.overrides),
        reward_attribute=args.reward_attribute,
        reward_weight=args.reward_weight,
        n=args.n,
        eval_batch_size=args.eval_batch_size,
        teacher_steps=args.teacher_steps,
        teacher_guidance=args.teacher_guidance,
        agreement_prompts=args.agreement_prompts,
        calibration_clips=args.calibration_clips,
        device=args.device,
        vocabulary=args.vocabulary,
        teacher=Path(args.teacher) if args.teacher else None,
        consistency_from=args.consistency_from,
        parallel=args.parallel,
    )
    run_recipe(settings)
    return 0


def add_recipe_parser(commands: Any) -> None:
    """Register `recipe` on the `hummingbird toyworld` sub-command parsers."""
    parser = commands.add_parser("recipe", help="train, prune, distill and evaluate the whole recipe on the toy world",
                                 description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--output", required=True, help="run folder (one sub-folder per stage; rerun to resume)")
    parser.add_argument("--minutes", type=float, default=None, help="training budget in minutes, split over the stages")
    parser.add_argument("--steps", default=None, help="explicit steps, e.g. teacher=1500,distill=500,consistency=500")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="STAGE:KEY=VALUE",
                        help="override a stage's config (STAGE all for every stage), e.g. all:data.num_workers=4")
    parser.add_argument("--configs", default="configs", help="folder of the toy configs (default: ./configs)")
    parser.add_argument("--reward-attribute", default="motion", help="attribute the toy reward targets (default motion)")
    parser.add_argument("--reward-weight", type=float, default=1.0, help="weight of the toy reward (default 1)")
    parser.add_argument("--n", type=int, default=200, help="evaluation prompts per model (default 200)")
    parser.add_argument("--eval-batch-size", type=int, default=50, help="videos generated at once (default 50)")
    parser.add_argument("--teacher-steps", type=int, default=50, help="DDIM steps of the teacher and stage-1 rows (default 50)")
    parser.add_argument("--teacher-guidance", type=float, default=None,
                        help="guidance of the teacher rows, distilled by stage 1 and used by the importance analysis "
                             "(default: the teacher's own default guidance)")
    parser.add_argument("--agreement-prompts", type=int, default=64,
                        help="prompts of the check that stage 1 without CFG reproduces the teacher with CFG (default 64)")
    parser.add_argument("--calibration-clips", type=int, default=8,
                        help="real toy clips the importance analysis measures each block on (default 8)")
    parser.add_argument("--device", default="auto", help="device for analysis and evaluation (default auto)")
    parser.add_argument("--teacher", default=None, help="a trained teacher model folder: skip training one")
    parser.add_argument("--consistency-from", default="distill-paper", choices=("distill-paper", "distill-importance"),
                        help="the stage-1 student stage 2 starts from (default distill-paper, the paper's map)")
    parser.add_argument("--vocabulary", default="full", help="toy vocabulary of training clips and prompts: full or core (default full)")
    parser.add_argument("--parallel", action="store_true",
                        help="train the two students of each stage at once, each in its own process (for a GPU)")
    parser.set_defaults(func=_run)
