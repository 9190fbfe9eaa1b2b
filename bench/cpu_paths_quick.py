"""The CPU paths of the shipped encoder interleaved in one process: best of 3 rounds, 200 held-out sentences.

    python bench/cpu_paths_quick.py [--threads 2]

fp32, quantization="int8", dtype=bfloat16, and the ``export onnx`` graphs (fp32, int8) in ONNX Runtime with
the encoder's own tokenization, batching and pooling; rows alternate within each round, so a busy shared
machine slows them alike. Prints seconds, speed-up over fp32 and cosine of each row's vectors to fp32's;
writes bench/results/cpu_paths_quick.json. The full table (documents, memory, STS-B / SICK-R / retrieval,
GEMM ceilings) is ``bench/encode.py --paths``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import write_results
from cpu_paths import ENCODER, onnx_encoder

from decoder2vec import Encoder
from decoder2vec.demo import heldout_pairs
from decoder2vec.export.onnx import ONNX_MODEL, ONNX_QINT8, export_onnx


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    texts = heldout_pairs()[0][:200]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "onnx-export"
        export_onnx(Encoder.from_pretrained(ENCODER), folder, quantize=True)
        rows = {
            "fp32": Encoder.from_pretrained(ENCODER),
            "int8": Encoder.from_pretrained(ENCODER, quantization="int8"),
            "bf16": Encoder.from_pretrained(ENCODER, dtype="bfloat16"),
            "onnx-int8": onnx_encoder(
                Encoder.from_pretrained(ENCODER), folder / "onnx" / ONNX_QINT8, args.threads
            ),
            "onnx-fp32": onnx_encoder(
                Encoder.from_pretrained(ENCODER), folder / "onnx" / ONNX_MODEL, args.threads
            ),
        }
        for encoder in rows.values():
            encoder.encode(texts[:8])  # warm-up
        best, vectors = dict.fromkeys(rows, float("inf")), {}
        for _ in range(args.rounds):
            for name, encoder in rows.items():
                start = time.perf_counter()
                vectors[name] = encoder.encode(texts)
                best[name] = min(best[name], time.perf_counter() - start)
    ref, results = vectors["fp32"], {}
    for name in rows:
        v = vectors[name]
        cos = (v * ref).sum(1) / np.linalg.norm(v, axis=1) / np.linalg.norm(ref, axis=1)
        results[name] = {"seconds": best[name], "speedup": best["fp32"] / best[name],
                         "cosine_mean": float(cos.mean()), "cosine_min": float(cos.min())}  # fmt: skip
        print(f"{name:<10} {best[name]:6.2f} s {best['fp32'] / best[name]:5.2f}x fp32  "
              f"cosine to fp32 mean {cos.mean():.4f} min {cos.min():.4f}")  # fmt: skip
    print(f"wrote {write_results('cpu_paths_quick', {'texts': len(texts), 'rows': results})}")


if __name__ == "__main__":
    main()
