"""The demo's guard (#32): its conversion, over seeds, must beat the causal model it starts from.

Runs `decoder2vec demo`'s own short conversion (``demo.convert_briefly``: resources/recipes/demo.yaml, 20 MNTP
+ 60 SimCSE steps) once per seed and scores each on the demo's 375 held-out STS-B test pairs, beside the raw
decoder (causal, bidirectional) and the shipped encoder. Exits 1 when any seed's conversion does not beat the
causal model, so a change that breaks the demo's promise fails here.

    python bench/demo.py --seeds 42 1 2          # about 6 minutes of training per seed on 2 idle cores
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, write_results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--mntp-steps", type=int, default=20)
    parser.add_argument("--simcse-steps", type=int, default=60)
    parser.add_argument("--out", type=Path, default=RESULTS / "demo-runs")
    args = parser.parse_args()

    from decoder2vec import Encoder
    from decoder2vec.backbone.default_model import DEFAULT_ENCODER
    from decoder2vec.demo import convert_briefly, heldout_pairs, pair_score

    pairs = heldout_pairs()
    baselines = {
        "causal": pair_score(Encoder.from_pretrained(args.model, bidirectional=False), pairs),
        "bidirectional": pair_score(Encoder.from_pretrained(args.model, bidirectional=True), pairs),
        "shipped": pair_score(Encoder.from_pretrained(DEFAULT_ENCODER), pairs),
    }
    runs = []
    for seed in args.seeds:
        start = time.perf_counter()
        folder = convert_briefly(
            args.model, args.out / f"seed-{seed}", args.mntp_steps, args.simcse_steps, seed
        )
        score = pair_score(Encoder.from_pretrained(folder), pairs)
        runs.append({"seed": seed, "heldout": score, "seconds": round(time.perf_counter() - start, 1)})
        print(f"seed {seed}: {score:.1f} ({runs[-1]['seconds']:.0f}s)", flush=True)
    write_results(
        "demo", {"baselines": baselines, "runs": runs, "steps": [args.mntp_steps, args.simcse_steps]}
    )

    print(f"\nSpearman x100 on {len(pairs[2])} held-out STS-B test pairs")
    for name, value in baselines.items():
        print(f"  {name:<24}{value:6.1f}")
    for run in runs:
        print(f"  {'conversion, seed ' + str(run['seed']):<24}{run['heldout']:6.1f}  ({run['seconds']:.0f}s)")
    failed = [r["seed"] for r in runs if r["heldout"] <= baselines["causal"]]
    if failed:
        print(f"FAIL: seeds {failed} do not beat the causal model ({baselines['causal']:.1f})")
        return 1
    print(f"every seed beats the causal model ({baselines['causal']:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
