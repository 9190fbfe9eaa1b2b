"""Supervised contrastive data: JSONL records ``{query, positive, negatives, instruction, task}``.

``instruction`` (optional) is prepended to the query, and to the positive/negatives too when the task is
symmetric (record field ``"symmetric": true`` or its task listed in ``symmetric_tasks``), as in LLM2Vec/E5.
Batches are drawn from one task at a time (see ``sampling.BatchPlan``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from decoder2vec.io import iter_jsonl
from decoder2vec.training.errors import CorpusError, MissingColumnError, TrainingError


@dataclass(frozen=True)
class PairExample:
    query: str
    positive: str
    negatives: tuple[str, ...] = ()
    instruction: str = ""
    task: str = "default"
    symmetric: bool = False


@dataclass
class PairBatch:
    """Texts of one batch, side by side; negatives flattened example-major (k per example)."""

    queries: list[str]
    query_instructions: list[str]
    positives: list[str]
    negatives: list[str]
    doc_instructions: list[str]  # for positives; negatives use the same per example, repeated k times
    negative_instructions: list[str] = field(default_factory=list)


def read_pairs(
    path: str | Path, num_negatives: int, symmetric_tasks: tuple[str, ...] = ()
) -> list[PairExample]:
    """Parse the JSONL file; each record needs ``query``, ``positive`` and ``num_negatives`` negatives."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CorpusError(f"supervised data {path} does not exist")
    examples = []
    bad_json = lambda lineno, detail: CorpusError(f"{path}:{lineno}: not valid JSON ({detail})")
    for lineno, rec in iter_jsonl(path, error=bad_json):
        for col in ("query", "positive") + (("negatives",) if num_negatives else ()):
            if not isinstance(rec, dict) or col not in rec:
                raise MissingColumnError(f"{path}:{lineno}: record has no '{col}' field")
        negatives = rec.get("negatives") or []
        if isinstance(negatives, str):
            negatives = [negatives]
        if len(negatives) < num_negatives:
            raise TrainingError(
                f"{path}:{lineno}: {len(negatives)} negatives, the recipe needs {num_negatives}"
            )
        task = str(rec.get("task") or "default")
        examples.append(
            PairExample(
                query=str(rec["query"]),
                positive=str(rec["positive"]),
                negatives=tuple(str(n) for n in negatives[:num_negatives]),
                instruction=str(rec.get("instruction") or ""),
                task=task,
                symmetric=bool(rec.get("symmetric", False)) or task in symmetric_tasks,
            )
        )
    if not examples:
        raise CorpusError(f"supervised data {path} is empty")
    return examples


def task_groups(examples: list[PairExample]) -> list[list[int]]:
    """Example indices grouped by task, tasks in first-seen order (deterministic)."""
    groups: dict[str, list[int]] = {}
    for i, ex in enumerate(examples):
        groups.setdefault(ex.task, []).append(i)
    return list(groups.values())


def collate_pairs(examples: list[PairExample]) -> PairBatch:
    doc_instr = [ex.instruction if ex.symmetric else "" for ex in examples]
    return PairBatch(
        queries=[ex.query for ex in examples],
        query_instructions=[ex.instruction for ex in examples],
        positives=[ex.positive for ex in examples],
        negatives=[n for ex in examples for n in ex.negatives],
        doc_instructions=doc_instr,
        negative_instructions=[d for ex, d in zip(examples, doc_instr) for _ in ex.negatives],
    )
