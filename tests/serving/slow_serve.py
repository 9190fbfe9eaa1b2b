"""``decoder2vec serve`` with every forward slowed down, so a test can signal the server mid-request.

python -m tests.serving.slow_serve serve --model FOLDER --port P
"""

import time

import torch

from decoder2vec.cli import app
from decoder2vec.encoding.encoder import Encoder

FORWARD_SECONDS = 1.0
_embed_batch = Encoder.embed_batch


def slow_embed_batch(self, batch):
    time.sleep(FORWARD_SECONDS)
    return _embed_batch(self, batch)


if __name__ == "__main__":
    torch.set_num_threads(1)
    Encoder.embed_batch = slow_embed_batch
    app()
