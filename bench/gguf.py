"""llama.cpp vs decoder2vec on the same texts: tokens/s, parity (cosine) and the STS-B test score.

    python bench/gguf.py [--sentences 400] [--documents 24] [--sts-pairs 0] [--threads N]

Exports the default model (SmolLM2-135M, bidirectional, mean pooling) with ``export_gguf`` as f32,
f16 and q8_0, then in this one run embeds the same STS-B sentences and mixed documents (30-500
tokens) with decoder2vec (torch fp32, ``Encoder.encode``) and with llama.cpp (llama-cpp-python,
loaded with its defaults: attention and pooling come from the file). Parity is the cosine between each
llama.cpp embedding and decoder2vec's (min and median per set). STS-B test Spearman x100 is computed
on ``--sts-pairs`` evenly spread pairs (0 = all 1,379). Both engines use the same number of threads.
Tokens are counted as decoder2vec's tokenizer counts them (identical in llama.cpp: see the parity tests).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

# This script shares its name with the gguf package, and Python puts a script's folder first on sys.path:
# move the folder last, so `import gguf` (in the exporter) finds the package and `import common` still works.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE] + [str(_HERE)]
from common import (
    SHARED,
    mixed_documents,
    spaced_indices,
    sts_sentences,
    sts_spearman,
    timed,
    write_results,
)

OUTTYPES = ("f32", "f16", "q8_0")


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


class LlamaCppEncoder:
    """An exported file in llama.cpp; non-causal attention needs a whole sequence per micro-batch."""

    def __init__(self, path: Path, threads: int, n_ctx: int = 1024) -> None:
        from llama_cpp import Llama

        self.llm = Llama(
            model_path=str(path),
            embedding=True,
            n_ctx=n_ctx,
            n_batch=n_ctx,
            n_ubatch=n_ctx,
            n_threads=threads,
            n_threads_batch=threads,
            verbose=False,
        )

    def encode(self, texts: list[str], **_) -> np.ndarray:
        return np.array(self.llm.embed(texts), dtype=np.float32)

    def close(self) -> None:
        self.llm.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=400)
    parser.add_argument("--documents", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=2, help="timing rounds; the best round counts")
    parser.add_argument(
        "--sts-pairs", type=int, default=0, help="STS-B test pairs to score (0 = all, -1 = skip)"
    )
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from decoder2vec import Encoder
    from decoder2vec.cli_common import quiet_transformers
    from decoder2vec.evaluation.loaders import load_stsb
    from decoder2vec.export.gguf import export_gguf

    quiet_transformers()
    encoder = Encoder.from_pretrained("smollm2-135m")
    sets = {"sentences": sts_sentences(args.sentences), "documents": mixed_documents(args.documents)}
    counts = {
        name: [len(ids) for ids in encoder.tokenizer(texts)["input_ids"]] for name, texts in sets.items()
    }
    # Keep documents inside max_length so both engines see every token (neither truncates).
    keep = [i for i, n in enumerate(counts["documents"]) if n <= encoder.max_length]
    sets["documents"] = [sets["documents"][i] for i in keep]
    counts["documents"] = [counts["documents"][i] for i in keep]
    tokens = {name: sum(c) for name, c in counts.items()}

    with tempfile.TemporaryDirectory() as tmp:
        systems = {"decoder2vec (torch fp32)": encoder}
        for outtype in OUTTYPES:
            result = export_gguf(encoder, Path(tmp) / f"smollm2-{outtype}.gguf", outtype=outtype)
            systems[f"llama.cpp {outtype} ({result.n_bytes / 2**20:.0f} MiB)"] = LlamaCppEncoder(
                result.path, args.threads
            )
        # Rounds interleave the systems, so load from other processes on a shared machine hits all
        # of them alike; each system's best round counts.
        best, embeddings = {}, {}
        for round_ in range(args.rounds):
            for system, engine in systems.items():
                for name, texts in sets.items():
                    seconds, result = timed(
                        lambda engine=engine, texts=texts: engine.encode(texts, batch_size=32)
                    )
                    embeddings[system, name] = np.asarray(result, dtype=np.float32)
                    best[system, name] = min(seconds, best.get((system, name), float("inf")))
                    print(
                        f"round {round_}: {system} {name} {tokens[name] / seconds:.0f} tokens/s", flush=True
                    )
        rows = []
        for (system, name), seconds in best.items():
            row = {"set": name, "system": system, "tokens_per_s": tokens[name] / seconds}
            if not system.startswith("decoder2vec"):
                cos = cosines(embeddings[system, name], embeddings["decoder2vec (torch fp32)", name])
                row |= {"min_cosine": float(cos.min()), "median_cosine": float(np.median(cos))}
            rows.append(row)
        sts = {}
        if args.sts_pairs >= 0:
            stsb = load_stsb(SHARED / "stsbenchmark" / "sts-test.csv")
            sts_indices = spaced_indices(len(stsb.scores), args.sts_pairs or None)
            for system, engine in systems.items():
                # batch 32: Encoder.encode's default, as these figures were taken (llama.cpp ignores it)
                sts[system] = sts_spearman(engine, stsb, sts_indices, batch_size=32)
                print(system, "STS-B", sts[system], flush=True)
        for engine in systems.values():
            if isinstance(engine, LlamaCppEncoder):
                engine.close()

    base = {row["set"]: row["tokens_per_s"] for row in rows if row["system"].startswith("decoder2vec")}
    print(f"\nthreads: {args.threads}; tokens: {tokens}; rounds: {args.rounds}\n")
    print("| set (tokens) | system | tokens/s | vs decoder2vec | min cosine | median cosine |")
    print("|---|---|---:|---:|---:|---:|")
    for row in sorted(rows, key=lambda r: r["set"] != "sentences"):
        cos = f"{row['min_cosine']:.6f} | {row['median_cosine']:.6f}" if "min_cosine" in row else "— | —"
        speed = row["tokens_per_s"] / base[row["set"]]
        name = row["set"]
        print(
            f"| {name} ({tokens[name]}) | {row['system']} | {row['tokens_per_s']:.0f} | {speed:.2f}× | {cos} |"
        )
    if sts:
        print(f"\n| system | STS-B test Spearman ×100 ({len(sts_indices)} pairs) | change |")
        print("|---|---:|---:|")
        ref = sts["decoder2vec (torch fp32)"]
        for system, score in sts.items():
            print(f"| {system} | {score:.2f} | {score - ref:+.2f} |")
    payload = {"args": vars(args), "tokens": tokens, "rows": rows, "stsb_spearman": sts}
    print(f"\nwrote {write_results('gguf', payload)}")


if __name__ == "__main__":
    main()
