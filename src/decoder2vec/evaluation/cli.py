"""The ``decoder2vec eval`` group (``eval_app``) and the ``decoder2vec analyze ...`` group (``analyze``).

``decoder2vec eval --tasks ...`` (no sub-command) is the local evaluation it always was; ``decoder2vec eval
retrieval DIR`` scores a BEIR folder, with BM25 beside it on request.
"""

# no `from __future__ import annotations`: typer evaluates the annotations
from pathlib import Path
from typing import Annotated

import typer

from decoder2vec.backbone.default_model import DEFAULT_ENCODER, DEFAULT_MODEL
from decoder2vec.cli_common import ModelOption, reports_errors


def _split_csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


eval_app = typer.Typer(
    invoke_without_command=True,
    help="Score a model on local evaluation data (STS-B, SICK-R, custom tasks); "
    "`eval retrieval DIR` scores a BEIR retrieval folder.",
)


@eval_app.callback()
@reports_errors
def eval_command(
    ctx: typer.Context,
    model: ModelOption = DEFAULT_ENCODER,
    tasks: Annotated[
        str,
        typer.Option(help="Comma-separated: stsb, stsb-dev, sickr, or custom task folders under --data-dir."),
    ] = "stsb,sickr",
    data_dir: Annotated[
        Path,
        typer.Option(
            "--data-dir",
            help="Folder laid out like shared/data (stsbenchmark/, sick2014/, custom task folders).",
        ),
    ] = Path("../shared/data"),
    report: Annotated[Path, typer.Option("--report", help="Folder for results.json and results.md.")] = Path(
        "reports/eval"
    ),
    baseline: Annotated[
        list[str] | None,
        typer.Option(
            "--baseline",
            help="causal-mean, causal-weighted_mean, causal-last_token, echo, or 'all'; repeatable.",
        ),
    ] = None,
    pooling: Annotated[
        str | None, typer.Option(help="Pooling of the evaluated model (default: its saved setting).")
    ] = None,
    max_length: Annotated[int | None, typer.Option(help="Token limit per text.")] = None,
    batch_size: Annotated[int, typer.Option(help="Texts per forward pass.")] = 32,
    instructions: Annotated[
        bool,
        typer.Option(
            "--instructions/--no-instructions", help="Prepend the task instructions (LLM2Vec style)."
        ),
    ] = True,
) -> None:
    """Score a model (and optional baselines of the same checkpoint) on local evaluation data."""
    if ctx.invoked_subcommand is not None:
        return  # (`eval retrieval ...`: the sub-command has its own options)
    from decoder2vec.evaluation.runner import (
        BASELINES,
        load_variants,
        markdown_table,
        resolve_task,
        run_evaluation,
        write_report,
    )

    names = _split_csv(tasks)
    if not names:
        raise ValueError("--tasks is empty")
    chosen: list[str] = []
    for b in baseline or []:
        chosen.extend(BASELINES if b == "all" else _split_csv(b))
    # read every task before loading any model: a data error should cost seconds, not a model load
    loaded = [resolve_task(n, data_dir, use_instructions=instructions) for n in names]
    variants = load_variants(model, list(dict.fromkeys(chosen)), pooling=pooling, max_length=max_length)
    rows = run_evaluation(variants, loaded, batch_size=batch_size)
    meta = {
        "model": model,
        "data_dir": str(data_dir),
        "tasks": names,
        "baselines": chosen,
        "batch_size": batch_size,
    }
    json_path, md_path = write_report(report, rows, meta)
    typer.echo(markdown_table(rows))
    typer.echo(f"wrote {json_path} and {md_path}")


@eval_app.command("retrieval")
@reports_errors
def eval_retrieval_command(
    folder: Annotated[
        Path, typer.Argument(help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv).")
    ],
    model: ModelOption = DEFAULT_ENCODER,
    query_instruction: Annotated[
        str | None,
        typer.Option(
            "--query-instruction", help="Prepended to every query (not to passages), LLM2Vec style."
        ),
    ] = None,
    split: Annotated[
        str | None,
        typer.Option(help="qrels/<split>.tsv to score (default: dev, else test, else the only one)."),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Texts per forward pass.")] = 32,
    dimensions: Annotated[
        int | None, typer.Option(help="Keep the first N embedding values (Matryoshka truncation).")
    ] = None,
    max_length: Annotated[int | None, typer.Option(help="Token limit per text.")] = None,
    bm25: Annotated[
        bool, typer.Option("--bm25", help="Also score BM25 (bm25s) on the same folder, side by side.")
    ] = False,
    report: Annotated[
        Path | None, typer.Option("--report", help="Folder for results.json and results.md.")
    ] = None,
) -> None:
    """nDCG@10, recall@10, recall@100 and MRR@10 (x100) of a model on a BEIR folder (and of BM25)."""
    from decoder2vec.evaluation.loaders import load_retrieval
    from decoder2vec.evaluation.retrieval_report import retrieval_table, write_retrieval_report

    if batch_size < 1:
        raise typer.BadParameter("must be a positive integer", param_hint="--batch-size")
    if dimensions is not None and dimensions < 1:
        raise typer.BadParameter("must be a positive integer", param_hint="--dimensions")
    # the data and the report folder are checked before the model loads: a typo costs seconds
    data, split = load_retrieval(folder, split)
    if report is not None:
        from decoder2vec.evaluation.retrieval_report import check_report_dir

        check_report_dir(report)
    from decoder2vec.evaluation.retrieval import BM25_SETTINGS, evaluate_bm25, evaluate_retrieval

    rows = []
    if bm25:  # first: it needs no model, and a missing bm25s should not cost a model load
        rows.append({"system": "bm25", "settings": dict(BM25_SETTINGS), **evaluate_bm25(data)})
        rows[-1]["split"] = split
    from decoder2vec.encoding.encoder import load_encoder

    encoder = load_encoder(model, max_length=max_length)
    if dimensions is not None and dimensions > encoder.embedding_dim:
        raise typer.BadParameter(
            f"{dimensions} is wider than the model's {encoder.embedding_dim} dimensions",
            param_hint="--dimensions",
        )
    scores = evaluate_retrieval(
        encoder, data, query_instruction=query_instruction, batch_size=batch_size, dimensions=dimensions
    )
    settings = {"query_instruction": query_instruction, "dimensions": dimensions, "max_length": max_length}
    rows.insert(0, {"system": model, "settings": settings, **scores, "split": split})
    meta = {"folder": str(folder), "split": split, "model": model, "batch_size": batch_size}
    typer.echo(retrieval_table(rows))
    if report is not None:
        json_path, md_path = write_retrieval_report(report, rows, meta)
        typer.echo(f"wrote {json_path} and {md_path}")


analyze = typer.Typer(
    no_args_is_help=True, help="The LLM2Vec paper's analyses (PNG plots) and word-level probing."
)


@analyze.command("future-tokens")
@reports_errors
def future_tokens_command(
    out: Annotated[Path, typer.Option("--out", help="Folder for the plot and its numbers.")],
    model: ModelOption = DEFAULT_MODEL,
    tuples: Annotated[
        Path | None, typer.Option(help="JSONL of {a, b, c, d} tuples (default: the packaged set).")
    ] = None,
) -> None:
    """Paper Fig. 4: does pooling over a prefix capture what follows it (causal vs bidirectional)?"""
    from decoder2vec import Encoder
    from decoder2vec.analysis.future_tokens import run_future_tokens

    summary = run_future_tokens(Encoder.from_pretrained(model), out, tuples_path=tuples)
    for mode, stats in summary["modes"].items():
        typer.echo(
            f"{mode}: mean cos(q,s+)={stats['mean_pos']:.3f} mean cos(q,s-)={stats['mean_neg']:.3f} s+ wins {100 * stats['win_rate']:.0f}%"
        )
    typer.echo(f"wrote {summary['plot']}")


@analyze.command("layer-similarity")
@reports_errors
def layer_similarity_command(
    out: Annotated[Path, typer.Option("--out", help="Folder for the heat map and its numbers.")],
    model: ModelOption = DEFAULT_MODEL,
    texts: Annotated[
        Path | None,
        typer.Option(help="Text file, one sentence a line (default: the packaged tuples' sentences)."),
    ] = None,
    max_positions: Annotated[int, typer.Option(help="Token positions shown.")] = 32,
) -> None:
    """Paper Fig. 5: per layer and position, cosine between causal and bidirectional hidden states."""
    from decoder2vec import Encoder
    from decoder2vec.analysis.layer_similarity import run_layer_similarity

    summary = run_layer_similarity(
        Encoder.from_pretrained(model), out, texts_path=texts, max_positions=max_positions
    )
    typer.echo(f"mean cosine per layer: {', '.join(f'{v:.3f}' for v in summary['mean_per_layer'])}")
    typer.echo(f"wrote {summary['plot']}")


@analyze.command("probe")
@reports_errors
def probe_command(
    train: Annotated[
        Path, typer.Option(help="Training file: CoNLL (.conll/.txt) or a Brown corpus file/folder.")
    ],
    test: Annotated[Path, typer.Option(help="Test file in the same format.")],
    model: ModelOption = DEFAULT_MODEL,
    task: Annotated[
        str, typer.Option(help="pos, chunk or ner (CoNLL columns); Brown is always pos.")
    ] = "pos",
    layer: Annotated[int, typer.Option(help="Hidden layer to probe (-1 = last).")] = -1,
    next_token: Annotated[
        bool, typer.Option("--next-token", help="Read word i from position i-1 (MNTP-trained models).")
    ] = False,
    causal: Annotated[bool, typer.Option("--causal", help="Probe the causal model.")] = False,
    out: Annotated[Path | None, typer.Option("--out", help="Write the scores as JSON here.")] = None,
) -> None:
    """Linear probe on frozen word representations (accuracy / micro-F1)."""
    from decoder2vec import Encoder
    from decoder2vec.io import write_json_atomic
    from decoder2vec.probing import load_tagged, run_probe

    enc = Encoder.from_pretrained(model, bidirectional=False if causal else None)
    scores = run_probe(
        enc, load_tagged(train, task), load_tagged(test, task), layer=layer, next_token=next_token
    )
    typer.echo(", ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in scores.items()))
    if out is not None:
        write_json_atomic(
            out, {"model": model, "task": task, "layer": layer, "next_token": next_token, **scores}
        )
