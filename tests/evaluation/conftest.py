"""Fixtures shared by the evaluation tests (built offline, in well under a second of CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import HashEncoder, build_tiny_model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_encoder(tiny_model_dir: Path):
    from decoder2vec import Encoder

    return Encoder.from_pretrained(str(tiny_model_dir), max_length=256)


@pytest.fixture
def hash_encoder() -> HashEncoder:
    return HashEncoder()
