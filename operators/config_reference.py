"""docs/configuration.md, generated from the config models so that it cannot drift from them.

    sg4v config-reference > docs/configuration.md

Walks ``PipelineConfig`` field by field (name, type, default, description). A nested model is
a section of its own; a union of models told apart by ``kind`` (the input sources) gets one
subsection per kind; ``dict[str, Model]`` (``stages``) is documented as ``stages.<name>``.
The default resources of every stage come from the operators themselves; the job passes them
in (:class:`StageDoc`), so this module knows nothing of the job.
"""

from __future__ import annotations

import json
import types
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from operators.base import Resources

REGENERATE = "sg4v config-reference > docs/configuration.md"

HEADER = f"""# Configuration reference

<!-- Generated from the config models by `{REGENERATE}`. Do not edit by hand:
     tests/operators/test_config_reference.py fails when this file and the models differ. -->

A config is a YAML file validated before Ray starts: an unknown key or a wrong type stops the
run with exit status 2 and a message naming the key (`frames.every_s: Input should be a valid
number`). Every key can be overridden on the command line with `--set KEY=VALUE`; the value is
parsed as YAML and list entries are addressed by index:

```bash
sg4v run job.yaml --set frames.every_s=1.0 --set input.0.path=s3://bucket/videos \\
    --set stages.clip_encode.concurrency=[0,16]
```

The resolved config (defaults filled in, secrets masked) is written to `OUTPUT/config.yaml`
by every run and printed by `sg4v validate job.yaml`. "required" marks a key without a default.
"""


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def type_name(annotation: Any) -> str:
    """A short, YAML-minded name for a type annotation (``int | None``, ``"cls" | "mean"``)."""
    if annotation is type(None):
        return "null"
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return type_name(args[0])
    if origin is Literal:
        return " | ".join(json.dumps(a) for a in args)
    if origin in (Union, types.UnionType):
        if all(_is_model(a) for a in args):
            return "one of: " + ", ".join(_kind_label(a) or a.__name__ for a in args)
        return " | ".join(type_name(a) for a in args)
    if origin in (list, tuple, dict, set):
        inner = ", ".join("..." if a is Ellipsis else type_name(a) for a in args)
        return f"{origin.__name__}[{inner}]"
    if _is_model(annotation):
        return "section"
    return getattr(annotation, "__name__", str(annotation))


def _kind_label(model: type[BaseModel]) -> str | None:
    """``kind: folder`` for a model whose ``kind`` field is a single literal."""
    field = model.model_fields.get("kind")
    if field is None or get_origin(field.annotation) is not Literal:
        return None
    values = get_args(field.annotation)
    return f"kind: {values[0]}" if len(values) == 1 else None


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """Config models found anywhere inside ``annotation``, in order."""
    if _is_model(annotation):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in get_args(annotation):
        for model in _models_in(arg):
            if model not in found:
                found.append(model)
    return found


def _default(field: Any) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return ""
    if isinstance(value, tuple):
        value = list(value)
    try:
        text = json.dumps(value)
    except TypeError:
        text = repr(value)
    return f"`{_cell(text)}`"


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _constraints(field: Any) -> str:
    marks = []
    for item in field.metadata:
        for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            value = getattr(item, attr, None)
            if value is not None:
                marks.append(f"{sign} {value}")
    return f" ({', '.join(marks)})" if marks else ""


def _subsections(path: str, annotation: Any) -> list[tuple[str, type[BaseModel], str]]:
    """(heading path, model, note) for each model a field holds, beside the field's own row."""
    if _is_model(annotation):
        return [(path, annotation, "")]
    models = _models_in(annotation)
    if get_origin(annotation) is dict:
        return [(f"{path}.<name>", m, "") for m in models]
    if get_origin(annotation) is list:
        path = f"{path}.<i>"
    return [(path, m, _kind_label(m) or "") for m in models]


def render_model(path: str, model: type[BaseModel], level: int, description: str = "",
                 label: str = "") -> list[str]:
    """One section: a table of the model's own keys, then a section per nested model."""
    title = f"`{path}`" + (f" with `{label}`" if label else "") if path else "Top level"
    lines = [f"{'#' * level} {title}", ""]
    doc = (model.__doc__ or "").strip() if path else ""
    for text in (description, doc):
        if text and not text.startswith(("A base class", "Usage docs")):
            lines += [" ".join(text.split()), ""]
    lines += ["| key | type | default | description |", "|---|---|---|---|"]
    nested: list[tuple[str, type[BaseModel], str, str]] = []
    for name, field in model.model_fields.items():
        key = f"{path}.{name}" if path else name
        children = _subsections(key, field.annotation)
        shown = type_name(field.annotation)
        if children and not _is_model(field.annotation):
            shown = "list of sections (see below)" if get_origin(field.annotation) is list \
                else f"{shown} (see below)"
        lines.append(f"| `{key}` | `{_cell(shown)}`{_constraints(field)} | {_default(field)} | "
                     f"{_cell(field.description or '')} |")
        for heading, child, kind in children:
            # A union's members share the field's description; it is said once, in the table.
            nested.append((heading, child, "" if kind else field.description or "", kind))
    lines.append("")
    for heading, child, text, kind in nested:
        lines += render_model(heading, child, min(level + 1, 4), text, kind)
    return lines


@dataclass(frozen=True)
class StageDoc:
    """One stage as the reference shows it: its name, the config section and ``steps`` switch
    that drive it, and what it asks Ray for with the default config."""

    name: str
    section: str | None
    step: str | None
    pool: str  # "actors" or "tasks"
    resources: Resources


def stage_resources_table(stages: Sequence[StageDoc]) -> list[str]:
    """Each stage's names and declared resources with the default config."""
    lines = [
        "## Stages (names and default resources)",
        "",
        "One name per stage: the name below is the key under `stages:`, the `stage` of a",
        "rejection in `rejected/`, and the key in `stats.json`. The config section that",
        "configures the stage and the `steps` switch that turns it on are listed beside it.",
        "",
        "What each stage asks Ray for with the default config; `stages.<name>.*` overrides any of",
        "them. \"actors\" stages run as an actor pool whose size the autoscaler moves between the",
        "concurrency bounds; \"tasks\" stages run as Ray tasks (concurrency: unbounded unless set).",
        "",
        "| stage | section | step | pool | num_cpus | num_gpus | concurrency | batch_size |",
        "|---|---|---|---|---:|---:|---|---:|",
    ]
    for stage in stages:
        res = stage.resources
        low_high = list(res.concurrency) if res.concurrency else ([1, 1] if stage.pool == "actors" else "-")
        section = f"`{stage.section}`" if stage.section else "-"
        step = f"`steps.{stage.step}`" if stage.step else "-"
        lines.append(f"| `{stage.name}` | {section} | {step} | {stage.pool} | {res.num_cpus:g} | "
                     f"{res.num_gpus:g} | `{json.dumps(low_high) if low_high != '-' else '-'}` | "
                     f"{res.batch_size} |")
    lines.append("")
    return lines


def render_reference(config_model: type[BaseModel], stages: Sequence[StageDoc]) -> str:
    """The whole of docs/configuration.md."""
    lines = [HEADER]
    lines += render_model("", config_model, 2)
    lines += stage_resources_table(stages)
    return "\n".join(lines).rstrip() + "\n"
