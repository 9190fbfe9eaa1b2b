"""Unsupervised post-processing of an encoder's embeddings: does a linear map fitted on the training corpus
alone lift STS?

    python bench/postprocess.py [MODEL] [--sentences 4000] [--threads 2]

Embeds ``--sentences`` random sentences of the offline Wikipedia corpus (no labels), fits their mean and
covariance, and scores STS-B dev and SICK trial (the sets choices are made on; Spearman x100 of cosine
similarity) after each map: centring; removing the top-k principal directions ("all-but-the-top", Mu &
Viswanath 2018); whitening onto the top-k principal directions (BERT-whitening, Su et al. 2021).
Writes bench/results/postprocess.json.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from common import SHARED, write_results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="smollm2-135m-llm2vec")
    parser.add_argument("--sentences", type=int, default=4000, help="corpus sentences to fit the maps on")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()

    from decoder2vec import Encoder
    from decoder2vec.evaluation.loaders import load_sick, load_stsb
    from decoder2vec.evaluation.metrics import sts_scores
    from decoder2vec.training.data.corpus import read_sentences

    torch.set_num_threads(args.threads)
    encoder = Encoder.from_pretrained(args.model)
    corpus = read_sentences("wiki")
    picked = np.random.default_rng(0).choice(len(corpus), min(args.sentences, len(corpus)), replace=False)
    fit = encoder.encode([corpus[i] for i in picked], batch_size=64).astype(np.float64)
    sets = {
        "STS-B dev": load_stsb(SHARED / "stsbenchmark" / "sts-dev.csv"),
        "SICK trial": load_sick(SHARED / "sick2014" / "SICK_trial.txt"),
    }
    pairs = {
        name: (
            encoder.encode(d.sentences1, batch_size=64),
            encoder.encode(d.sentences2, batch_size=64),
            d.scores,
        )
        for name, d in sets.items()
    }

    mean = fit.mean(0)
    # principal directions of the corpus embeddings, largest variance first
    u, s, _ = np.linalg.svd(np.cov((fit - mean).T))
    maps = {"none": lambda x: x, "centre": lambda x: x - mean}
    for k in (1, 3, 5, 10):
        top = u[:, :k]
        maps[f"all-but-the-top {k}"] = lambda x, top=top: (x - mean) - (x - mean) @ top @ top.T
    for k in (128, 256, 384, fit.shape[1]):
        w = u[:, :k] / np.sqrt(s[:k])
        maps[f"whiten {k}"] = lambda x, w=w: (x - mean) @ w

    rows = []
    for name, f in maps.items():
        row = {"map": name}
        for task, (a, b, gold) in pairs.items():
            mapped = sts_scores(f(a.astype(np.float64)), f(b.astype(np.float64)), gold)
            row[task] = round(mapped["cosine_spearman"], 2)
        print(json.dumps(row), flush=True)
        rows.append(row)
    payload = {"model": args.model, "sentences": len(fit), "rows": rows}
    print(f"wrote {write_results('postprocess', payload)}")


if __name__ == "__main__":
    main()
