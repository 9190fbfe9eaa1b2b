"""LoRA injection: every linear layer, or only the top N decoder layers (a CPU speed lever)."""

import pytest
import torch
from transformers import LlamaConfig, LlamaModel

from decoder2vec.errors import SettingError
from decoder2vec.training.config import LoraSettings
from decoder2vec.training.modules import add_lora


def tiny(layers: int = 4) -> LlamaModel:
    config = LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=100,
    )
    return LlamaModel(config)


def trained_layers(model) -> set[int]:
    return {int(n.split("layers.")[1].split(".")[0]) for n, p in model.named_parameters() if p.requires_grad}


def test_default_lora_covers_all_seven_linears_of_every_layer():
    model = add_lora(tiny(), LoraSettings(), seed=0)
    assert trained_layers(model) == {0, 1, 2, 3}
    assert sum(p.requires_grad for p in model.parameters()) == 4 * 7 * 2  # A and B per linear


def test_top_layers_adapts_only_the_last_layers_and_stops_the_backward_there():
    model = add_lora(tiny(), LoraSettings(top_layers=1), seed=0)
    assert trained_layers(model) == {3}
    assert sum(p.requires_grad for p in model.parameters()) == 7 * 2
    # no gradient reaches below the adapted layer: the lower layers run without building a graph
    seen = []
    model.base_model.model.layers[2].register_forward_hook(lambda m, i, o: seen.append(o[0].requires_grad))
    out = model(input_ids=torch.tensor([[1, 2, 3]])).last_hidden_state
    assert seen == [False] and out.requires_grad


@pytest.mark.parametrize("top", [0, 5])
def test_top_layers_out_of_range_is_a_setting_error(top):
    with pytest.raises(SettingError, match="lora.top_layers must be between 1 and 4"):
        add_lora(tiny(), LoraSettings(top_layers=top))
