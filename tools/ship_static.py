"""Package a static model (``decoder2vec export static``) as the shipped alias, and score it once.

    python tools/ship_static.py STATIC_DIR [--dest src/decoder2vec/resources/encoders/smollm2-135m-llm2vec-static]

The token vectors are stored as per-row int8 (``vectors.safetensors``: ``q`` and ``scale``), and
``recipe.json`` records how they were made (STATIC_DIR's ``decoder2vec_static.json``), their SHA-256 and the
scores of the alias *as rebuilt from the bundle* (``static_encoder_folder``): STS-B dev and SICK trial,
then STS-B test and SICK-R test, Spearman x100 of cosine, from ../shared/data. A --dest that exists and is not
a static bundle (no recipe.json with ``vectors``) is refused before any work.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from common import SHARED
from static import load_splits, scores

from decoder2vec import Encoder
from decoder2vec.backbone.default_encoder import MANIFEST, sha256, shipped_dir
from decoder2vec.backbone.default_model import STATIC_ENCODER
from decoder2vec.backbone.static_bundle import VECTORS, static_encoder_folder
from decoder2vec.static_format import STATIC_META, quantize_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("static_dir", type=Path)
    parser.add_argument("--dest", type=Path, default=shipped_dir(STATIC_ENCODER))
    parser.add_argument("--command", default="", help="the export command, recorded in recipe.json")
    parser.add_argument("--data", type=Path, default=SHARED, help="the shared data folder (STS-B, SICK)")
    args = parser.parse_args()
    from safetensors.numpy import load_file, save_file

    meta_file = args.static_dir / STATIC_META
    if not meta_file.is_file():
        raise SystemExit(
            f"{args.static_dir} was not written by `decoder2vec export static` (no {STATIC_META})"
        )
    dest = args.dest
    if dest.exists():
        try:
            json.loads((dest / MANIFEST).read_text())["vectors"]
        except (OSError, ValueError, KeyError, TypeError):
            raise SystemExit(
                f"--dest {dest} exists and is not a static bundle; refusing to replace it"
            ) from None
    meta = json.loads(meta_file.read_text())
    q, scale = quantize_rows(load_file(str(args.static_dir / "model.safetensors"))["embeddings"])
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        bundle = Path(tmp) / "bundle"
        bundle.mkdir()
        save_file({"q": q, "scale": scale}, str(bundle / VECTORS))
        manifest = {
            "alias": STATIC_ENCODER,
            "made_by": "decoder2vec export static, then tools/ship_static.py (per-row int8)",
            "command": args.command,
            "meta": meta,
            "vectors": {"path": VECTORS, "shape": list(q.shape), "sha256": sha256(bundle / VECTORS)},
        }
        (bundle / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        encoder = Encoder.from_pretrained(str(static_encoder_folder(bundle)))
        manifest["scores"] = scores(encoder, load_splits(args.data))
        print(json.dumps(manifest["scores"], indent=2))
        (bundle / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        shutil.move(str(bundle), dest)
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
