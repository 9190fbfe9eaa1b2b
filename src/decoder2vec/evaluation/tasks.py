"""In-memory evaluation data, one small dataclass per task type."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

TaskType = Literal["sts", "pair_classification", "classification", "clustering", "retrieval", "reranking"]
TASK_TYPES: tuple[str, ...] = (
    "sts",
    "pair_classification",
    "classification",
    "clustering",
    "retrieval",
    "reranking",
)

# the score each task type is ranked by in reports (MTEB's main_score for the same task type)
MAIN_SCORE: dict[str, str] = {
    "sts": "cosine_spearman",
    "pair_classification": "cosine_ap",
    "classification": "accuracy",
    "clustering": "v_measure",
    "retrieval": "ndcg_at_10",
    "reranking": "map",
}


@dataclass
class STSData:
    sentences1: list[str]
    sentences2: list[str]
    scores: list[float]


@dataclass
class PairClassificationData:
    sentences1: list[str]
    sentences2: list[str]
    labels: list[int]


@dataclass
class ClassificationData:
    train_texts: list[str]
    train_labels: list[str]
    test_texts: list[str]
    test_labels: list[str]


@dataclass
class ClusteringData:
    texts: list[str]
    labels: list[str]


@dataclass
class RetrievalData:
    queries: dict[str, str]
    corpus: dict[str, str]
    qrels: dict[str, dict[str, int]]


@dataclass
class RerankingData:
    queries: list[str]
    candidates: list[list[str]]
    labels: list[list[int]]


TaskData = (
    STSData | PairClassificationData | ClassificationData | ClusteringData | RetrievalData | RerankingData
)


@dataclass
class EvalTask:
    """A named task ready to run.

    ``instruction`` is given to every text for symmetric tasks and to the queries only for retrieval and
    reranking (documents get none, as in LLM2Vec).
    """

    name: str
    type: TaskType
    data: TaskData
    instruction: str | None = None
    split: str = "test"
    source: list[str] = field(default_factory=list)

    @property
    def main_score(self) -> str:
        return MAIN_SCORE[self.type]

    def __len__(self) -> int:
        """Scored items: pairs, test texts, texts to cluster, or queries."""
        d = self.data
        if isinstance(d, STSData | PairClassificationData):
            return len(d.sentences1)
        if isinstance(d, ClassificationData):
            return len(d.test_texts)
        if isinstance(d, ClusteringData):
            return len(d.texts)
        return len(d.queries)
