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


BAD_ID = "not-a-model!!"


def test_an_invalid_model_id_is_one_model_load_error(tmp_path):
    """Not a folder, file, alias or valid hub id: huggingface_hub's own validator says so, and the error is
    the one-line ModelLoadError (library and CLI), not its HFValidationError traceback."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id
    from typer.testing import CliRunner

    from decoder2vec import Encoder
    from decoder2vec.cli import app
    from decoder2vec.errors import ModelLoadError

    with pytest.raises(HFValidationError):
        validate_repo_id(BAD_ID)  # the independent judge: this id is invalid
    with pytest.raises(ModelLoadError, match="not a valid hub id"):
        Encoder.from_pretrained(BAD_ID)
    texts = tmp_path / "in.txt"
    texts.write_text("".join(f"sentence number {i} is here\n" for i in range(64)))
    for args in (
        ["encode", str(texts), "--model", BAD_ID, "--out", str(tmp_path / "o.npy")],
        ["train", "distill", "--teacher", BAD_ID, "--data", str(texts), "--out", str(tmp_path / "run")],
    ):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 1, (args, result.output)
        assert "not a valid hub id" in result.output and "Traceback" not in result.output, result.output
        assert not isinstance(result.exception, HFValidationError)
