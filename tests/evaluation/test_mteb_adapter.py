"""The MTEB adapter on mteb's own mock tasks, offline: instructions reach queries only, scores come back."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

mteb = pytest.importorskip("mteb", reason="mteb is the optional [mteb] extra")

from mteb.mocks.mock_tasks.classification import MockClassificationTask
from mteb.mocks.mock_tasks.clustering import MockClusteringTask
from mteb.mocks.mock_tasks.pair_classification import MockPairClassificationTask
from mteb.mocks.mock_tasks.reranking import MockRerankingTask
from mteb.mocks.mock_tasks.retrieval import MockRetrievalTask
from mteb.mocks.mock_tasks.sts import MockSTSTask
from mteb.models.models_protocols import EncoderProtocol

import decoder2vec
from decoder2vec.evaluation import mteb_model
from decoder2vec.evaluation.instructions import instruction_for, load_instructions


def run(model, tasks):
    return {
        r.task_name: r for r in mteb.evaluate(model, tasks, cache=None, show_progress_bar=False).task_results
    }


def test_queries_get_the_instruction_and_documents_do_not(hash_encoder) -> None:
    # the top-level re-export is the documented entry point
    model = decoder2vec.mteb_model(
        hash_encoder, instructions={"tasks": {"MockRetrievalTask": "Find the passage."}}
    )
    assert isinstance(model, EncoderProtocol)
    results = run(model, [MockRetrievalTask(), MockRerankingTask(), MockSTSTask()])
    seen = {}
    for texts, instruction in hash_encoder.calls:
        seen.setdefault(instruction, []).extend(texts)
    retrieval = MockRetrievalTask()
    retrieval.load_data()
    split = retrieval.dataset["default"]["test"]
    queries = set(split["queries"]["text"])
    # mteb joins a document's title and text before encoding
    corpus = {f"{row['title']} {row['text']}" for row in split["corpus"]}
    # the task-specific instruction, formatted LLM2Vec style, on the queries; nothing on the documents
    assert queries <= set(seen["Find the passage: "])
    assert corpus <= set(seen[None])
    assert not corpus & set(seen["Find the passage: "])
    # reranking falls back to the task-type default, STS to its type's default
    types = load_instructions()["task_types"]
    assert instruction_for("MockRerankingTask", "Reranking") in seen
    assert instruction_for("MockSTSTask", "STS") == types["STS"] + ": "
    assert instruction_for("MockSTSTask", "STS") in seen
    for name, result in results.items():
        main = result.scores["test"][0]["main_score"]
        assert math.isfinite(main), name


def test_no_instructions_mode(hash_encoder) -> None:
    run(mteb_model(hash_encoder, use_instructions=False), [MockSTSTask()])
    assert {instruction for _, instruction in hash_encoder.calls} == {None}


def test_real_encoder_from_a_path_on_every_text_task_type(tiny_byte_llama: Path) -> None:
    model = mteb_model(str(tiny_byte_llama), batch_size=4)
    assert model.mteb_model_meta.name == f"decoder2vec/{tiny_byte_llama.name}"
    tasks = [
        MockSTSTask(),
        MockRetrievalTask(),
        MockClassificationTask(),
        MockPairClassificationTask(),
        MockClusteringTask(),
        MockRerankingTask(),
    ]
    results = run(model, tasks)
    assert set(results) == {t.metadata.name for t in tasks}
    for name, result in results.items():
        assert np.isfinite(result.scores["test"][0]["main_score"]), name


def test_packaged_instructions_cover_the_paper_style() -> None:
    table = load_instructions()
    assert table["tasks"]["NQ"] == "Given a question, retrieve Wikipedia passages that answer the question"
    assert instruction_for("stsb") == "Retrieve semantically similar text: "
    assert instruction_for("sickr") == "Retrieve semantically similar text: "
    # every instruction is a plain sentence; the colon is added when used
    assert all(isinstance(v, str) and v and not v.endswith(":") for v in table["tasks"].values())


def test_unknown_keyword_for_a_built_encoder_is_refused(hash_encoder) -> None:
    with pytest.raises(TypeError, match="pooling"):
        mteb_model(hash_encoder, pooling="mean")
