"""LoRA on the 3D U-Net through peft, and merging it back into a plain `UNet3D`.

What the released stage 2 trains (training spec §2.1): a low-rank branch on **every** `nn.Linear`,
`nn.Conv2d` and `nn.Conv3d` of the U-Net (370 layers in the tiny golden 0.9B student; 371 layers
and 77.4 M LoRA weights in hb-0.9b, 333 and 65.6 M in hb-0.7b at rank 64; the two Conv1d
projections of `init_attn` and all norms get none), with

* rank 64, clipped per layer to min(rank, in, out) (a wider update cannot have a higher rank);
* `down` (peft's `lora_A`) ~ N(0, std 1/r) and `up` (`lora_B`) = 0, so a fresh LoRA leaves the
  output bitwise unchanged (peft's "gaussian" init);
* scale alpha/r = 1.0 by default (`alpha=None`);
* dropout on the LoRA input of 0.1 for Linear and Conv2d and 0 for Conv3d (the temporal convs).
  peft has one `lora_dropout` per adapter, so the Conv3d value is set afterwards by replacing
  that layer's dropout module.

The layers are injected in place with `peft.inject_adapter_in_model`: the U-Net stays a `UNet3D`
(same forward, same `config`), its frozen weights move to `<layer>.base_layer.*` and the adapter
adds `<layer>.lora_A.default.weight` / `<layer>.lora_B.default.weight`. Only the adapter weights
require gradients afterwards. `merge_lora` folds W + scale·B·A into each base layer and puts the
plain layer back, so the state dict has exactly the plain UNet3D keys again.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch
from accelerate import init_empty_weights
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from hummingbird_t2v.checkpoints.folder import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    read_json,
    save_component,
)
from hummingbird_t2v.checkpoints.unet_keys import infer_unet_config
from hummingbird_t2v.errors import CheckpointError, ConfigError
from hummingbird_t2v.models.unet import UNet3D
from hummingbird_t2v.models.unet_config import UNetConfig
from hummingbird_t2v.training import checkpointing as ckpt

__all__ = [
    "DEFAULT_RANK",
    "add_lora",
    "has_lora",
    "lora_layer_names",
    "merge_and_save",
    "merge_lora",
    "trainable_lora_parameters",
]

DEFAULT_RANK = 64
DEFAULT_DROPOUT = 0.1  # Linear and Conv2d
DEFAULT_CONV3D_DROPOUT = 0.0
ADAPTER = "default"  # peft's adapter name; part of every LoRA key
LORA_TARGET_TYPES = (nn.Linear, nn.Conv2d, nn.Conv3d)
_LORA_KEY = re.compile(r"^(?P<layer>.+)\.lora_(?P<side>[AB])\.(?P<adapter>[^.]+)\.weight$")
_BASE_LAYER = ".base_layer."


def _peft():
    """peft is the `train` extra; import it only where LoRA is used."""
    try:
        import peft
        from peft.tuners.lora import LoraLayer
    except ImportError:
        raise ConfigError(
            "LoRA training needs peft: pip install 'hummingbird-t2v[train]' (or pip install peft)"
        ) from None
    return peft, LoraLayer


def has_lora(module: nn.Module) -> bool:
    """Whether any peft LoRA layer is injected in ``module`` (False without peft installed)."""
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:
        return False
    return any(isinstance(m, LoraLayer) for m in module.modules())


def lora_layer_names(module: nn.Module) -> list[str]:
    """Names of the layers that get LoRA: every nn.Linear / nn.Conv2d / nn.Conv3d, in module order."""
    return [name for name, m in module.named_modules() if isinstance(m, LORA_TARGET_TYPES)]


def _layer_dims(layer: nn.Module) -> tuple[int, int]:
    if isinstance(layer, nn.Linear):
        return layer.in_features, layer.out_features
    return layer.in_channels, layer.out_channels


def _exact(name: str) -> str:
    # peft matches rank/alpha patterns with re.match(r"(.*\.)?(PATTERN)$"); the leading ^ makes the
    # pattern match only the full name, never a longer name that ends with it.
    return "^" + re.escape(name)


def _inject(module: nn.Module, ranks: Mapping[str, int], scale: float, dropout: float, conv3d_dropout: float) -> None:
    """Inject one LoRA adapter with per-layer ranks ``ranks`` (layer name -> r) and scale alpha/r = ``scale``."""
    peft, lora_layer = _peft()
    top_rank = max(ranks.values())
    config = peft.LoraConfig(
        r=top_rank,
        lora_alpha=scale * top_rank,
        lora_dropout=dropout,
        target_modules="|".join(re.escape(name) for name in ranks),  # a str is full-matched by peft
        init_lora_weights="gaussian",
        rank_pattern={_exact(name): r for name, r in ranks.items() if r != top_rank},
        alpha_pattern={_exact(name): scale * r for name, r in ranks.items() if r != top_rank},
    )
    training = module.training
    peft.inject_adapter_in_model(config, module, adapter_name=ADAPTER)
    module.train(training)  # the new layers (and their dropout) follow the module's train/eval mode
    injected = {name: layer for name, layer in module.named_modules() if isinstance(layer, lora_layer)}
    wrong = sorted(
        name for name, r in ranks.items()
        if name not in injected or injected[name].r[ADAPTER] != r or abs(injected[name].scaling[ADAPTER] - scale) > 1e-12
    )
    if wrong:
        # Pattern matching of rank_pattern differs between peft versions; never train the wrong shapes.
        raise ConfigError(
            f"peft {peft.__version__} did not apply the per-layer LoRA ranks/scales (e.g. {wrong[:3]}); "
            "install a recent peft (pip install -U peft)"
        )
    for layer in injected.values():
        if isinstance(layer.get_base_layer(), nn.Conv3d):
            layer.lora_dropout[ADAPTER] = nn.Dropout(conv3d_dropout) if conv3d_dropout > 0 else nn.Identity()


def _check_settings(rank: int, alpha: float | None, dropout: float, conv3d_dropout: float) -> float:
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise ConfigError(f"the LoRA rank must be a positive integer, got {rank!r}")
    if alpha is not None and not alpha > 0:
        raise ConfigError(f"the LoRA alpha must be positive (or None for scale 1.0), got {alpha!r}")
    for name, p in (("dropout", dropout), ("conv3d_dropout", conv3d_dropout)):
        if not 0.0 <= p < 1.0:
            raise ConfigError(f"LoRA {name} must lie in [0, 1), got {p}")
    return 1.0 if alpha is None else alpha / rank


def add_lora(
    unet: nn.Module,
    rank: int = DEFAULT_RANK,
    alpha: float | None = None,
    dropout: float = DEFAULT_DROPOUT,
    conv3d_dropout: float = DEFAULT_CONV3D_DROPOUT,
) -> nn.Module:
    """Inject LoRA into every Linear/Conv2d/Conv3d of ``unet`` in place and return ``unet``.

    The branch scale is alpha/rank on every layer (1.0 for ``alpha=None``, as released), also on
    layers whose rank is clipped. Afterwards only the LoRA weights require gradients.
    """
    scale = _check_settings(rank, alpha, dropout, conv3d_dropout)
    if has_lora(unet):
        raise ConfigError("this U-Net already has LoRA layers; merge them (merge_lora) before adding new ones")
    ranks = {}
    for name in lora_layer_names(unet):
        in_dim, out_dim = _layer_dims(unet.get_submodule(name))
        ranks[name] = min(rank, in_dim, out_dim)
    if not ranks:
        raise ConfigError(f"{type(unet).__name__} has no Linear/Conv2d/Conv3d layer to put LoRA on")
    _inject(unet, ranks, scale, dropout, conv3d_dropout)
    return unet


def trainable_lora_parameters(unet: nn.Module) -> list[nn.Parameter]:
    """The LoRA weights (what the optimizer updates), in module order."""
    _, lora_layer = _peft()
    params = []
    for layer in unet.modules():
        if isinstance(layer, lora_layer):
            params.extend(layer.lora_A[ADAPTER].parameters())
            params.extend(layer.lora_B[ADAPTER].parameters())
    return params


@torch.no_grad()
def merge_lora(unet: nn.Module) -> nn.Module:
    """Fold every LoRA branch into its base layer (W ← W + scale·B·A) in place; return ``unet``.

    Each peft layer is replaced by its plain base layer, so the result has exactly the plain
    module's state-dict keys. The merged weights keep the base weights' dtype and stay frozen
    (requires_grad False), as they were under LoRA. Copy first (copy.deepcopy) to keep the LoRA model.
    """
    _, lora_layer = _peft()
    names = [name for name, m in unet.named_modules() if isinstance(m, lora_layer)]
    for name in names:
        layer = unet.get_submodule(name)
        layer.merge(safe_merge=True, adapter_names=[ADAPTER])
        parent_name, _, child = name.rpartition(".")
        parent = unet.get_submodule(parent_name) if parent_name else unet
        setattr(parent, child, layer.get_base_layer())
    return unet


# ----------------------------------------------------------------------------------- merge and save


def _source_weights(source: Path) -> tuple[Path, UNetConfig | None]:
    """The weights file of ``source`` and the U-Net config stored beside it, if any."""
    if source.is_file():
        return source, None
    if not source.is_dir():
        raise ConfigError(f"{source} does not exist; give a training run, a checkpoint folder or a .safetensors file")
    checkpoints = source / "checkpoints"
    if not (source / WEIGHTS_NAME).is_file() and checkpoints.is_dir():
        newest = ckpt.latest_checkpoint(checkpoints)
        if newest is None:
            raise CheckpointError(f"{checkpoints} holds no finished checkpoint to merge")
        source = newest
    weights = source / WEIGHTS_NAME
    if not weights.is_file():
        raise ConfigError(
            f"{source} has no {WEIGHTS_NAME}; give a training run, a checkpoint folder (step-N) or a .safetensors file"
        )
    config = UNetConfig.from_dict(read_json(source / CONFIG_NAME)) if (source / CONFIG_NAME).is_file() else None
    return weights, config


def _split_lora_state_dict(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """(the state dict with peft's base_layer names made plain, layer name -> LoRA rank)."""
    ranks: dict[str, int] = {}
    sides: dict[str, set[str]] = {}
    for key, tensor in state_dict.items():
        match = _LORA_KEY.match(key)
        if match is None:
            continue
        if match["adapter"] != ADAPTER:
            raise CheckpointError(f"LoRA weight {key} belongs to adapter {match['adapter']!r}; only {ADAPTER!r} is supported")
        sides.setdefault(match["layer"], set()).add(match["side"])
        if match["side"] == "A":
            ranks[match["layer"]] = tensor.shape[0]
    incomplete = sorted(layer for layer, found in sides.items() if found != {"A", "B"})
    if incomplete:
        raise CheckpointError(f"LoRA layers without both lora_A and lora_B weights: {incomplete[:5]}")
    if not ranks:
        raise CheckpointError("the weights hold no LoRA layers (no '.lora_A.default.weight' keys); nothing to merge")
    plain = {key.replace(_BASE_LAYER, "."): tensor for key, tensor in state_dict.items() if _LORA_KEY.match(key) is None}
    return plain, ranks


def merge_and_save(
    source: str | Path,
    out: str | Path,
    *,
    alpha: float | None = None,
    config: UNetConfig | None = None,
    overwrite: bool = False,
) -> Path:
    """Merge the LoRA weights of a trained U-Net and write a plain U-Net component folder.

    ``source``: a training run (its newest checkpoint is used), a checkpoint folder (step-N,
    holding model.safetensors) or a .safetensors file of a LoRA U-Net's state dict. ``out``
    receives config.json + model.safetensors, loadable as a `unet` component (``model.unet.path``
    of a training config, or the unet/ folder of a model folder). The layer ranks are read
    from the weights; ``alpha`` must be what training used (None: scale 1.0, the default; else
    the scale is alpha / the largest layer rank, i.e. the ``rank`` given to `add_lora`).
    ``config`` defaults to a config.json beside the weights, else it is inferred from the weight
    names and shapes (structure only; the other fields take their defaults, e.g. default_fps 16).
    Returns ``out``.
    """
    source, out = Path(source).expanduser(), Path(out).expanduser()
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"{out} already exists and is not empty; choose another output folder or pass overwrite=True")
    weights_path, stored_config = _source_weights(source)
    try:
        state_dict = load_file(str(weights_path))
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{weights_path} is not a readable safetensors file ({error})") from None
    plain, ranks = _split_lora_state_dict(state_dict)
    config = config or stored_config or infer_unet_config(plain)

    base_dtypes = {key: tensor.dtype for key, tensor in plain.items()}
    with init_empty_weights(include_buffers=False):
        unet = UNet3D(config)
    _inject(unet, ranks, _check_settings(max(ranks.values()), alpha, 0.0, 0.0), 0.0, 0.0)
    # Merge in float32 whatever the stored dtype; the result is stored in the base weights' dtype.
    full = {k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()}
    missing, unexpected = unet.load_state_dict(full, strict=False, assign=True)
    if missing or unexpected:
        raise CheckpointError(
            f"{weights_path} does not fit a {type(unet).__name__} with its LoRA layers: "
            f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}; pass the U-Net config it was trained with"
        )
    merged = merge_lora(unet)
    for name, param in merged.named_parameters():
        param.data = param.data.to(base_dtypes[name])
    save_component(out, merged, merged.config.to_dict())
    return out
