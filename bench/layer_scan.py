"""Score an encoder cut to its first k layers: does an earlier layer pool better than the last?

    python bench/layer_scan.py [MODEL ...] [--layers 8 12 16 20 24 27 30] [--pairs 500] [--threads 1]

For each model and k, the decoder keeps layers 0..k-1 (then its final norm, as a model saved with
``num_hidden_layers = k`` would) and is scored with its own pooling on ``--pairs`` evenly spaced pairs of
STS-B dev and all of SICK trial (the sets choices are made on), Spearman x100 of cosine similarity.
Writes bench/results/layer_scan.json.
"""

from __future__ import annotations

import argparse
import json

import torch
from common import SHARED, spaced_indices, sts_spearman, write_results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=["smollm2-135m-llm2vec", "smollm2-135m"])
    parser.add_argument("--layers", type=int, nargs="+", default=[8, 12, 16, 20, 24, 27, 30])
    parser.add_argument("--pairs", type=int, default=500, help="STS-B dev pairs (SICK trial: all 500).")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()

    from decoder2vec import Encoder
    from decoder2vec.evaluation.loaders import load_sick, load_stsb

    torch.set_num_threads(args.threads)
    stsb = load_stsb(SHARED / "stsbenchmark" / "sts-dev.csv")
    sick = load_sick(SHARED / "sick2014" / "SICK_trial.txt")
    stsb_pairs = spaced_indices(len(stsb.scores), args.pairs)
    rows = []
    for model in args.models:
        encoder = Encoder.from_pretrained(model)
        stack = encoder.model.layers  # the decoder's ModuleList of layers
        every = list(stack)
        for k in args.layers:
            stack._modules.clear()
            for i, layer in enumerate(every[:k]):
                stack.add_module(str(i), layer)
            encoder.model.config.num_hidden_layers = k
            row = {
                "model": model,
                "layers": k,
                "STS-B dev": round(sts_spearman(encoder, stsb, stsb_pairs), 2),
                "SICK trial": round(sts_spearman(encoder, sick), 2),
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    print(f"wrote {write_results('layer_scan', {'pairs': args.pairs, 'rows': rows})}")


if __name__ == "__main__":
    main()
