"""Write the sentence-transformers module files next to a saved HF model.

``SentenceTransformer(folder)`` then loads it with its stock Transformer + Pooling modules, no
``trust_remote_code``: bidirectionality travels in config.json (``is_causal: false``), which
transformers >= 5.2 honours on load, and the pooling mode in ``1_Pooling/config.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

# Our pooling names -> sentence-transformers' boolean keys. ST's "cls" takes the first real token,
# which is what our "bos" mode does.
POOLING_KEYS = {
    "mean": "pooling_mode_mean_tokens",
    "weighted_mean": "pooling_mode_weightedmean_tokens",
    "last_token": "pooling_mode_lasttoken",
    "bos": "pooling_mode_cls_token",
}
_ALL_KEYS = (
    "pooling_mode_cls_token",
    "pooling_mode_mean_tokens",
    "pooling_mode_max_tokens",
    "pooling_mode_mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens",
    "pooling_mode_lasttoken",
)


def write_sentence_transformers_files(
    folder: Path, *, pooling: str, max_length: int, embedding_dim: int
) -> None:
    """Write modules.json, sentence_bert_config.json, config_sentence_transformers.json and 1_Pooling/."""
    folder = Path(folder)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    pooling_config = {"word_embedding_dimension": embedding_dim, **{key: False for key in _ALL_KEYS}}
    pooling_config[POOLING_KEYS[pooling]] = True
    # Instructions (ST "prompts") are attended to but not pooled, as in decoder2vec.
    pooling_config["include_prompt"] = False
    (folder / "1_Pooling").mkdir(parents=True, exist_ok=True)
    _dump(folder / "modules.json", modules)
    _dump(folder / "sentence_bert_config.json", {"max_seq_length": max_length, "do_lower_case": False})
    _dump(
        folder / "config_sentence_transformers.json",
        {"prompts": {}, "default_prompt_name": None, "similarity_fn_name": "cosine"},
    )
    _dump(folder / "1_Pooling" / "config.json", pooling_config)


def _dump(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n")
