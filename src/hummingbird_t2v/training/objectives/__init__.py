"""The objective registry: what `objective.name` in a config and `hummingbird train <command>` mean.

An objective module registers itself when imported:

    register_objective(ObjectiveSpec(
        name="diffusion", command="base", settings_class=DiffusionSettings,
        build=build_diffusion_objective, description="..."))

`settings_class` is a dataclass typed from the config's `objective:` mapping (minus `name`);
`build(settings, components)` returns the `Objective` (components: the U-Net built from
`model.unet` plus the frozen VAE and text encoder, see training.components). The modules below
are imported on first use; one that does not exist yet is skipped, so later stages plug in by
adding a module here and nothing else.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from hummingbird_t2v.errors import ConfigError
from hummingbird_t2v.training.objective import Objective

__all__ = [
    "ObjectiveSpec",
    "available_objectives",
    "build_objective",
    "get_objective",
    "parse_objective_settings",
    "register_objective",
]

_OBJECTIVE_MODULES = (
    "hummingbird_t2v.training.objectives.diffusion",
    "hummingbird_t2v.training.objectives.distill",
    "hummingbird_t2v.training.objectives.consistency",
)


@dataclass(frozen=True)
class ObjectiveSpec:
    name: str  # the config's objective.name
    settings_class: type  # dataclass of the objective's settings
    build: Callable[[Any, Any], Objective]  # (settings, Components) -> Objective
    command: str | None = None  # `hummingbird train <command>`; None: reachable through configs only
    description: str = ""


_REGISTRY: dict[str, ObjectiveSpec] = {}
_loaded = False


def register_objective(spec: ObjectiveSpec) -> ObjectiveSpec:
    clash = next(
        (s for s in _REGISTRY.values() if spec.command and s.command == spec.command and s.name != spec.name),
        None,
    )
    if clash is not None:
        raise ValueError(f"objectives {clash.name!r} and {spec.name!r} both claim `train {spec.command}`")
    _REGISTRY[spec.name] = spec
    return spec


def _load_builtin() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module_name in _OBJECTIVE_MODULES:
        try:
            importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            # A stage not written yet, or one whose optional third-party dependency is not installed,
            # is simply not offered; a missing module of this package inside it is a real bug.
            missing = error.name or ""
            if missing != module_name and missing.startswith("hummingbird_t2v"):
                raise


def available_objectives() -> dict[str, ObjectiveSpec]:
    _load_builtin()
    return dict(_REGISTRY)


def get_objective(name: str) -> ObjectiveSpec:
    objectives = available_objectives()
    if name not in objectives:
        raise ConfigError(f"unknown objective {name!r}; registered objectives: {sorted(objectives)}")
    return objectives[name]


def parse_objective_settings(objective: Mapping[str, Any]) -> tuple[ObjectiveSpec, Any]:
    """(spec, typed settings) from the config's `objective:` mapping."""
    from hummingbird_t2v.training.config import build_dataclass

    spec = get_objective(objective.get("name", ""))
    fields = {k: v for k, v in objective.items() if k != "name"}
    return spec, build_dataclass(spec.settings_class, fields, "objective")


def build_objective(objective: Mapping[str, Any], components: Any) -> Objective:
    spec, settings = parse_objective_settings(objective)
    return spec.build(settings, components)
