"""Synthetic-query generation speed of SmolLM2-135M-Instruct: transformers vs llama.cpp, 1 and 2 threads.

    OMP_NUM_THREADS=2 PYTHONPATH=src python bench/pairs_generation.py --passages 24

Each backend generates one question for the same wiki-train passages (the prompts of `decoder2vec pairs`,
its filters counting what would be kept); queries/s are measured side by side in one run.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

from common import write_results

from decoder2vec.pairs.filters import filter_generated
from decoder2vec.pairs.generate import load_generator, messages
from decoder2vec.pairs.passages import Passage
from decoder2vec.training.data.corpus import wiki_leads


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--passages", type=int, default=24)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--backends", nargs="+", default=["transformers", "llama.cpp"])
    args = parser.parse_args()
    leads = wiki_leads(split="train")[:: 8002 // args.passages][: args.passages]
    passages = [Passage(i, 0, text[:600]) for i, (_, text) in enumerate(leads)]
    chats = [messages("question", p.text) for p in passages]
    rows = []
    for backend in args.backends:
        for threads in args.threads:
            gen = load_generator("smollm2-135m", backend, threads=threads, batch_size=16, max_new_tokens=48)
            start = time.perf_counter()
            raw = gen.generate(chats, seed=0, temperature=0.5)
            seconds = time.perf_counter() - start
            drops = Counter()
            records = [{"passage": i, "template": "question", "raw": r} for i, r in enumerate(raw)]
            kept = filter_generated(records, passages, min_words=3, max_words=32, copy_words=8, drops=drops)
            rows.append(
                {
                    "backend": backend,
                    "threads": threads,
                    "queries": len(raw),
                    "seconds": round(seconds, 1),
                    "queries_per_s": round(len(raw) / seconds, 3),
                    "kept": len(kept),
                    "dropped": dict(drops),
                    "examples": raw[:5],
                }
            )
            print(
                f"{backend:13s} threads={threads} {len(raw) / seconds:6.3f} q/s kept {len(kept)}/{len(raw)}"
            )
            del gen
    write_results("pairs_generation", {"passages": args.passages, "rows": rows})


if __name__ == "__main__":
    main()
