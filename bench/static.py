"""Static models (``decoder2vec export static``) vs the fp32 encoder they were distilled from, side by side.

    python bench/static.py --teacher smollm2-135m-llm2vec --static DIR [DIR ...] [--sentences 2000]

Quality: Spearman x100 of cosine vs gold on STS-B test and SICK-R test (and STS-B dev / SICK trial, the
splits settings were chosen on), for the teacher and each static model, as a fraction of the teacher's.
Speed: texts per second encoding the same STS-B test sentences in this one process (teacher: fp32
``Encoder.encode``; static: decoder2vec's ``encode`` and model2vec's ``StaticModel.encode``), so the ratio
is measured under the same machine load. Writes bench/results/static.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHARED, sts_spearman, timed, write_results

SPLITS = {
    "stsb_test": ("stsb", "stsbenchmark/sts-test.csv"),
    "sickr_test": ("sick", "sick2014/SICK_test_annotated.txt"),
    "stsb_dev": ("stsb", "stsbenchmark/sts-dev.csv"),
    "sick_trial": ("sick", "sick2014/SICK_trial.txt"),
}


def load_splits(data: Path = SHARED) -> dict:
    from decoder2vec.evaluation.loaders import load_sick, load_stsb

    loaders = {"stsb": load_stsb, "sick": load_sick}
    return {name: loaders[kind](Path(data) / path) for name, (kind, path) in SPLITS.items()}


def scores(encoder, splits: dict | None) -> dict:
    if splits is None:
        return {name: float("nan") for name in SPLITS}
    return {name: round(sts_spearman(encoder, data), 2) for name, data in splits.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="smollm2-135m-llm2vec")
    parser.add_argument("--static", nargs="+", required=True, help="static model folders or aliases")
    parser.add_argument("--sentences", type=int, default=2000, help="STS-B test sentences to time")
    parser.add_argument("--data", type=Path, default=SHARED, help="the shared data folder (STS-B, SICK)")
    parser.add_argument(
        "--speed-only", action="store_true", help="skip the quality scores (minutes per model)"
    )
    args = parser.parse_args()

    from model2vec import StaticModel

    from decoder2vec import Encoder
    from decoder2vec.backbone.loading import resolve_model_path

    splits = load_splits(args.data)
    test = splits["stsb_test"]
    scored = (
        None if args.speed_only else splits
    )  # unique STS-B test sentences, in file order (as common.sts_sentences)
    texts = list(dict.fromkeys(s for pair in zip(test.sentences1, test.sentences2) for s in pair))[
        : args.sentences
    ]
    teacher = Encoder.from_pretrained(args.teacher, dtype="float32", device="cpu")
    teacher.encode(texts[:64])  # warm-up
    teacher_s, _ = timed(lambda: teacher.encode(texts, batch_size=64))
    rows = [
        {
            "model": args.teacher,
            "kind": "encoder fp32",
            "texts_per_s": len(texts) / teacher_s,
            **scores(teacher, scored),
        }
    ]
    base = rows[0]
    for name in args.static:
        static = Encoder.from_pretrained(name)
        m2v = StaticModel.from_pretrained(resolve_model_path(name))
        static.encode(texts[:64])
        m2v.encode(texts[:64])
        ours_s, _ = timed(lambda static=static: static.encode(texts))
        m2v_s, _ = timed(lambda m2v=m2v: m2v.encode(texts, use_multiprocessing=False))
        row = {
            "model": name,
            "kind": f"static {static.embedding_dim}-d",
            "texts_per_s": len(texts) / ours_s,
            "model2vec_texts_per_s": len(texts) / m2v_s,
            **scores(static, scored),
        }
        rows.append(row)
    for row in rows:
        row["speedup"] = row["texts_per_s"] / base["texts_per_s"]
        for split in SPLITS:
            row[f"{split}_fraction"] = row[split] / base[split]
    header = f"{'model':42} {'texts/s':>9} {'x enc':>7} {'STS-B':>6} {'%':>5} {'SICK-R':>6} {'%':>5} {'dev':>6} {'trial':>6}"
    print(header)
    for r in rows:
        print(
            f"{r['model'][-42:]:42} {r['texts_per_s']:9.0f} {r['speedup']:7.0f} {r['stsb_test']:6.2f} "
            f"{100 * r['stsb_test_fraction']:5.1f} {r['sickr_test']:6.2f} {100 * r['sickr_test_fraction']:5.1f} "
            f"{r['stsb_dev']:6.2f} {r['sick_trial']:6.2f}"
        )
    path = write_results(
        "static-speed" if args.speed_only else "static",
        {"teacher": args.teacher, "timed_sentences": len(texts), "rows": rows},
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
