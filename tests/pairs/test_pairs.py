"""decoder2vec pairs: determinism, filters against numpy brute force, resume after SIGKILL, bad input, CLI."""

import json
import signal
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from decoder2vec.errors import ConfigError, InputError, OutputExistsError
from decoder2vec.pairs import PairsSettings, build_pairs
from decoder2vec.pairs.filters import filter_generated, longest_common_run, round_trip_keep
from decoder2vec.pairs.generate import parse_query
from decoder2vec.pairs.negatives import mine_negatives
from decoder2vec.pairs.passages import Passage
from decoder2vec.pairs.scoring import DenseScorer

TOPICS = ["river", "mountain", "forest", "city", "ocean", "desert", "island", "valley"]


def write_docs(path: Path, n: int = 8) -> Path:
    rows = []
    for i in range(n):
        t = TOPICS[i % len(TOPICS)]
        sentences = [
            f"The {t} number {i} is a place that many people visit in the summer.",
            f"Old stories say the {t} was made by giants who lived there long ago.",
            f"Today the {t} has a small museum, a school and a market for farmers.",
        ]
        rows.append({"id": f"d{i}", "title": f"The {t} {i}", "text": " ".join(sentences)})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def settings(docs: Path, model: Path, **kw) -> PairsSettings:
    base = PairsSettings(
        sources=[str(docs)], generator=str(model), chunking="sentences", chunk_size=160, min_passage_words=5,
        templates=("keywords",), max_new_tokens=8, shard_size=4, min_query_words=1, dev_fraction=0.3,
        seed=3, threads=1, progress=False, filter_model="bm25", round_trip_k=6, negatives=1,
        keep_short=True, temperature=1.0,
    )  # fmt: skip
    return PairsSettings(**{**base.__dict__, **kw})


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def outputs(folder: Path) -> dict[str, bytes]:
    files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    manifest = json.loads(files.pop("manifest.json"))
    manifest["settings"].pop("sources")
    files["manifest"] = json.dumps(manifest, sort_keys=True).encode()
    return files


def test_same_seed_same_pairs(tmp_path, tiny_llama, one_thread):
    docs = write_docs(tmp_path / "docs.jsonl")
    build_pairs(tmp_path / "a", settings(docs, tiny_llama))
    build_pairs(tmp_path / "b", settings(docs, tiny_llama))
    a, b = outputs(tmp_path / "a"), outputs(tmp_path / "b")
    assert a == b
    assert {"train.jsonl", "dev/corpus.jsonl", "dev/queries.jsonl", "dev/qrels/dev.tsv"} <= set(a)
    manifest = json.loads(a["manifest"])
    c = manifest["counts"]
    assert c["generated"] == c["passages"]  # one question per passage
    assert c["generated"] == c["kept"] + sum(c["dropped"].values())  # every drop counted by reason
    train = [json.loads(line) for line in a["train.jsonl"].decode().splitlines()]
    assert {r["task"] for r in train} >= {"title", "first_sentence"}
    assert all(r["instruction"] and len(r["negatives"]) <= 1 for r in train)
    # train never mixes in a dev document: dev passages are neither positives nor negatives
    dev_text = {json.loads(x)["text"] for x in a.get("dev/corpus.jsonl", b"").decode().splitlines()}
    assert not dev_text & {t for r in train for t in [r["positive"], *r["negatives"]]}


def test_other_seed_other_generations(tmp_path, tiny_llama, one_thread):
    docs = write_docs(tmp_path / "docs.jsonl")
    build_pairs(tmp_path / "a", settings(docs, tiny_llama, dev_fraction=0.0))
    build_pairs(tmp_path / "b", settings(docs, tiny_llama, dev_fraction=0.0, seed=4))
    shard = "generated/shard-00000.jsonl"
    assert outputs(tmp_path / "a")[shard] != outputs(tmp_path / "b")[shard]


# ------------------------------------------------------------------ filters vs brute force
def brute_scores(encoder, queries, instructions, passages):
    q = encoder.encode(queries, instruction=instructions, normalize=True)
    p = encoder.encode(passages, normalize=True)
    return q.astype(np.float64) @ p.astype(np.float64).T


PASSAGES = [
    "A plane is taking off.", "An air plane is taking off.", "A man is playing a large flute.",
    "A man is spreading shredded cheese on a pizza.", "The cat sat on the mat while the dog slept.",
    "Three boys are playing football in the park.", "The quick brown fox jumps over the lazy dog.",
    "She bought new shoes for the wedding yesterday.",
]  # fmt: skip
QUERIES = [
    "plane taking off",
    "a man playing",
    "cheese pizza",
    "cat and dog",
    "boys football",
    "fox",
    "shoes",
]


def test_round_trip_equals_numpy_ranking(tiny_encoder):
    scorer = DenseScorer("tiny", PASSAGES, encoder=tiny_encoder)
    instr = ["Given a question, retrieve passages"] * len(QUERIES)
    anchors = np.array([0, 2, 3, 4, 5, 6, 7])
    full = brute_scores(tiny_encoder, QUERIES, instr, PASSAGES)
    ranks = np.array([(full[i] > full[i, a]).sum() for i, a in enumerate(anchors)])
    for k in (1, 2, 4):
        got = round_trip_keep(scorer, scorer.queries(QUERIES, instr), anchors, k)
        np.testing.assert_array_equal(got, ranks < k)
    assert 0 < (ranks < 2).sum() < len(anchors)  # the case is not trivial either way


@pytest.mark.parametrize("skip,margin", [(0, 0.95), (1, 0.95), (0, 0.5), (2, 1.0)])
def test_negatives_equal_numpy_rule(tiny_encoder, skip, margin):
    scorer = DenseScorer("tiny", PASSAGES, encoder=tiny_encoder)
    instr = [""] * len(QUERIES)
    passage_docs = np.array([0, 0, 1, 2, 3, 4, 5, 6])  # passages 0 and 1 share a document
    anchors = np.array([0, 2, 3, 4, 5, 6, 7])
    anchor_docs = passage_docs[anchors]
    allowed = np.array([True, True, True, True, True, False, True])  # document 5 is in dev
    got = mine_negatives(
        scorer, scorer.queries(QUERIES, instr), anchors, anchor_docs, passage_docs, allowed,
        n=3, skip=skip, margin=margin,
    )  # fmt: skip
    full = brute_scores(tiny_encoder, QUERIES, None, PASSAGES)
    for row, a in enumerate(anchors):
        order = [j for j in np.argsort(-full[row], kind="stable") if passage_docs[j] != anchor_docs[row]]
        order = [j for j in order if allowed[passage_docs[j]]][skip:]
        expected = [int(j) for j in order if full[row, j] < margin * full[row, a] - 1e-6][:3]
        assert got[row] == expected, (row, got[row], expected)
        assert not {int(j) for j in np.flatnonzero(passage_docs == anchor_docs[row])} & set(got[row])


def test_quality_filters_count_each_reason():
    passages = [
        Passage(0, 0, "The Nile is a long river in Africa that flows north into the Mediterranean Sea.")
    ]
    raws = [
        'Question: "How long is the Nile?"', "", "What?", "The Nile is long.", "How long is the Nile?",
        "Is the Nile a long river in Africa that flows north into the sea?", " ".join(["word"] * 40) + "?",
    ]  # fmt: skip
    records = [{"passage": 0, "template": "question", "raw": r} for r in raws]
    drops = Counter()
    kept = filter_generated(records, passages, min_words=3, max_words=32, copy_words=8, drops=drops)
    assert [r["query"] for r in kept] == ["How long is the Nile?"]
    assert drops == Counter(
        unparsable=1, too_short=1, not_question=1, duplicate=1, copies_passage=1, too_long=1
    )
    assert parse_query("1. Query: 'nile length'\nmore") == "nile length"
    assert longest_common_run("a long river in africa x", "is a long river in africa that") == 5


# ------------------------------------------------------------------ resume after SIGKILL
@pytest.mark.slow
def test_killed_run_resumes_to_the_same_output(tmp_path, tiny_llama, one_thread):
    docs = write_docs(tmp_path / "docs.jsonl", n=6)
    s = settings(docs, tiny_llama, shard_size=2)
    script = textwrap.dedent(f"""
        import os, signal
        import decoder2vec.pairs.pipeline as P
        from decoder2vec.pairs import PairsSettings
        write = P.write_file_atomic
        def dying(path, data):
            write(path, data)
            if "shard-00001" in str(path):
                os.kill(os.getpid(), signal.SIGKILL)
        P.write_file_atomic = dying
        P.build_pairs({str(tmp_path / "killed")!r}, PairsSettings(**{s.__dict__!r}))
    """)
    proc = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    killed = tmp_path / "killed"
    assert sorted(p.name for p in (killed / "generated").iterdir()) == [
        "shard-00000.jsonl",
        "shard-00001.jsonl",
    ]
    assert not (killed / "train.jsonl").exists()
    build_pairs(killed, s)
    build_pairs(tmp_path / "whole", s)
    assert outputs(killed) == outputs(tmp_path / "whole")


# ------------------------------------------------------------------ bad input
def test_changed_settings_are_refused_by_name(tmp_path, tiny_llama, one_thread):
    docs = write_docs(tmp_path / "docs.jsonl")
    build_pairs(tmp_path / "out", settings(docs, tiny_llama, templates=()))
    before = outputs(tmp_path / "out")
    with pytest.raises(OutputExistsError, match=r"chunk_size 160 \(now 120\).*negatives 1 \(now 2\)"):
        build_pairs(tmp_path / "out", settings(docs, tiny_llama, templates=(), chunk_size=120, negatives=2))
    assert outputs(tmp_path / "out") == before
    (tmp_path / "out" / "notes.txt").write_text("mine")
    build_pairs(tmp_path / "out", settings(docs, tiny_llama, templates=(), chunk_size=120, overwrite=True))
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"  # --overwrite replaces only its own files


def test_dev_titles_make_a_dev_split_without_generation(tmp_path, tiny_llama, one_thread):
    docs = write_docs(tmp_path / "docs.jsonl")
    m = build_pairs(tmp_path / "out", settings(docs, tiny_llama, templates=(), dev_titles=True))
    dev = tmp_path / "out" / "dev"
    corpus = [json.loads(x) for x in (dev / "corpus.jsonl").read_text().splitlines()]
    queries = [json.loads(x) for x in (dev / "queries.jsonl").read_text().splitlines()]
    qrels = [line.split("\t") for line in (dev / "qrels" / "dev.tsv").read_text().splitlines()[1:]]
    # one query per dev document, its title, relevant to every passage of that document and nothing else
    titles = sorted({c["title"] for c in corpus})
    assert sorted(q["text"] for q in queries) == titles and m["counts"]["dev"]["queries"] == len(titles)
    text = {q["_id"]: q["text"] for q in queries}
    for qid, cid, score in qrels:
        assert score == "1" and next(c["title"] for c in corpus if c["_id"] == cid) == text[qid]
    assert len(qrels) == len(corpus)
    # a run made before the setting existed (no dev_titles in its manifest) still resumes
    build_pairs(tmp_path / "old", settings(docs, tiny_llama, templates=()))
    manifest = json.loads((tmp_path / "old" / "manifest.json").read_text())
    del manifest["settings"]["dev_titles"]
    (tmp_path / "old" / "manifest.json").write_text(json.dumps(manifest))
    build_pairs(tmp_path / "old", settings(docs, tiny_llama, templates=()))
    with pytest.raises(OutputExistsError, match=r"dev_titles False \(now True\)"):
        build_pairs(tmp_path / "old", settings(docs, tiny_llama, templates=(), dev_titles=True))


def test_foreign_folder_is_refused_untouched(tmp_path, tiny_llama):
    docs = write_docs(tmp_path / "docs.jsonl")
    out = tmp_path / "out"
    out.mkdir()
    (out / "data.txt").write_text("keep")
    for overwrite in (False, True):
        with pytest.raises(OutputExistsError, match="not empty and holds no manifest.json"):
            build_pairs(out, settings(docs, tiny_llama, overwrite=overwrite))
    assert [p.name for p in out.iterdir()] == ["data.txt"]


def test_bad_inputs_fail_early(tmp_path, tiny_llama):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(InputError, match="holds no texts"):
        build_pairs(tmp_path / "o1", settings(empty, tiny_llama))
    short = tmp_path / "short.txt"
    short.write_text("tiny doc\nanother one\n")
    with pytest.raises(InputError, match="no document yields a passage of at least 5 words"):
        build_pairs(tmp_path / "o2", settings(short, tiny_llama))
    docs = write_docs(tmp_path / "docs.jsonl", n=2)
    with pytest.raises(InputError, match="the dev split has no document"):
        build_pairs(tmp_path / "o3", settings(docs, tiny_llama, dev_fraction=0.01))
    with pytest.raises(ConfigError, match="--templates: unknown poem"):
        build_pairs(tmp_path / "o4", settings(docs, tiny_llama, templates=("poem",)))
    with pytest.raises(ConfigError, match="--backend llama.cpp needs a .gguf"):
        build_pairs(tmp_path / "o5", settings(docs, tiny_llama, backend="llama.cpp"))
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 6))  # nothing written


def test_unparsable_generations_are_counted_never_written(tmp_path, tiny_llama, one_thread):
    docs = write_docs(tmp_path / "docs.jsonl")
    # a random tiny model never ends a question with "?" in 8 tokens: every query is dropped and counted
    with pytest.warns(UserWarning, match="generated queries were dropped"):
        m = build_pairs(
            tmp_path / "out", settings(docs, tiny_llama, templates=("question",), dev_fraction=0.0)
        )
    c = m["counts"]
    assert c["kept"] == 0 and sum(c["dropped"].values()) == c["generated"] > 0
    tasks = {json.loads(x)["task"] for x in (tmp_path / "out" / "train.jsonl").read_text().splitlines()}
    assert "question" not in tasks


# ------------------------------------------------------------------ CLI and the wiki split
def test_cli_end_to_end(tmp_path, tiny_llama):
    from typer.testing import CliRunner

    from decoder2vec.cli import app

    docs = write_docs(tmp_path / "docs.jsonl")
    args = ["pairs", str(docs), "--out", str(tmp_path / "out"), "--generator", str(tiny_llama),
            "--chunk-size", "160", "--min-passage-words", "5", "--max-new-tokens", "6", "--min-query-words", "1",
            "--round-trip-k", "8", "--seed", "3", "--dev-fraction", "0.3", "--threads", "1",
            "--structural", "title,first_sentence,neighbour,title_document", "--keep-short", "--templates", "keywords"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["complete"] and manifest["models"]["generator"]["sha256"]
    assert "title_document" in manifest["counts"]["pairs"]
    qrels = (tmp_path / "out" / "dev" / "qrels" / "dev.tsv").read_text().splitlines()
    assert qrels[0] == "query-id\tcorpus-id\tscore" and len(qrels) - 1 == manifest["counts"]["dev"]["queries"]
    from decoder2vec.training.data.pairs import read_pairs

    assert len(read_pairs(tmp_path / "out" / "train.jsonl", 0)) == sum(
        manifest["counts"]["train_pairs"].values()
    )
    bad = CliRunner().invoke(app, ["pairs", str(docs), "--out", str(tmp_path / "o2"), "--margin", "2"])
    assert bad.exit_code == 1 and "--margin must be in (0, 1]" in bad.output


def test_wiki_split_is_by_title_and_leaves_simcse_source_alone():
    from decoder2vec.training.data.corpus import CorpusError, wiki_articles, wiki_leads, wiki_split_of

    try:
        every = wiki_leads(split="all")
    except CorpusError:
        pytest.skip("the offline Wikipedia package is not installed")
    train, heldout = wiki_leads(split="train"), wiki_leads(split="heldout")
    assert len(train) + len(heldout) == len(every) and not {t for t, _ in train} & {t for t, _ in heldout}
    assert 0.18 < len(heldout) / len(every) < 0.22
    assert all(wiki_split_of(t) == "heldout" for t, _ in heldout)
    assert [x for _, x in every] == wiki_articles()  # SimCSE/MNTP's `wiki` still reads every lead
