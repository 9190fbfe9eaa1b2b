"""model2vec's folder format, in one place: what ``export static`` writes, ``StaticEncoder`` reads and the shipped
static alias is rebuilt into. Plain files (safetensors, tokenizers' JSON, config JSON), no model2vec import.

``model.safetensors`` (``embeddings``: one row per token id), ``tokenizer.json``, ``config.json``
(``model_type: model2vec``) and ``modules.json`` (sentence-transformers: StaticEmbedding, then Normalize) are
what ``model2vec.StaticModel.save_pretrained`` writes; ``decoder2vec_static.json`` records how the model
was made (teacher, method, instruction baked in).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np

CONFIG = "config.json"
MODEL_TYPE = "model2vec"
WEIGHTS = "model.safetensors"
TOKENIZER = "tokenizer.json"
STATIC_META = "decoder2vec_static.json"  # how `export static` made it: teacher, method, instruction
# No truncation in practice (model2vec's ``seq_length``): a static model's cost is linear in the tokens and
# it has no context window; model2vec (max_length null) and StaticEmbedding do not truncate either.
STATIC_MAX_LENGTH = 1_000_000


def is_static_folder(path: str | Path) -> bool:
    """A model2vec folder: its config.json says ``model_type: model2vec``."""
    file = Path(path) / CONFIG
    if not file.is_file():
        return False
    try:
        return json.loads(file.read_text()).get("model_type") == MODEL_TYPE
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return False


def vocab_tokenizer(hf_tokenizer):
    """The fast tokenizer's ``tokenizers.Tokenizer`` as a static model keeps it: no padding, no truncation."""
    backend = getattr(hf_tokenizer, "backend_tokenizer", hf_tokenizer)
    tokenizer = copy.deepcopy(backend)
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def write_static_files(folder: Path, vectors: np.ndarray, tokenizer, meta: dict) -> None:
    """model2vec's layout (what ``StaticModel.save_pretrained`` writes), which sentence-transformers also loads
    (modules.json: StaticEmbedding, then Normalize), plus our ``decoder2vec_static.json``."""
    from safetensors.numpy import save_file

    folder = Path(folder)
    vectors = np.ascontiguousarray(vectors)
    if len(vectors) != tokenizer.get_vocab_size(with_added_tokens=True):
        raise ValueError(f"{len(vectors)} vectors for a vocabulary of {tokenizer.get_vocab_size()} tokens")
    save_file({"embeddings": vectors}, str(folder / WEIGHTS))
    tokenizer.save(str(folder / TOKENIZER), pretty=False)
    config = {
        "model_type": MODEL_TYPE,
        "architectures": ["StaticModel"],
        "tokenizer_name": meta.get("teacher", ""),
        "apply_pca": int(vectors.shape[1]),
        "sif_coefficient": meta.get("sif"),
        "hidden_dim": int(vectors.shape[1]),
        "seq_length": 1000000,
        "normalize": True,  # model2vec's and StaticEmbedding's default output: unit vectors
        "max_length": None,  # no truncation, as decoder2vec's StaticEncoder
        "pooling": "mean",
        "embedding_dtype": np.dtype(vectors.dtype).name,
    }
    (folder / CONFIG).write_text(json.dumps(config, indent=4))
    modules = [
        {"idx": 0, "name": "0", "path": ".", "type": "sentence_transformers.models.StaticEmbedding"},
        {"idx": 1, "name": "1", "path": "1_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (folder / "modules.json").write_text(json.dumps(modules, indent=4))
    (folder / "1_Normalize").mkdir()
    (folder / STATIC_META).write_text(json.dumps(meta, indent=2) + "\n")
    (folder / "README.md").write_text(model_card(meta, vectors.shape))


def model_card(meta: dict, shape: tuple[int, int]) -> str:
    return (
        "---\nlibrary_name: model2vec\ntags: [model2vec, sentence-transformers, static-embeddings, decoder2vec]\n---\n"
        f"# Static embeddings of {meta.get('teacher', 'a decoder2vec encoder')}\n\n"
        f"Written by `decoder2vec export static` (method: {meta.get('method')}): {shape[0]} tokens x {shape[1]} "
        "dimensions. A text's embedding is the mean of its tokens' vectors.\n\n"
        "```python\nfrom model2vec import StaticModel\nmodel = StaticModel.from_pretrained(PATH)\n"
        "# or: SentenceTransformer(PATH), or decoder2vec.Encoder.from_pretrained(PATH)\n```\n"
    )


def quantize_rows(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row symmetric int8: ``(q, scale)`` with ``vectors ~= q * scale[:, None]`` (error <= scale / 2 per
    value); a row's direction, which is what a mean of rows and a cosine read, survives to ~0.5%."""
    vectors = np.asarray(vectors, dtype=np.float32)
    scale = np.abs(vectors).max(axis=1) / 127
    scale = np.where(scale == 0, 1, scale).astype(np.float32)
    return np.clip(np.rint(vectors / scale[:, None]), -127, 127).astype(np.int8), scale


def dequantize_rows(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return q.astype(np.float32) * np.asarray(scale, dtype=np.float32)[:, None]
