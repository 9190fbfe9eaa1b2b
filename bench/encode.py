"""Encoding throughput of decoder2vec vs sentence-transformers vs a naive loop, side by side.

    python bench/encode.py [--sentences 1000] [--documents 96] [--batch-size 32]
    python bench/encode.py --paths ...   the CPU inference paths (fp32, int8, bf16, ONNX): bench/cpu_paths.py

All three run the same bidirectional SmolLM2-135M folder, fp32, in this one process, so their
ratios are comparable even on a noisy shared machine. Also reports the fraction of this CPU's
fp32 matmul ceiling (measured in the same run) that each reaches on real (non-padding) tokens.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import forward_flops, matmul_ceiling_gflops, mixed_documents, sts_sentences, timed, write_results


def naive_encode(model, tokenizer, texts: list[str], batch_size: int, max_length: int) -> torch.Tensor:
    """The loop people write first: input order, fixed batches, tokenizer padding, masked mean."""
    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                texts[start : start + batch_size],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).float()
            out.append((hidden * mask).sum(1) / mask.sum(1))
    return torch.cat(out)


def main() -> None:
    if "--paths" in sys.argv:
        from cpu_paths import cli

        return cli(sys.argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=1000)
    parser.add_argument("--documents", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    from sentence_transformers import SentenceTransformer

    from decoder2vec import Encoder

    encoder = Encoder.from_pretrained("smollm2-135m")
    tokenizer = encoder.tokenizer
    datasets = {
        "STS-B sentences": sts_sentences(args.sentences),
        "mixed documents": mixed_documents(args.documents),
    }
    with tempfile.TemporaryDirectory() as tmp:
        encoder.save(Path(tmp) / "enc")
        st = SentenceTransformer(str(Path(tmp) / "enc"), device="cpu")

    ceiling_before = matmul_ceiling_gflops()
    rows, results, flops_by_data = [], {}, {}
    for name, texts in datasets.items():
        lengths = [
            len(ids)
            for ids in tokenizer(
                texts, add_special_tokens=True, truncation=True, max_length=encoder.max_length
            )["input_ids"]
        ]
        flops = forward_flops(encoder.model.config, lengths)
        tokens = sum(lengths)
        encoder.encode(texts[:8])  # warm-up
        systems = {
            "decoder2vec": lambda texts=texts: encoder.encode(texts, batch_size=args.batch_size),
            "sentence-transformers": lambda texts=texts: st.encode(texts, batch_size=args.batch_size),
            "naive loop": lambda texts=texts: naive_encode(
                encoder.model, tokenizer, texts, args.batch_size, encoder.max_length
            ),
        }
        results[name] = {
            "texts": len(texts),
            "tokens": tokens,
            "seconds": {s: timed(fn)[0] for s, fn in systems.items()},
        }
        flops_by_data[name] = flops
    # The ceiling is taken before and after, and the higher one used: a conservative fraction.
    ceiling = max(ceiling_before, matmul_ceiling_gflops())
    for name, result in results.items():
        result["ceiling_gflops"] = ceiling
        seconds = result["seconds"]
        for system, secs in seconds.items():
            fraction = flops_by_data[name] / secs / 1e9 / ceiling
            rows.append((name, system, result["tokens"] / secs, secs / seconds["decoder2vec"], fraction))
            result[f"{system} fraction_of_ceiling"] = fraction

    print(
        f"fp32 matmul ceiling (2048x2048, best of 5, before/after: max): {ceiling:.1f} GFLOP/s, torch threads: {torch.get_num_threads()}"
    )
    print(f"{'data':<18} {'system':<22} {'tokens/s':>10} {'decoder2vec speed-up':>21} {'of ceiling':>11}")
    for name, system, tps, speedup, fraction in rows:
        print(f"{name:<18} {system:<22} {tps:>10.0f} {speedup:>20.2f}x {fraction:>10.0%}")
    print(f"wrote {write_results('encode', results)}")


if __name__ == "__main__":
    main()
