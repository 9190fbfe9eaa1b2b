"""The progress bar of a corpus run: texts embedded and shards written, resumed runs included."""

from __future__ import annotations

import os
import sys
import time

from tqdm.auto import tqdm

# Test-only: after this many shards written by this process, stop (sleep) so a test can SIGKILL it
# at a known point. Never set it outside tests.
HANG_AFTER_SHARDS_ENV = "DECODER2VEC_TEST_HANG_AFTER_SHARDS"


class ShardProgress:
    """Counts texts and shards; starts at what a previous run already finished."""

    def __init__(
        self, total_rows: int, done_rows: int, total_shards: int, done_shards: int, enabled: bool | None
    ):
        if enabled is None:
            enabled = sys.stderr.isatty()
        self.total_shards = total_shards
        self.done_shards = done_shards
        self.written = 0
        self._bar = tqdm(
            total=total_rows, initial=done_rows, unit="text", desc="Embedding", disable=not enabled
        )
        self._bar.set_postfix_str(self._shards())
        hang = os.environ.get(HANG_AFTER_SHARDS_ENV)
        self._hang_after = int(hang) if hang else None

    def _shards(self) -> str:
        return f"shards {self.done_shards}/{self.total_shards}"

    def shard_done(self, rows: int) -> None:
        self.done_shards += 1
        self.written += 1
        self._bar.update(rows)
        self._bar.set_postfix_str(self._shards())
        if self._hang_after is not None and self.written >= self._hang_after:
            self._bar.close()
            print(
                f"test hook: {self.written} shard(s) written, waiting to be killed",
                file=sys.stderr,
                flush=True,
            )
            while True:
                time.sleep(60)

    def close(self) -> None:
        self._bar.close()
