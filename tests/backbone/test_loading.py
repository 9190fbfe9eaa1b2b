"""Issue #22, item 7c: a pickled checkpoint that holds more than tensors is refused in one line of our own,
without torch's advice to turn the safety check off, and without running it."""

import pytest
import torch
from safetensors.torch import load_file

from decoder2vec import Encoder
from decoder2vec.errors import ModelLoadError
from tests.conftest import save_tiny_model


class Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_weights_with_code_are_refused_in_one_line(tmp_path):
    folder = save_tiny_model(tmp_path / "model")
    weights = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "pwned"
    torch.save({**weights, "extra": Payload(marker)}, folder / "pytorch_model.bin")
    with pytest.raises(ModelLoadError) as refused:
        Encoder.from_pretrained(folder)
    message = str(refused.value)
    assert (
        message.startswith(f"refusing to load {folder / 'pytorch_model.bin'}") and "could run code" in message
    )
    assert "\n" not in message and "weights_only" not in message
    assert not marker.exists()

    torch.save(weights, folder / "pytorch_model.bin")  # plain tensors in a pickle still load
    assert Encoder.from_pretrained(folder).encode(["a text"]).shape == (1, 32)
