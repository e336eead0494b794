"""`hummingbird toyworld eval`: how well a model follows toy prompts, read back by the toy evaluator.

    hummingbird toyworld eval --model MODEL_FOLDER --n 200 [--steps 4] [--gamma 0.5]
    hummingbird toyworld eval --real --n 200     # the evaluator on real clips alone
    hummingbird toyworld eval --model MODEL_FOLDER --n 200 --save-videos runs/videos.npz
    hummingbird toyworld eval --videos runs/videos.npz --evaluator OTHER_EVALUATOR   # no generation
    hummingbird toyworld eval --videos runs/videos.npz --confusion motion   # asked against read, per value

Prompts come from the evaluation world (seed 2 by default), whose scenes no shipped component was
trained on, drawn from the vocabulary the model was trained on (recorded in its folder; --vocabulary
overrides, e.g. "core" or "full"); the table puts the accuracy on generated videos next to the accuracy on the real
clips of the same scenes (the ceiling) and the chance level, plus VBench temporal flickering.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from hummingbird_t2v.errors import ConfigError

__all__ = ["add_eval_parser", "run_eval"]


def run_eval(args: argparse.Namespace) -> int:
    import torch

    from hummingbird_t2v.toyworld.evaluator import (
        confusion_counts,
        evaluate_real_clips,
        format_confusion,
        format_eval_table,
        load_eval_videos,
        load_toy_evaluator,
        score_videos,
    )

    if args.videos is not None and (args.model is not None or args.real or args.save_videos is not None):
        raise ConfigError("--videos scores videos saved earlier: drop --model, --real and --save-videos")
    sampling = [flag for flag, value in (("--steps", args.steps), ("--guidance-scale", args.guidance_scale), ("--prior-strength", args.prior_strength), ("--gamma", args.gamma)) if value is not None]
    if args.videos is not None and sampling:
        raise ConfigError(f"{', '.join(sampling)} set how --model samples, and --videos scores videos sampled earlier: drop them")
    if args.model is None and not args.real and args.videos is None:
        raise ConfigError("name the model to evaluate with --model MODEL_FOLDER, pass --videos FILE.npz to score saved videos, or --real for real clips only")
    if args.save_videos is not None and (args.model is None or not str(args.save_videos).endswith(".npz")):
        raise ConfigError("--save-videos FILE.npz stores the videos --model generates; name an .npz file and a --model")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.confusion is not None and args.model is None and args.videos is None:
        raise ConfigError("--confusion tabulates generated or saved videos: give --model or --videos")
    evaluator = load_toy_evaluator(args.evaluator) if args.evaluator else load_toy_evaluator()
    saved = None
    if args.videos is not None:
        saved = load_eval_videos(args.videos)
        results = [
            evaluate_real_clips(len(saved.videos), world_seed=saved.world_seed, vocabulary=saved.vocabulary, evaluator=evaluator),
            score_videos(saved.source, saved.videos, saved.attributes, evaluator=evaluator),
        ]
        heading = f"videos saved in {args.videos}, evaluation world seed {saved.world_seed}"
    else:
        vocabulary = args.vocabulary
        if vocabulary is None and args.model is not None:
            from hummingbird_t2v.toyworld.builtin import model_toy_vocabulary

            vocabulary = model_toy_vocabulary(args.model)
        results = [evaluate_real_clips(args.n, world_seed=args.world_seed, vocabulary=vocabulary, evaluator=evaluator)]
        if args.model is not None:
            result, saved = _generate_and_score(args, vocabulary, evaluator)
            results.append(result)
        described = args.vocabulary or ("the model's" if vocabulary is not None else "full")
        heading = f"evaluation world seed {args.world_seed}, {described} vocabulary, {args.captions} captions"
    print(f"toy evaluator, {heading}")
    print(format_eval_table(results))
    record: dict[str, Any] = {"results": [asdict(result) for result in results], "arguments": _arguments(args)}
    if args.confusion is not None:
        counts = confusion_counts(evaluator.predict(saved.videos), saved.attributes, args.confusion)
        print(f"\n{format_confusion(counts, args.confusion)}")
        record["confusion"] = {args.confusion: counts}
    if args.json:
        from hummingbird_t2v.checkpoints.folder import write_json

        write_json(Path(args.json), record)
    return 0


def _generate_and_score(args: argparse.Namespace, vocabulary: Any, evaluator: Any) -> tuple[Any, Any]:
    from tqdm import tqdm

    from hummingbird_t2v.pipelines.hummingbird import HummingbirdPipeline
    from hummingbird_t2v.toyworld.evaluator import (
        evaluate_pipeline_videos,
        save_eval_videos,
    )

    pipe = HummingbirdPipeline.from_pretrained(args.model, device=args.device)
    if args.gamma is not None:
        if pipe.config.sampler != "consistency":
            raise ConfigError(f"--gamma sets the consistency sampler's noise; {args.model} samples with DDIM: drop --gamma")
        pipe.config = dataclasses.replace(pipe.config, consistency_gamma=args.gamma)
    with tqdm(total=args.n, unit="video", desc="generating", disable=None, file=sys.stderr) as bar:
        result, saved = evaluate_pipeline_videos(
            pipe,
            args.n,
            source=Path(str(args.model)).name or str(args.model),
            world_seed=args.world_seed,
            captions=args.captions,
            vocabulary=vocabulary,
            num_inference_steps=args.steps,
            guidance_scale=args.guidance_scale,
            prior_strength=args.prior_strength,
            seed=args.seed,
            batch_size=args.batch_size,
            evaluator=evaluator,
            progress=bar.update,
        )
    if args.save_videos is not None:
        print(f"saved the {len(saved.videos)} videos to {save_eval_videos(args.save_videos, saved)}")
    return result, saved


def _arguments(args: argparse.Namespace) -> dict[str, Any]:
    return {key: value for key, value in vars(args).items() if key != "func" and isinstance(value, (str, int, float, bool, type(None)))}


def add_eval_parser(commands: Any) -> None:
    """Register `eval` on the `hummingbird toyworld` sub-command parsers."""
    parser = commands.add_parser(
        "eval",
        help="score how well a model follows toy prompts (per-attribute accuracy, flickering)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", default=None, help="model folder (or checkpoint) to generate with")
    parser.add_argument("--real", action="store_true", help="score real toy clips only (no --model needed)")
    parser.add_argument("--n", type=int, default=200, help="number of prompts / clips (default 200)")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's)")
    parser.add_argument("--guidance-scale", type=float, default=None, help="guidance scale (default: the model's)")
    parser.add_argument("--gamma", type=float, default=None,
                        help="consistency students: share of each step's noise drawn fresh (default: the model's, 1 = LCM)")
    parser.add_argument("--prior-strength", type=float, default=None,
                        help="models with a caption prior: its weight in the starting noise (0 samples as without it; default: the model's, 1)")
    parser.add_argument("--captions", choices=("canonical", "paraphrase"), default="canonical",
                        help="prompt wording: canonical captions or the toy world's paraphrases (default canonical)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    parser.add_argument("--vocabulary", default=None,
                        help="toy vocabulary of the prompts: core, full (default: the one the model records, else full)")
    parser.add_argument("--world-seed", type=int, default=2, help="toy world the prompts come from (default 2)")
    parser.add_argument("--batch-size", type=int, default=8, help="videos generated at once (default 8)")
    parser.add_argument("--device", default="cpu", help="torch device for generation (default cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--evaluator", default=None, help="evaluator folder (default: the shipped one)")
    parser.add_argument("--save-videos", default=None, metavar="FILE.npz",
                        help="also store the generated videos, prompts and ground truth, to score them again later")
    parser.add_argument("--videos", default=None, metavar="FILE.npz",
                        help="score videos stored with --save-videos (e.g. with another --evaluator) instead of generating")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument("--confusion", default=None, metavar="ATTRIBUTE",
                        help="also print, for the generated or saved videos, which value of this attribute (e.g. motion) "
                             "was asked and which the evaluator read")
    parser.set_defaults(func=run_eval)
