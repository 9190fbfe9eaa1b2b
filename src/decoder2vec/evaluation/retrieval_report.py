"""The report of ``decoder2vec eval retrieval``: ``results.json`` and ``results.md``, written atomically.

A report folder may hold other files; the two results files are replaced only when this command wrote
them (``results.json`` carries ``"report": "decoder2vec eval retrieval"``, ``results.md`` starts with its
title), so a user's own ``results.md`` is never overwritten.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

from decoder2vec.errors import OutputExistsError
from decoder2vec.io import json_safe, write_file_atomic, write_json_atomic

REPORT_KIND = "decoder2vec eval retrieval"
TITLE = f"# {REPORT_KIND}"
COLUMNS = (
    ("ndcg_at_10", "nDCG@10"),
    ("recall_at_10", "R@10"),
    ("recall_at_100", "R@100"),
    ("mrr_at_10", "MRR@10"),
)


def _ours(path: Path) -> bool:
    try:
        if path.name.endswith(".json"):
            return json.loads(path.read_text(encoding="utf-8")).get("report") == REPORT_KIND
        return path.read_text(encoding="utf-8").startswith(TITLE)
    except (OSError, ValueError, AttributeError):
        return False


def check_report_dir(report: str | Path) -> None:
    """Refuse, before any work, a report folder whose results files this command did not write."""
    report = Path(report)
    if report.is_symlink() or (report.exists() and not report.is_dir()):
        raise OutputExistsError(f"--report {report} is a link or a file; give a folder")
    for name in ("results.json", "results.md"):
        path = report / name
        if path.is_symlink() or (path.exists() and not _ours(path)):
            raise OutputExistsError(
                f"--report {report}: {path} exists and was not written by `{REPORT_KIND}`; choose another folder"
            )


def retrieval_table(rows: list[dict[str, Any]]) -> str:
    """One row per system, the four scores (x100) as columns."""
    head = "| system | queries | docs | " + " | ".join(label for _, label in COLUMNS) + " |"
    rule = "|---|---:|---:|" + "---:|" * len(COLUMNS)
    lines = [
        f"| {r['system']} | {r['queries']} | {r['documents']} | "
        + " | ".join(f"{r[key]:.2f}" for key, _ in COLUMNS)
        + " |"
        for r in rows
    ]
    return "\n".join([head, rule, *lines]) + "\n"


def write_retrieval_report(
    report: str | Path, rows: list[dict[str, Any]], meta: dict[str, Any]
) -> tuple[Path, Path]:
    report = Path(report)
    check_report_dir(report)
    created = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    json_path, md_path = report / "results.json", report / "results.md"
    write_json_atomic(
        json_path, json_safe({"report": REPORT_KIND, "created": created, **meta, "results": rows})
    )
    where = f"{meta.get('folder')} (split {meta.get('split')})"
    write_file_atomic(md_path, f"{TITLE}: {where}\n\nScores x100.\n\n" + retrieval_table(rows))
    return json_path, md_path
