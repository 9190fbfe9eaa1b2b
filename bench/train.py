"""Training throughput of MNTP and SimCSE on the default model, against a measured fp32 matmul ceiling.

    python bench/train.py [--model smollm2-135m] [--steps 5] [--threads N]

Prints a table and writes bench/results/train.json. FLOPs are counted the usual way: training costs
~3x the forward pass (forward + backward w.r.t. activations and weights), and the forward pass costs
2 x (non-embedding parameters) per token plus attention (4 x layers x length x width per token, the
QK^T and AV products over the full bidirectional context) plus the LM head where it runs. With a frozen
base and LoRA the backward skips most weight gradients, so ~3x overstates the work a little: the
"fraction of ceiling" is an upper-bound style utilisation figure, comparable across runs.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def matmul_ceiling(n: int = 2048, reps: int = 5) -> float:
    """Best observed fp32 FLOP/s of an n x n matrix product (the attainable peak for dense math here)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)  # warm-up
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def non_embedding_params(model) -> int:
    embed = model.get_input_embeddings().weight
    return sum(p.numel() for p in model.parameters() if p is not embed)


def forward_flops_per_token(config, non_embed: int, length: int, head_fraction: float = 0.0) -> float:
    attention = 4 * config.num_hidden_layers * length * config.hidden_size
    head = 2 * config.hidden_size * config.vocab_size * head_fraction
    return 2 * non_embed + attention + head


def corpus_texts(limit: int = 2000) -> list[str]:
    from decoder2vec.training.data.corpus import read_texts
    from decoder2vec.training.errors import CorpusError

    try:
        return read_texts("wiki")[:limit]
    except CorpusError:  # the optional corpus package is missing: synthetic but realistic-length text
        return [" ".join(f"word{i % 97} token{j}" for j in range(200)) for i in range(limit)]


def time_steps(step, steps: int) -> float:
    step()  # warm-up (allocations, first-call overheads)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def bench_mntp(model_name: str, batch: int, length: int, steps: int) -> dict:
    from decoder2vec.backbone.loading import load_backbone
    from decoder2vec.training.config import LoraSettings, MNTPConfig
    from decoder2vec.training.data.chunking import chunk_blocks, tokenize_documents
    from decoder2vec.training.masking import resolve_mask_token
    from decoder2vec.training.modules import MNTPModel, add_lora
    from decoder2vec.training.recipes.mntp import Masker

    lm, tok = load_backbone(model_name, with_lm_head=True, dtype="float32", device="cpu")
    non_embed = non_embedding_params(lm.get_decoder())
    blocks = chunk_blocks(tokenize_documents(tok, corpus_texts()), length)[:batch]
    cfg = MNTPConfig()
    masker = Masker(tok, cfg, resolve_mask_token(tok, cfg.mask_token)[0])
    model = MNTPModel(add_lora(lm.get_decoder(), LoraSettings(), seed=0), lm.get_output_embeddings()).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    def step():
        out = model(**masker(blocks))
        out["loss"].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    seconds = time_steps(step, steps)
    tokens = blocks.numel()
    flops = (
        3 * forward_flops_per_token(lm.config, non_embed, length, head_fraction=masker.probability) * tokens
    )
    return {
        "stage": "mntp",
        "batch": blocks.shape[0],
        "length": length,
        "tokens_per_step": tokens,
        "seconds_per_step": seconds,
        "tokens_per_s": tokens / seconds,
        "flops_per_s": flops / seconds,
    }


def bench_simcse(model_name: str, batch: int, length: int, steps: int) -> dict:
    from decoder2vec.backbone.loading import load_backbone
    from decoder2vec.encoding.tokenization import tokenize_batch
    from decoder2vec.training.config import LoraSettings
    from decoder2vec.training.data.collate import concat_batches
    from decoder2vec.training.data.corpus import split_sentences
    from decoder2vec.training.losses import simcse_loss
    from decoder2vec.training.modules import Embedder, add_lora, embed, set_attention_dropout

    base, tok = load_backbone(model_name, dtype="float32", device="cpu")
    non_embed = non_embedding_params(base)
    set_attention_dropout(base, 0.3)
    sentences = [s for t in corpus_texts() for s in split_sentences(t)][:batch]
    one = tokenize_batch(tok, sentences, max_length=length)
    both = concat_batches([one, one], tok.pad_token_id)
    model = Embedder(add_lora(base, LoraSettings(), seed=0)).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    def step():
        a, b = embed(model, both, torch.device("cpu")).chunk(2)
        simcse_loss(a, b).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    seconds = time_steps(step, steps)
    tokens = int(both.attention_mask.sum())  # real tokens only; padding is wasted work, not throughput
    width = both.input_ids.shape[1]
    flops = 3 * forward_flops_per_token(base.config, non_embed, width) * both.input_ids.numel()
    return {
        "stage": "simcse",
        "batch": len(sentences),
        "length": width,
        "tokens_per_step": tokens,
        "padded_tokens_per_step": both.input_ids.numel(),
        "seconds_per_step": seconds,
        "tokens_per_s": tokens / seconds,
        "flops_per_s": flops / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--mntp-batch", type=int, default=4)
    parser.add_argument("--mntp-length", type=int, default=512)
    parser.add_argument("--simcse-batch", type=int, default=32)
    parser.add_argument("--simcse-length", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS / "train.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    ceiling = matmul_ceiling()
    rows = [
        bench_mntp(args.model, args.mntp_batch, args.mntp_length, args.steps),
        bench_simcse(args.model, args.simcse_batch, args.simcse_length, args.steps),
    ]
    for row in rows:
        row["fraction_of_ceiling"] = row["flops_per_s"] / ceiling

    print(f"fp32 matmul ceiling: {ceiling / 1e9:.1f} GFLOP/s ({torch.get_num_threads()} threads)")
    print(
        f"{'stage':<8}{'batch':>7}{'length':>8}{'s/step':>9}{'tokens/s':>11}{'GFLOP/s':>10}{'of ceiling':>12}"
    )
    for r in rows:
        print(
            f"{r['stage']:<8}{r['batch']:>7}{r['length']:>8}{r['seconds_per_step']:>9.2f}{r['tokens_per_s']:>11.0f}"
            f"{r['flops_per_s'] / 1e9:>10.1f}{r['fraction_of_ceiling']:>11.1%}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "model": args.model,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "matmul_ceiling_flops_per_s": ceiling,
        "results": rows,
    }
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
