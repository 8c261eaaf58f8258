"""Rendering of the leaderboard table (rows come from :mod:`segrepro.tracking.leaderboard`).

* Markdown: only what a reader needs (method, recipe, dataset/split, protocol, paper, ours, Δ, cost).
* HTML: one self-contained page (no scripts, no external assets), one section per dataset so class sets
  never mix: the summary with links to each row's MLflow run and archive, an embedded PNG bar chart of
  reproduced against paper mIoU, and the per-class heat map.
The CSV keeps every column.
"""

from __future__ import annotations

import base64
import html
import io
import math
from typing import Any

import pandas as pd

CLASS_PREFIX = "IoU/"
MARKDOWN_COLUMNS = {
    "method": "method",
    "recipe": "recipe",
    "dataset": "dataset/split",
    "protocol": "protocol",
    "paper_mIoU": "paper",
    "mIoU": "ours",
    "delta": "Δ",
    "delta_note": "note",
    "cost": "cost",
}
PAGE_COLUMNS = [
    "method",
    "recipe",
    "backbone",
    "split",
    "protocol",
    "paper_mIoU",
    "mIoU",
    "delta",
    "delta_note",
    "iIoU",
    "params_M",
    "GFLOPs",
    "cost",
    "git_sha",
    "data_hash",
    "links",
]


def _num(value: Any, spec: str = ".2f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return format(value, spec) if isinstance(value, (int, float)) else str(value)


def cost(row: pd.Series) -> str:
    """The measured cost: training hours and s/iter, evaluation img/s and peak memory."""
    parts = []
    if not pd.isna(row.get("train_hours")):
        parts.append(f"train {row['train_hours']:.2f} h ({row['train_s_per_iter']:.2f} s/it)")
    if not pd.isna(row.get("eval_img_per_s")):
        parts.append(f"eval {float(row['eval_img_per_s']):.2f} img/s")
    if not pd.isna(row.get("peak_mem_MB")):
        parts.append(f"peak {float(row['peak_mem_MB']):.0f} MB")
    return ", ".join(parts)


def _dataset_split(row: pd.Series) -> str:
    split = str(row.get("split") or "")
    return f"{row['dataset']}/{split}" if split else str(row["dataset"])


def to_markdown(table: pd.DataFrame) -> str:
    view = table.assign(cost=table.apply(cost, axis=1), dataset=table.apply(_dataset_split, axis=1))
    view = view[list(MARKDOWN_COLUMNS)].rename(columns=MARKDOWN_COLUMNS)
    view = view.astype(object).where(view.notna(), None)  # empty cells read "–", not "nan"
    return view.to_markdown(index=False, floatfmt=".2f", missingval="–") + "\n"


def _png_data_uri(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def bar_chart(rows: pd.DataFrame) -> str:
    """Reproduced and (numeric) paper mIoU per method/recipe, as an embedded PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    labels = [f"{m}\n{r}" for m, r in zip(rows["method"], rows["recipe"], strict=True)]
    ours = [0.0 if pd.isna(v) else float(v) for v in rows["mIoU"]]
    paper = [float(v) if isinstance(v, (int, float)) and not pd.isna(v) else math.nan for v in rows["paper_mIoU"]]
    fig = Figure(figsize=(max(4.0, 1.1 * len(labels) + 1), 3.2))
    ax = fig.subplots()
    xs = range(len(labels))
    ax.bar([x - 0.2 for x in xs], ours, 0.4, label="reproduced", color="tab:blue")
    ax.bar([x + 0.2 for x in xs], [0.0 if math.isnan(v) else v for v in paper], 0.4, label="paper", color="tab:gray")
    for x, v in zip(xs, paper, strict=True):
        if math.isnan(v):
            ax.text(x + 0.2, 1, "n/a", ha="center", fontsize=7, color="tab:gray")
    ax.set_xticks(list(xs), labels, fontsize=8)
    ax.set_ylabel("mIoU (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    return _png_data_uri(fig)


def _heat_color(value: float) -> str:
    if not isinstance(value, float) or math.isnan(value):
        return "#eeeeee"
    t = max(0.0, min(1.0, value / 100.0))
    return f"hsl({int(120 * t)}, 70%, {int(85 - 30 * t)}%)"


def _link(target: str, label: str) -> str:
    return f'<a href="{html.escape(target, quote=True)}">{html.escape(label)}</a>' if target else ""


def _summary_table(rows: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in PAGE_COLUMNS)
    body = []
    for _, row in rows.iterrows():
        cells = {c: html.escape(_num(row.get(c))) for c in PAGE_COLUMNS}
        cells["cost"] = html.escape(cost(row))
        sha = html.escape(str(row["git_sha"] or ""))
        cells["git_sha"] = f'<code title="{sha}">{sha[:8]}</code>'
        cells["data_hash"] = html.escape(str(row["data_hash"] or "")[:8])
        archive = str(row.get("archive") or "")
        cells["links"] = " ".join(
            filter(None, [_link(str(row["mlflow_run"] or ""), "MLflow run"), _link(archive, "archive")])
        )
        body.append("<tr>" + "".join(f"<td>{cells[c]}</td>" for c in PAGE_COLUMNS) + "</tr>")
    return f"<table class='summary'><tr class='head'>{head}</tr>{''.join(body)}</table>"


def _heat_map(rows: pd.DataFrame) -> str:
    class_cols = [c for c in rows.columns if c.startswith(CLASS_PREFIX) and rows[c].notna().any()]
    if not class_cols:
        return "<p>No per-class results.</p>"
    head = "".join(f"<th>{html.escape(c[len(CLASS_PREFIX) :])}</th>" for c in class_cols)
    body = []
    for _, row in rows.iterrows():
        cells = "".join(
            f'<td style="background:{_heat_color(row[c])}">{"" if pd.isna(row[c]) else f"{row[c]:.1f}"}</td>'
            for c in class_cols
        )
        body.append(f"<tr><th>{html.escape(str(row['method']))} / {html.escape(str(row['recipe']))}</th>{cells}</tr>")
    return f"<table class='heatmap'><tr class='head'><th>method / recipe</th>{head}</tr>{''.join(body)}</table>"


def to_html(table: pd.DataFrame) -> str:
    """The page: one section per dataset (summary with links, bar chart, per-class heat map)."""
    sections = []
    for dataset, rows in table.groupby("dataset", sort=True):
        name = html.escape(str(dataset))
        sections.append(
            f"<section><h2>{name}</h2>{_summary_table(rows)}"
            f"<h3>Reproduced vs paper mIoU</h3><img alt='mIoU per method, {name}' src='{bar_chart(rows)}'>"
            f"<h3>Per-class IoU (%)</h3>{_heat_map(rows)}</section>"
        )
    style = (
        "body{font-family:sans-serif;margin:1em}table{border-collapse:collapse;font-size:12px}"
        "td,th{border:1px solid #ccc;padding:3px 5px;text-align:right}section{margin-bottom:2em}"
    )
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>segrepro leaderboard</title><style>{style}</style>"
        f"</head><body><h1>segrepro leaderboard</h1>{''.join(sections)}</body></html>\n"
    )
