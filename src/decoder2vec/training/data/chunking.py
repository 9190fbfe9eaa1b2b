"""MNTP data: tokenize documents, concatenate them, and cut the stream into fixed-length blocks.

Same scheme as ``run_mlm.py`` (LLM2Vec's MNTP script): documents are joined (here with an eos between
them so boundaries stay visible) and the remainder that does not fill a whole block is dropped.
"""

from __future__ import annotations

import torch

from decoder2vec.training.errors import CorpusError


def tokenize_documents(tokenizer, texts: list[str], batch_size: int = 1000) -> list[list[int]]:
    """Token ids per document with the tokenizer's own special tokens (e.g. BOS) and a closing eos."""
    eos = tokenizer.eos_token_id
    docs: list[list[int]] = []
    for start in range(0, len(texts), batch_size):
        for ids in tokenizer(texts[start : start + batch_size], add_special_tokens=True)["input_ids"]:
            ids = list(ids)
            if eos is not None and (not ids or ids[-1] != eos):
                ids.append(eos)
            docs.append(ids)
    return docs


def chunk_blocks(docs: list[list[int]], block_size: int) -> torch.Tensor:
    """(N, block_size) blocks of the concatenated stream; the partial tail is dropped.

    If the whole corpus is shorter than one block, the single (shorter) block is kept.
    """
    if block_size < 2:
        raise CorpusError(f"max_seq_length must be at least 2, got {block_size}")
    stream = [t for doc in docs for t in doc]
    if len(stream) < 2:
        raise CorpusError(
            f"the corpus has {len(stream)} token(s); MNTP needs at least 2 to predict one from another"
        )
    if len(stream) < block_size:
        return torch.tensor([stream], dtype=torch.long)
    n = len(stream) // block_size
    return torch.tensor(stream[: n * block_size], dtype=torch.long).view(n, block_size)


def train_eval_split(
    blocks: torch.Tensor, eval_fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hold out a random ``eval_fraction`` of the blocks (at least one when there are two or more)."""
    n = blocks.shape[0]
    n_eval = 0 if n < 2 or eval_fraction <= 0 else max(1, round(n * eval_fraction))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return blocks[order[n_eval:].sort().values], blocks[order[:n_eval].sort().values]
