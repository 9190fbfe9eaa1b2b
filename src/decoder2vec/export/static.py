"""Distil an encoder into a static token-embedding model (model2vec / sentence-transformers ``StaticEmbedding``).

A static model embeds a text as the mean of one vector per token: no attention, no layers, so it runs
100x+ faster than the transformer on a CPU. The vectors come from the encoder itself, in two steps:

1. **distil** (model2vec's recipe): every vocabulary token is embedded *by the encoder's own* ``encode``
   path -- its special-token frame (BOS/EOS), instruction (attended to, not pooled), bidirectional
   attention, pooling and projection -- so the token vectors live in the encoder's output space. They are
   then PCA-rotated (and cut to ``dims``) and each is scaled by a smooth inverse frequency (SIF) weight
   ``a / (a + p(token))``, so frequent, content-free tokens count little in the mean.
2. **context** (optional, mean-pooling encoders): a corpus of Wikipedia texts goes through the encoder once;
   each token's output-space states at its occurrences are averaged (an embedding *is* the mean of these
   states under mean pooling), shrunk towards the token's one-token vector, and then PCA + SIF as above.
3. **tune** (tokenlearn's recipe, optional): a corpus is embedded by the encoder, its embeddings are
   PCA-reduced to the static width, and the token table (plus a per-token weight and a linear read-out) is
   trained so that the weighted mean of a text's token vectors predicts its encoder embedding (MSE). The
   tokenlearn package itself needs ``model2vec[distill]``, which pins transformers < 5.4; its two steps are
   small enough to run here, through ``Encoder.encode`` and a plain torch loop.

The folder written is model2vec's layout (``model.safetensors`` with ``embeddings``, ``tokenizer.json``,
``config.json``, ``modules.json``), which ``model2vec.StaticModel.from_pretrained``,
``SentenceTransformer`` (``StaticEmbedding``) and ``decoder2vec.Encoder.from_pretrained`` all load; plus
``decoder2vec_static.json`` recording how it was made.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from decoder2vec.errors import OutputExistsError, SettingError
from decoder2vec.io import publish_folder, replace_folder
from decoder2vec.static_format import STATIC_META, is_static_folder, vocab_tokenizer

# Tokens per resumable piece of the vocabulary pass: ~1 min of forwards on two CPU cores.
CHUNK_TOKENS = 4096
# SIF coefficient: model2vec's default is 1e-4; 1e-5 scored higher on STS-B dev and SICK trial (BENCHMARKS.md).
DEFAULT_SIF = 1e-5
METHODS = ("distill", "context", "tokenlearn")
# Pooling modes for which an embedding is a mean of per-token states, so contextual averaging applies.
MEAN_POOLINGS = ("mean",)


@dataclass
class StaticSettings:
    """What ``export static`` was asked for (also recorded in ``decoder2vec_static.json``)."""

    dims: int = 256
    method: str = "distill"
    sif: float | None = DEFAULT_SIF
    instruction: str | None = None
    corpus_texts: int = 2500
    epochs: int = 30
    learning_rate: float = 3e-3
    prior: float = 3.0  # context: one-token vector's weight, in occurrences
    seed: int = 0
    extra: dict = field(default_factory=dict)


def check_static_settings(settings: StaticSettings) -> None:
    """Refuse impossible settings before any model loads (the flag names are the CLI's)."""
    if settings.method not in METHODS:
        raise SettingError(f"--method must be one of {', '.join(METHODS)}, got {settings.method!r}")
    if isinstance(settings.dims, bool) or not isinstance(settings.dims, int) or settings.dims < 2:
        raise SettingError(f"--dims must be an integer >= 2, got {settings.dims!r}")
    if settings.sif is not None and not 0 < settings.sif < 1:
        raise SettingError(f"--sif must be in (0, 1) (or 0 for no weighting), got {settings.sif!r}")
    if settings.corpus_texts < 100:
        raise SettingError(f"--corpus-texts must be at least 100, got {settings.corpus_texts}")
    if settings.epochs < 1:
        raise SettingError(f"--epochs must be at least 1, got {settings.epochs}")
    if settings.instruction is not None and not settings.instruction.strip():
        raise SettingError("--instruction is empty; leave it out for no instruction")


def check_static_out(out: Path, *, overwrite: bool, model: str | Path) -> None:
    """An OUT that exists is refused unless it is a static model this command wrote and ``overwrite`` is
    set; the model folder itself never is (checked before any work)."""
    out = Path(out).expanduser()
    source = Path(str(model)).expanduser()
    if source.exists() and out.exists() and out.resolve() == source.resolve():
        raise OutputExistsError(f"OUT {out} is the input model; choose another folder")
    if out.is_symlink():
        raise OutputExistsError(f"OUT {out} is a symbolic link; pass the real folder")
    if not out.exists():
        return
    if not out.is_dir():
        raise OutputExistsError(f"OUT {out} exists and is not a folder")
    if not any(out.iterdir()):
        return
    if not (out / STATIC_META).is_file():
        raise OutputExistsError(
            f"OUT {out} exists and holds no static model written by decoder2vec; choose a new folder"
        )
    if not overwrite:
        raise OutputExistsError(f"OUT {out} already holds a static model; pass --overwrite to replace it")


# ------------------------------------------------------------------ step 1: the encoder's token vectors
def token_vectors(
    encoder,
    vocab_size: int,
    *,
    instruction: str | None = None,
    batch_size: int = 512,
    work: Path | None = None,
    log: Callable[[str], None] = print,
) -> np.ndarray:
    """(vocab_size, width) float32: row t is ``encoder``'s embedding of the one-token text ``[t]``, built as
    any text is (prefix specials, instruction, EOS), forwarded and pooled by the encoder's own path.

    With ``work``, finished pieces of CHUNK_TOKENS rows are kept there, so an interrupted run resumes."""
    if work is not None:
        work.mkdir(parents=True, exist_ok=True)
    rows = np.zeros((vocab_size, encoder.embedding_dim), dtype=np.float32)
    for start in range(0, vocab_size, CHUNK_TOKENS):
        stop = min(start + CHUNK_TOKENS, vocab_size)
        piece = None if work is None else work / f"tokens-{start:06d}-{stop:06d}.npy"
        if piece is not None and piece.is_file():
            rows[start:stop] = np.load(piece, allow_pickle=False)
            continue
        sequences = encoder.builder.build_from_ids([[t] for t in range(start, stop)], instruction)
        for index in encoder.sorted_batches(sequences, batch_size):
            rows[start + index] = encoder.forward_sequences([sequences[i] for i in index]).numpy()
        if piece is not None:
            tmp = piece.with_suffix(".tmp.npy")
            np.save(tmp, rows[start:stop])
            tmp.replace(piece)
        log(f"token vectors: {stop}/{vocab_size}")
    return rows


def pca_fit(x: np.ndarray, dims: int) -> tuple[np.ndarray, np.ndarray]:
    """``(mean, components)`` of ``x``'s principal axes, largest variance first, ``dims`` of them (at most the
    width). Eigenvectors of the covariance in float64; each axis's sign is fixed so that its largest
    projection is positive (as sklearn's ``svd_flip`` and model2vec do), so the result is deterministic."""
    x = np.asarray(x, dtype=np.float64)
    mean = x.mean(axis=0)
    centered = x - mean
    _, eigvecs = np.linalg.eigh(centered.T @ centered / max(1, len(x) - 1))
    components = eigvecs[:, ::-1][:, : min(dims, x.shape[1])].T
    scores = centered @ components.T
    signs = np.sign(scores[np.abs(scores).argmax(axis=0), np.arange(len(components))])
    return mean, components * np.where(signs == 0, 1, signs)[:, None]


def pca_transform(x: np.ndarray, mean: np.ndarray, components: np.ndarray) -> np.ndarray:
    return ((np.asarray(x, dtype=np.float64) - mean) @ components.T).astype(np.float32)


def zipf_probabilities(n: int) -> np.ndarray:
    """model2vec's frequency estimate when there is no corpus: p(rank r) proportional to 1/(r+2), with token
    ids as ranks (BPE merges frequent pairs first, so low ids are frequent)."""
    inverse = 1.0 / np.arange(2, n + 2)
    return inverse / inverse.sum()


def sif_weights(probabilities: np.ndarray, sif: float | None) -> np.ndarray:
    """Smooth inverse frequency ``a / (a + p)`` (Arora et al. 2017); all ones without ``sif``."""
    if sif is None:
        return np.ones(len(probabilities), dtype=np.float32)
    return (sif / (sif + probabilities)).astype(np.float32)


def distill_vectors(raw: np.ndarray, dims: int, sif: float | None) -> np.ndarray:
    """model2vec's post-processing of the raw token vectors: PCA to ``dims``, then SIF (Zipf) weights."""
    mean, components = pca_fit(raw, dims)
    return pca_transform(raw, mean, components) * sif_weights(zipf_probabilities(len(raw)), sif)[:, None]


# ------------------------------------------------------------------ a corpus through the encoder
def corpus_features(
    encoder,
    texts: list[str],
    vocab_size: int,
    *,
    instruction: str | None = None,
    batch_size: int = 64,
    log: Callable[[str], None] = print,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One pass of the encoder over ``texts``: ``(targets, sums, counts)``.

    ``targets`` (n, width) are the texts' embeddings, as ``encode`` gives them (tokenlearn's targets).
    ``sums`` (vocab_size, width) and ``counts`` (vocab_size,) add up, per token id, the encoder's output-space
    state (projected, when there is a projection) at each of the token's occurrences in the texts: with mean
    pooling an embedding *is* the mean of these states, so their per-token average is the static vector that
    best reproduces it (contextual averaging), where a one-token forward sees the token out of context."""
    from decoder2vec.encoding.pooling import pool
    from decoder2vec.encoding.tokenization import expand_instruction

    builder = encoder.builder
    sequences = builder.build(list(texts), expand_instruction(instruction, len(texts)))
    width = encoder.embedding_dim
    targets = np.zeros((len(texts), width), dtype=np.float32)
    sums = np.zeros((vocab_size, width), dtype=np.float64)
    counts = np.zeros(vocab_size, dtype=np.int64)
    tail = len(builder.suffix) + (1 if encoder.append_eos else 0)
    done = 0
    for index in encoder.sorted_batches(sequences, batch_size):
        batch_sequences = [sequences[i] for i in index]
        batch = builder.collate(batch_sequences, "right")
        hidden = encoder.token_states(batch)
        with torch.inference_mode():
            on = batch.to(hidden.device)
            pooled = pool(hidden, on.pool_mask, on.attention_mask, encoder.pooling)
            targets[index] = encoder.module.project(pooled).float().cpu().numpy()
            states = encoder.module.project(hidden.float()).float().cpu().numpy()
        for row, sequence in enumerate(batch_sequences):
            # the text's own tokens: after the prefix specials and instruction, before EOS and suffix
            start, stop = max(sequence.n_unpooled, len(builder.prefix)), len(sequence.ids) - tail
            ids = np.asarray(sequence.ids[start:stop])
            ids = ids[ids < vocab_size]
            np.add.at(sums, ids, states[row, start : start + len(ids)])
            np.add.at(counts, ids, 1)
        done += len(index)
        if done // 500 != (done - len(index)) // 500:
            log(f"corpus: {done}/{len(texts)} texts")
    return targets, sums, counts


def context_vectors(raw: np.ndarray, sums: np.ndarray, counts: np.ndarray, prior: float = 1.0) -> np.ndarray:
    """Per token, the mean of its in-context states, shrunk towards its one-token vector: ``(sum + prior * raw)
    / (count + prior)``; tokens never seen in the corpus keep their one-token vector."""
    return ((sums + prior * raw) / (counts[:, None] + prior)).astype(np.float32)


# ------------------------------------------------------------------ step 2: tokenlearn
def static_token_ids(tokenizer, texts: list[str], max_tokens: int = 512) -> list[list[int]]:
    """Token ids as a static model sees them: no special tokens (model2vec and StaticEmbedding add none)."""
    return [e.ids[:max_tokens] for e in tokenizer.encode_batch_fast(texts, add_special_tokens=False)]


def tokenlearn_train(
    vectors: np.ndarray,
    ids: list[list[int]],
    targets: np.ndarray,
    *,
    epochs: int = 3,
    learning_rate: float = 1e-3,
    batch_size: int = 256,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> np.ndarray:
    """Train the token table so that the weighted mean of a text's rows, through a linear read-out, predicts
    its target (tokenlearn's StaticModelFineTuner, MSE). Returns the new table with each row scaled by its
    learnt weight, so a plain mean (what model2vec computes) gives the trained model's embedding.

    The last tenth of the texts is held out; the table from the epoch with the lowest held-out loss is kept."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    table = torch.tensor(vectors, dtype=torch.float32)
    norms = table.norm(dim=1).clamp_min(1e-8)
    embedding = torch.nn.Embedding.from_pretrained(table / norms[:, None], freeze=False)
    weight = torch.nn.Parameter(norms.clone())
    readout = torch.nn.Linear(table.shape[1], targets.shape[1])
    params = [*embedding.parameters(), weight, *readout.parameters()]
    optimizer = torch.optim.AdamW(params, lr=learning_rate)
    y = torch.tensor(targets, dtype=torch.float32)
    n_val = max(1, len(ids) // 10)
    train_rows, val_rows = np.arange(len(ids) - n_val), np.arange(len(ids) - n_val, len(ids))

    def mean_rows(rows: np.ndarray) -> torch.Tensor:
        flat = torch.tensor([t for r in rows for t in ids[r]], dtype=torch.long)
        lengths = torch.tensor([len(ids[r]) for r in rows], dtype=torch.float32)
        per_token = embedding(flat) * weight[flat][:, None]
        sums = torch.zeros(len(rows), table.shape[1]).index_add_(
            0, torch.repeat_interleave(torch.arange(len(rows)), lengths.long()), per_token
        )
        return sums / lengths.clamp_min(1)[:, None]

    def val_loss() -> float:
        with torch.no_grad():
            return float(torch.nn.functional.mse_loss(readout(mean_rows(val_rows)), y[val_rows]))

    best = (val_loss(), (embedding.weight.detach().clone(), weight.detach().clone()))
    log(f"tokenlearn: held-out MSE before training {best[0]:.5f}")
    for epoch in range(epochs):
        order = train_rows[torch.randperm(len(train_rows), generator=generator).numpy()]
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            loss = torch.nn.functional.mse_loss(readout(mean_rows(rows)), y[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        current = val_loss()
        log(f"tokenlearn: epoch {epoch + 1}/{epochs}, held-out MSE {current:.5f}")
        if current < best[0]:
            best = (current, (embedding.weight.detach().clone(), weight.detach().clone()))
    table, weights = best[1]
    return (table * weights[:, None]).numpy().astype(np.float32)


def corpus_texts(limit: int, seed: int = 0) -> list[str]:
    """The tokenlearn corpus: offline Wikipedia leads (``extract`` only) and their sentences, shuffled,
    ``limit`` of them; nine tenths sentences (STS-like lengths), a tenth whole leads (passages)."""
    from decoder2vec.training.data.corpus import split_sentences, wiki_articles

    leads = wiki_articles()
    sentences = [s for lead in leads for s in split_sentences(lead)]
    rng = np.random.default_rng(seed)
    passages = limit // 10
    picked = [sentences[i] for i in rng.permutation(len(sentences))[: limit - passages]]
    picked += [leads[i] for i in rng.permutation(len(leads))[:passages]]
    return [picked[i] for i in rng.permutation(len(picked))]


# ------------------------------------------------------------------ the whole export
def work_folder(out: Path, fingerprint: str) -> Path:
    """Where an interrupted export keeps its finished pieces: beside OUT, named by what it computes."""
    out = Path(out).expanduser()
    return out.parent / f".{out.name}.static-work-{fingerprint}"


def fingerprint(model_path: str, settings: dict) -> str:
    return hashlib.sha256(json.dumps([model_path, settings], sort_keys=True).encode()).hexdigest()[:12]


def export_static(
    encoder,
    out: Path,
    settings: StaticSettings,
    *,
    model_name: str,
    overwrite: bool = False,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Distil ``encoder`` into a static model folder at ``out`` (see the module doc); returns ``out``."""
    log = log or (lambda message: print(message, file=sys.stderr))
    check_static_settings(settings)
    check_static_out(out, overwrite=overwrite, model=model_name)
    tokenizer = vocab_tokenizer(encoder.tokenizer)
    vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    model_path = str(getattr(encoder.model.config, "_name_or_path", model_name))
    vocab_settings = {
        "instruction": settings.instruction,
        "pooling": encoder.pooling,
        "append_eos": encoder.append_eos,
        "bidirectional": encoder.bidirectional,
        "embedding_dim": encoder.embedding_dim,
    }
    if settings.method == "context" and encoder.pooling not in MEAN_POOLINGS:
        raise SettingError(
            f"--method context needs mean pooling (an embedding that is a mean of token states); this encoder "
            f"pools by {encoder.pooling}: use distill or tokenlearn"
        )
    work = work_folder(out, fingerprint(model_path, vocab_settings))
    raw = token_vectors(encoder, vocab_size, instruction=settings.instruction, work=work / "vocab", log=log)
    report: dict = {}
    if settings.method != "distill":
        texts = corpus_texts(settings.corpus_texts, settings.seed)
        feature_file = work / f"corpus-{settings.corpus_texts}-{settings.seed}.npz"
        if feature_file.is_file():  # a resumed run: the corpus pass is done
            with np.load(feature_file, allow_pickle=False) as saved:
                targets, sums, counts = saved["targets"], saved["sums"], saved["counts"]
        else:
            log(f"corpus: embedding {len(texts)} Wikipedia texts with the encoder")
            targets, sums, counts = corpus_features(
                encoder, texts, vocab_size, instruction=settings.instruction, log=log
            )
            np.savez(work / "corpus.tmp.npz", targets=targets, sums=sums, counts=counts)
            (work / "corpus.tmp.npz").replace(feature_file)
        report["corpus_texts"] = len(texts)
        report["tokens_seen_in_context"] = int((counts > 0).sum())
        if (
            settings.method == "context"
        ):  # (as tokenlearn's start it scored lower on STS-B dev: BENCHMARKS.md)
            raw = context_vectors(raw, sums, counts, settings.prior)
    vectors = distill_vectors(raw, settings.dims, settings.sif)
    if settings.method == "tokenlearn":
        mean, components = pca_fit(targets, vectors.shape[1])
        vectors = tokenlearn_train(
            vectors,
            static_token_ids(tokenizer, texts),
            pca_transform(targets, mean, components),
            epochs=settings.epochs,
            learning_rate=settings.learning_rate,
            seed=settings.seed,
            log=log,
        )
    meta = {
        "made_by": "decoder2vec export static",
        "teacher": model_name,
        "teacher_settings": vocab_settings,
        "method": settings.method,
        "dims": int(vectors.shape[1]),
        "sif": settings.sif,
        "instruction": settings.instruction,
        "epochs": settings.epochs if settings.method == "tokenlearn" else None,
        "prior": settings.prior if settings.method != "distill" else None,
        "seed": settings.seed,
        **report,
    }
    write_static(out, vectors, tokenizer, meta, overwrite=overwrite)
    shutil.rmtree(work, ignore_errors=True)
    return Path(out).expanduser()


def write_static(out: Path, vectors: np.ndarray, tokenizer, meta: dict, *, overwrite: bool = False) -> None:
    """Write the model2vec folder atomically: built beside ``out``, then renamed into place (an existing
    static model is swapped out only with ``overwrite``; it was checked before any work)."""
    from decoder2vec.static_format import write_static_files

    out = Path(out).expanduser()

    def build(folder: Path) -> None:
        write_static_files(folder, vectors, tokenizer, meta)

    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        if out.is_dir():
            out.rmdir()  # an empty folder the user made: publish_folder renames onto the name
        publish_folder(out, build)
        return
    if not overwrite or not is_static_folder(out):
        raise OutputExistsError(f"OUT {out} exists; pass --overwrite to replace a static model")
    replace_folder(out, build)


__all__ = [
    "METHODS",
    "StaticSettings",
    "check_static_out",
    "check_static_settings",
    "distill_vectors",
    "export_static",
    "pca_fit",
    "sif_weights",
    "token_vectors",
    "tokenlearn_train",
]
