"""Linear probes on frozen token representations (LLM2Vec §3.3, word-level tasks).

A word's representation is the mean of its sub-word tokens' hidden states at one layer. With
``next_token=True`` each token position is shifted back by one, so word i is read from the states just
before its tokens: an MNTP-trained model predicts token t from position t-1, so that is where it keeps
what it knows about token t.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score

from decoder2vec.encoding.tokenization import special_token_frame
from decoder2vec.probing.corpora import TaggedSentence


def _word_spans(words: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    text, spans, pos = [], [], 0
    for i, w in enumerate(words):
        if i:
            text.append(" ")
            pos += 1
        spans.append((pos, pos + len(w)))
        text.append(w)
        pos += len(w)
    return "".join(text), spans


def word_features(
    encoder: Any,
    sentences: Sequence[TaggedSentence],
    *,
    layer: int = -1,
    next_token: bool = False,
    batch_size: int = 16,
) -> tuple[np.ndarray, list[str], int]:
    """One vector per word (mean over its sub-word states), its tag, and how many words were dropped.

    A word is dropped when truncation cut it off, or, with ``next_token``, when nothing precedes it (a
    tokenizer without BOS has no position before the first word).
    """
    n_special = len(special_token_frame(encoder.tokenizer)[0])
    feats: list[np.ndarray] = []
    labels: list[str] = []
    dropped = 0
    for start in range(0, len(sentences), batch_size):
        chunk = sentences[start : start + batch_size]
        texts, spans = zip(*(_word_spans(s.words) for s in chunk), strict=True)
        enc = encoder.tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True)
        batch = encoder.tokenize(list(texts))
        if layer == -1:
            states = encoder.token_states(batch)
        else:
            states = encoder.token_states(batch, all_layers=True)[layer]
        states = states.float().cpu()
        for row, sentence in enumerate(chunk):
            real = torch.nonzero(batch.attention_mask[row]).flatten()
            text_pos = real[n_special:].tolist()
            ids, offsets = enc["input_ids"][row], enc["offset_mapping"][row]
            n_kept = min(len(ids), len(text_pos))
            if batch.input_ids[row, text_pos[:n_kept]].tolist() != list(ids[:n_kept]):
                raise ValueError(
                    "the encoder's tokenization differs from the tokenizer's; cannot align words"
                )
            for (w_start, w_end), tag in zip(spans[row], sentence.tags, strict=True):
                toks = [k for k in range(n_kept) if offsets[k][0] < w_end and offsets[k][1] > w_start]
                positions = [text_pos[k] - (1 if next_token else 0) for k in toks]
                if not toks or (next_token and positions[0] < int(real[0])):
                    dropped += 1
                    continue
                feats.append(states[row, positions].mean(dim=0).numpy())
                labels.append(tag)
    dim = int(states.shape[-1]) if feats else 0
    return (np.stack(feats) if feats else np.zeros((0, dim), dtype=np.float32)), labels, dropped


def probe_scores(y_true: Sequence[str], y_pred: Sequence[str]) -> dict[str, float]:
    """Accuracy and micro-F1 (×100). Micro-F1 leaves out the outside tag ``O`` when the tag set has it (NER,
    chunking), so it measures the tagged words; without ``O`` it equals accuracy."""
    labels = sorted(set(y_true) | set(y_pred))
    scored = [lab for lab in labels if lab != "O"] if "O" in labels else labels
    return {
        "accuracy": 100.0 * float(accuracy_score(y_true, y_pred)),
        "micro_f1": 100.0 * float(f1_score(y_true, y_pred, labels=scored, average="micro", zero_division=0)),
    }


def run_probe(
    encoder: Any,
    train: Sequence[TaggedSentence],
    test: Sequence[TaggedSentence],
    *,
    layer: int = -1,
    next_token: bool = False,
    max_iter: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Fit a logistic-regression probe on ``train`` words and score it on ``test`` words."""
    x_train, y_train, drop_train = word_features(encoder, train, layer=layer, next_token=next_token)
    x_test, y_test, drop_test = word_features(encoder, test, layer=layer, next_token=next_token)
    if len(set(y_train)) < 2:
        raise ValueError("the training data needs at least two distinct tags")
    # standardising keeps lbfgs well conditioned: hidden states of LLMs have a few huge dimensions
    mean, std = x_train.mean(axis=0), x_train.std(axis=0) + 1e-6
    clf = LogisticRegression(max_iter=max_iter, random_state=seed)
    clf.fit((x_train - mean) / std, y_train)
    pred = clf.predict((x_test - mean) / std)
    return {
        **probe_scores(y_test, list(pred)),
        "n_train_words": len(y_train),
        "n_test_words": len(y_test),
        "dropped_words": drop_train + drop_test,
    }
