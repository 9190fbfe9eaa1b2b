"""Recipe files to settings: YAML recipes (a shipped name or a path) read into the settings dataclasses,
every value type-checked (:func:`from_dict`), and ``--set key=value`` overrides checked the same way.

Which values are *possible* is ``checks.py``'s concern; which stages exist, ``stages.py``'s.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from decoder2vec.training.errors import SettingError, TrainingError
from decoder2vec.training.settings import ContrastiveConfig, PipelineConfig
from decoder2vec.training.stages import STAGES


def _type_ok(value: Any, annotation: Any) -> bool:
    """Does ``value`` fit ``annotation`` (int, float, str, bool, X | None, list[str])? YAML gives the
    plain types; an int is accepted for a float, a bool is never taken for a number."""
    origin = typing.get_origin(annotation)
    if origin in (types.UnionType, typing.Union):
        return any(_type_ok(value, arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if origin is list:
        (item,) = typing.get_args(annotation) or (Any,)
        return isinstance(value, list) and all(_type_ok(v, item) for v in value)
    if annotation is Any:
        return True
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def from_dict(cls, data: dict[str, Any] | None, where: str = "recipe"):
    """Build dataclass ``cls`` from a mapping, recursing into nested dataclasses.

    Unknown keys and values of the wrong type (``max_steps: "10"``) are errors naming the key and ``where``
    (the recipe file)."""
    data = dict(data or {})
    names = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise SettingError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(names)})")
    kwargs = {}
    for key, value in data.items():
        annotation = hints[key]
        if dataclasses.is_dataclass(annotation):
            if not isinstance(value, dict):
                raise SettingError(f"{where}: {key} must be a mapping, got {value!r}")
            value = from_dict(annotation, value, f"{where}.{key}")
        elif not _type_ok(value, annotation):
            raise SettingError(
                f"{where}: {key} must be {_type_name(annotation)}, got {type(value).__name__} {value!r}"
            )
        elif annotation is float or (typing.get_origin(annotation) and float in typing.get_args(annotation)):
            value = float(value) if isinstance(value, int) else value
        kwargs[key] = value
    return cls(**kwargs)


def apply_overrides(cfg, assignments: list[str] | None, prefix: str | None = None):
    """Apply ``--set key=value`` overrides (``mntp.max_steps=5``, ``lora.r=8``) to ``cfg`` in place.

    Values are parsed as YAML scalars and type-checked like recipe values, so a flag can never hold
    what a recipe could not. ``prefix`` (a stage name) may be left out of a stage command's keys.
    """
    for assignment in assignments or ():
        key, sep, text = assignment.partition("=")
        if not sep or not key.strip():
            raise SettingError(f"--set {assignment!r}: expected KEY=VALUE, e.g. mntp.max_steps=5")
        path = key.strip().split(".")
        if prefix is not None and path[0] == prefix and len(path) > 1:
            path = path[1:]
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            value = text
        target = cfg
        for name in path[:-1]:
            if not dataclasses.is_dataclass(target) or not hasattr(target, name):
                raise SettingError(f"--set {assignment!r}: no setting {key.strip()!r}")
            target = getattr(target, name)
        if not dataclasses.is_dataclass(target):
            raise SettingError(f"--set {assignment!r}: no setting {key.strip()!r}")
        # YAML reads "3e-3" as a string and "123" as a number; also try the float and the raw text, so
        # `--set simcse.learning_rate=3e-3` and `--set mntp.data=123` mean what they say.
        candidates = [value]
        try:
            candidates.append(float(text))
        except ValueError:
            pass
        candidates.append(text)
        error = None
        for candidate in candidates:
            try:
                checked = from_dict(type(target), {path[-1]: candidate}, f"--set {key.strip()}")
            except SettingError as exc:
                error = error or exc
                continue
            setattr(target, path[-1], getattr(checked, path[-1]))
            break
        else:
            raise error
    return cfg


RECIPE_DIR = Path(__file__).resolve().parent.parent / "resources" / "recipes"


def recipe_path(name_or_path: str | Path) -> Path:
    """A recipe file path, or the name of a shipped recipe (``llm2vec-llama`` -> resources/recipes/...)."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    shipped = RECIPE_DIR / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    names = sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))
    raise TrainingError(f"no recipe file {name_or_path!r}; shipped recipes: {', '.join(names)}")


RETRIEVAL_RECIPE = "retrieval"  # the shipped recipe whose pairs + supervised sections --corpus adds


def _read_recipe(name_or_path: str | Path | None) -> dict[str, Any]:
    raw = {} if name_or_path is None else yaml.safe_load(recipe_path(name_or_path).read_text()) or {}
    if not isinstance(raw, dict):
        raise SettingError(f"recipe {name_or_path} must be a YAML mapping")
    raw = dict(raw)
    raw.pop("description", None)
    return raw


def with_corpus(raw: dict[str, Any], corpus: list[str], where: str = "recipe") -> dict[str, Any]:
    """``raw`` with the data engine on ``corpus``: the shipped retrieval recipe's ``pairs`` and ``supervised``
    sections under the recipe's own (its keys win), and ``supervised`` among the stages (before a final
    stage that does not continue the pipeline, e.g. distill)."""
    defaults = _read_recipe(RETRIEVAL_RECIPE)
    raw = dict(raw)
    for section in ("pairs", "supervised"):
        own = raw.get(section) or {}
        if not isinstance(own, dict):
            raise SettingError(f"{where}: {section} must be a mapping, got {own!r}")
        raw[section] = {**defaults[section], **own}
    raw["pairs"]["sources"] = list(corpus)
    stages = list(raw.get("stages", [n for n, s in STAGES.items() if s.in_default_pipeline]))
    if "supervised" not in stages:
        last = stages[-1] if stages else None
        at = len(stages) - 1 if last in STAGES and not STAGES[last].continues_pipeline else len(stages)
        stages.insert(at, "supervised")
    raw["stages"] = stages
    return raw


def load_pipeline(name_or_path: str | Path | None, corpus: list[str] | None = None) -> PipelineConfig:
    """Read a pipeline recipe; top-level ``model`` fills in every stage that does not name its own.
    ``corpus`` (``convert --corpus``) turns the data engine on (:func:`with_corpus`)."""
    raw = _read_recipe(name_or_path)
    if corpus:
        raw = with_corpus(raw, corpus, str(name_or_path))
    cfg = from_dict(PipelineConfig, raw, str(name_or_path))
    for name, spec in STAGES.items():
        stage = getattr(cfg, name)
        if spec.continues_pipeline:  # (distill's model is its student: by default the teacher's backbone)
            stage.model = cfg.model
        if isinstance(stage, ContrastiveConfig):
            stage.pooling = cfg.pooling
    return cfg


def load_stage(cls, name_or_path: str | Path | None, stage: str):
    """Read one stage's settings from a recipe file: its ``<stage>:`` section (or the whole file if flat)."""
    if name_or_path is None:
        return cls()
    raw = yaml.safe_load(recipe_path(name_or_path).read_text()) or {}
    section = dict(raw[stage]) if stage in raw else dict(raw)
    for key in ("description", "stages", *STAGES):
        section.pop(key, None)
    spec = STAGES.get(stage)
    if "model" in raw and "model" not in section and (spec is None or spec.continues_pipeline):
        section["model"] = raw["model"]
    if issubclass(cls, ContrastiveConfig) and "pooling" in raw and "pooling" not in section:
        section["pooling"] = raw["pooling"]
    return from_dict(cls, section, f"{name_or_path}:{stage}")
