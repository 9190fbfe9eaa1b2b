"""What `decoder2vec convert --config retrieval --corpus CORPUS` costs before any training: the input check, the
data engine's passages and prompts, and the generation rate of the recipe's own prompts (both templates).

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/retrieval_recipe_cost.py --corpus wiki --sample 8

The generation estimate is prompts / measured queries per second on this machine (CPU, fp32 unless a GPU is
there); the supervised stage's 600 steps and MNTP/SimCSE (cpu-2h: about 25 minutes) come on top.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from common import write_results

from decoder2vec.pairs.generate import load_generator, messages
from decoder2vec.pairs.pipeline import in_dev, settings_passages
from decoder2vec.pairs.sources import read_documents
from decoder2vec.training.config import load_pipeline
from decoder2vec.training.pipeline import check_inputs, pairs_settings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpus", nargs="+", default=["wiki"])
    parser.add_argument("--recipe", default="retrieval")
    parser.add_argument(
        "--sample", type=int, default=8, help="Passages whose prompts are generated and timed."
    )
    args = parser.parse_args()

    cfg = load_pipeline(args.recipe, args.corpus)
    start = time.perf_counter()
    check_inputs(cfg)
    check_seconds = time.perf_counter() - start
    s = pairs_settings(cfg)
    docs = read_documents(
        s.sources, text_field=s.text_field, title_field=s.title_field, id_field=s.id_field
    ).docs
    passages, _ = settings_passages(docs, s)
    dev = np.array([in_dev(d.id, s.seed, s.dev_fraction) for d in docs])
    prompts = len(passages) * len(s.templates) * s.queries_per_passage

    generator = load_generator(
        s.generator,
        s.backend,
        threads=torch.get_num_threads(),
        batch_size=s.generation_batch_size,
        max_new_tokens=s.max_new_tokens,
        device=s.device,
    )
    sample = passages[:: max(1, len(passages) // args.sample)][: args.sample]
    jobs = [messages(t, p.text) for p in sample for t in s.templates]
    start = time.perf_counter()
    generator.generate(jobs, seed=0, temperature=s.temperature)
    rate = len(jobs) / (time.perf_counter() - start)

    row = {
        "recipe": args.recipe,
        "corpus": args.corpus,
        "threads": torch.get_num_threads(),
        "check_inputs_seconds": round(check_seconds, 1),
        "documents": len(docs),
        "passages": len(passages),
        "dev_documents": int(dev.sum()),
        "dev_passages": int(dev[[p.doc for p in passages]].sum()),
        "prompts": prompts,
        "timed_prompts": len(jobs),
        "queries_per_second": round(rate, 3),
        "generation_hours": round(prompts / rate / 3600, 1),
    }
    for key, value in row.items():
        print(f"{key:22s} {value}")
    write_results("retrieval_recipe_cost", row)


if __name__ == "__main__":
    main()
