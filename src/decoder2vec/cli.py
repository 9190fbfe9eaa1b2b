"""The ``decoder2vec`` command line: this module only assembles the command tree.

Each package owns its commands (``encoding/cli.py``, ``backbone/cli.py``, ``training/cli.py``,
``evaluation/cli.py``, ``serving/cli.py``, ``corpus/cli.py``, ``export/cli.py``); what they share is in
``cli_common.py``. Errors are reported as one line, without a traceback.
"""

from __future__ import annotations

import typer

from decoder2vec.backbone.cli import import_gguf_command
from decoder2vec.corpus.cli import embed_corpus
from decoder2vec.demo import demo_command
from decoder2vec.encoding.cli import encode, info, similarity
from decoder2vec.evaluation.cli import analyze, eval_app
from decoder2vec.export.cli import app as export_app
from decoder2vec.pairs.cli import pairs_command
from decoder2vec.serving.cli import serve
from decoder2vec.training.cli import convert, train_app

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Turn decoder-only LLMs into text encoders (LLM2Vec)."
)
for name, command in (
    ("encode", encode),
    ("similarity", similarity),
    ("import-gguf", import_gguf_command),
    ("info", info),
    ("demo", demo_command),
    ("convert", convert),
    ("serve", serve),
    ("embed-corpus", embed_corpus),
    ("pairs", pairs_command),
):
    app.command(name)(command)
app.add_typer(train_app, name="train")
app.add_typer(eval_app, name="eval")  # `eval --tasks ...` as before, and `eval retrieval DIR`
app.add_typer(analyze, name="analyze")
app.add_typer(export_app, name="export")

if __name__ == "__main__":
    app()
