"""Rendering a backfill summary: a terminal table, report.md + report.html, two PNG charts, summary.json.

matplotlib runs on the Agg backend (no display needed) and is imported only here, at the end of a job.
"""

from __future__ import annotations

import html
from pathlib import Path

from rich.console import Console
from rich.table import Table

from pipelines.backfill.manifest import write_atomic
from pipelines.backfill.summary import BackfillSummary

HISTOGRAM = "score_histogram.png"
CATEGORIES = "categories.png"


def _rows(summary: BackfillSummary) -> list[list[str]]:
    """One row per tenant, then one per tenant x category: shared by every rendering."""
    rows = []
    for t in summary.tenants:
        rows.append([t.tenant_id, "(all)", str(t.verdicts), str(t.unsafe), f"{t.unsafe_rate:.1%}"])
        for code, count in t.categories.items():
            label = f"{code} {t.category_names.get(code, '')}".strip()
            rate = count / t.verdicts if t.verdicts else 0.0
            rows.append([t.tenant_id, label, "", str(count), f"{rate:.1%}"])
    return rows


HEADERS = ["tenant", "category", "verdicts", "unsafe", "unsafe rate"]


def _totals(summary: BackfillSummary) -> list[tuple[str, str]]:
    scored = sum(t.scored for t in summary.tenants)
    totals = [
        ("shards done", f"{summary.shards_done}/{summary.shards}"),
        ("rows", str(summary.rows)),
        ("verdicts", str(summary.verdicts)),
        ("unsafe verdicts", str(summary.unsafe)),
        ("rows scored", str(scored)),
        ("skipped (side not classified)", str(sum(t.skipped for t in summary.tenants))),
        ("scoring errors (fail-open/closed)", str(sum(t.scoring_errors for t in summary.tenants))),
        ("bad rows", str(summary.bad_rows)),
    ]
    totals += [(f"  {code}", str(n)) for code, n in summary.bad_rows_by_code.items()]
    if summary.rows_per_s is not None and summary.seconds is not None:
        rows = f"{summary.rows_this_run} rows, " if summary.rows_this_run is not None else ""
        totals.append(("this run", f"{rows}{summary.seconds:.1f} s, {summary.rows_per_s:.1f} rows/s"))
    if summary.steady_rows_per_s is not None:
        totals.append(("  once replicas were up", f"{summary.steady_rows_per_s:.1f} rows/s"))
    if summary.cache_hit_ratio is not None:
        totals.append(("  prompt tokens from the KV cache", f"{summary.cache_hit_ratio:.0%}"))
    return totals


def print_summary(summary: BackfillSummary, console: Console | None = None) -> None:
    console = console or Console()
    totals = Table(show_header=False, box=None)
    for key, value in _totals(summary):
        totals.add_row(key, value)
    console.print(totals)
    table = Table(*HEADERS, title="unsafe rate per tenant and category")
    for row in _rows(summary):
        table.add_row(*row)
    console.print(table)


def write_charts(out: Path, summary: BackfillSummary, scores: dict[str, list[float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for tenant, values in sorted(scores.items()):
        ax.hist(values, bins=20, range=(0.0, 1.0), alpha=0.6, label=f"{tenant} (n={len(values)})")
    ax.set(xlabel="P(unsafe)", ylabel="verdicts", title="Score distribution per tenant")
    if scores:
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / HISTOGRAM, dpi=100)
    plt.close(fig)

    labels = [f"{t.tenant_id}\n{code}" for t in summary.tenants for code in t.categories]
    counts = [n for t in summary.tenants for n in t.categories.values()]
    fig, ax = plt.subplots(figsize=(max(5.0, 0.6 * len(labels) + 2), 4))
    ax.bar(range(len(counts)), counts, color="#c0392b")
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set(ylabel="unsafe verdicts", title="Unsafe verdicts per tenant and category")
    if not counts:
        ax.text(0.5, 0.5, "no unsafe verdicts", transform=ax.transAxes, ha="center", va="center")
    fig.tight_layout()
    fig.savefig(out / CATEGORIES, dpi=100)
    plt.close(fig)


def _markdown(summary: BackfillSummary) -> str:
    lines = ["# Backfill report", "", "| | |", "|---|---|"]
    lines += [f"| {k.strip()} | {v} |" for k, v in _totals(summary)]
    lines += ["", "## Unsafe rate per tenant and category", ""]
    lines += ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(row) + " |" for row in _rows(summary)]
    lines += ["", f"![score histogram]({HISTOGRAM})", "", f"![categories]({CATEGORIES})", ""]
    lines += ["Verdicts: `verdicts/tenant_id=*/shard-*.parquet`. Bad rows: `errors/shard-*.jsonl`.", ""]
    return "\n".join(lines)


def _html(summary: BackfillSummary) -> str:
    def table(headers: list[str] | None, rows: list[list[str]]) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in headers or [])
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    style = (
        "body{font-family:sans-serif;max-width:60em;margin:2em auto}td,th{padding:2px 10px;text-align:left}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>Backfill report</title>"
        f"<style>{style}</style></head><body><h1>Backfill report</h1>"
        f"{table(None, [[k, v] for k, v in _totals(summary)])}"
        f"<h2>Unsafe rate per tenant and category</h2>{table(HEADERS, _rows(summary))}"
        f"<h2>Charts</h2><img src='{HISTOGRAM}' alt='score histogram'><img src='{CATEGORIES}' "
        f"alt='categories'></body></html>\n"
    )


def write_report(out: Path, summary: BackfillSummary, scores: dict[str, list[float]]) -> Path:
    """Write the charts, report.md, report.html and summary.json; returns report.html."""
    write_charts(out, summary, scores)
    write_atomic(out / "report.md", _markdown(summary).encode("utf-8"))
    write_atomic(out / "report.html", _html(summary).encode("utf-8"))
    write_atomic(out / "summary.json", summary.model_dump_json(indent=1).encode("utf-8"))
    return out / "report.html"
