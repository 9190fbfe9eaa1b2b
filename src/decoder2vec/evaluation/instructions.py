"""Per-task instructions (LLM2Vec style), read from the JSON file shipped in ``decoder2vec/resources``."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from decoder2vec.evaluation.errors import DataFormatError

RESOURCE = "mteb_instructions.json"


@lru_cache(maxsize=8)
def load_instructions(path: str | None = None) -> dict[str, Any]:
    """The instruction table: ``{"tasks": {name: text}, "task_types": {type: text}, "local_tasks": {...}}``.

    ``path`` points to a user file of the same shape; without it the packaged file is read.
    """
    if path is None:
        text = resources.files("decoder2vec").joinpath("resources", RESOURCE).read_text(encoding="utf-8")
        source: str | Path = RESOURCE
    else:
        source = Path(path)
        if not source.is_file():
            raise DataFormatError(source, "instruction file not found")
        text = source.read_text(encoding="utf-8")
    try:
        table = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataFormatError(source, f"invalid JSON ({exc.msg})", exc.lineno) from None
    if not isinstance(table, dict) or not isinstance(table.get("tasks", {}), dict):
        raise DataFormatError(source, "expected an object with a 'tasks' mapping")
    table.setdefault("tasks", {})
    table.setdefault("task_types", {})
    table.setdefault("local_tasks", {})
    return table


def format_instruction(instruction: str | None) -> str | None:
    """LLM2Vec's form: trailing full stop dropped, a colon and a space appended (``"Retrieve ... text: "``).

    The trailing space separates instruction and text as in LLM2Vec's "instruction: text"; the core
    tokenizer places it where natural tokenization would (e.g. inside the text's first token).
    """
    if not instruction or not instruction.strip():
        return None
    instruction = instruction.strip()
    if not instruction.endswith(":"):
        instruction = instruction.rstrip(".") + ":"
    return instruction + " "


def instruction_for(
    task_name: str, task_type: str | None = None, table: dict[str, Any] | None = None
) -> str | None:
    """The formatted instruction for an MTEB task name (or a local alias such as ``stsb``), else its type's."""
    table = table if table is not None else load_instructions()
    name = table["local_tasks"].get(task_name, task_name)
    raw = table["tasks"].get(name)
    if raw is None and task_type is not None:
        raw = table["task_types"].get(task_type)
    return format_instruction(raw)
