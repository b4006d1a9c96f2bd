"""Command line for reviewers: trace a table row to its raw inputs, recompute a metrics.json.

    m4i provenance results/default/tables/attacks.csv attack:unrestricted:mb-svm:s0
    m4i trace attacks/unrestricted/mb-svm/s0/metrics.json --results-root results/default
    m4i recompute results/default/attacks/unrestricted/mb-svm/s0/metrics.json

Exit codes: 0 ok; 1 recomputed metrics differ; 2 bad input (message names the culprit);
3 provenance is stale or incomplete.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from m4i.io import M4IError, read_json, read_table

EXIT_OK, EXIT_MISMATCH, EXIT_ERROR, EXIT_STALE = 0, 1, 2, 3


def table_sources(table: str | Path, row_id: str) -> list[str]:
    """The ``sources`` of one row of a CSV table written by m4i.report.tables."""
    import pandas as pd

    table = Path(table)
    if table.suffix == ".md" and table.with_suffix(".csv").is_file():
        table = table.with_suffix(".csv")  # the Markdown twin has the same rows
    if not table.is_file():
        raise M4IError(f"table {table} does not exist")
    df = pd.read_csv(table, dtype=str, keep_default_na=False)
    for col in ("row_id", "sources"):
        if col not in df.columns:
            raise M4IError(f"table {table} has no {col!r} column")
    hit = df[df["row_id"] == row_id]
    if hit.empty:
        raise M4IError(f"row id {row_id!r} not found in table {table} ({len(df)} row ids "
                       f"available, e.g. {', '.join(df['row_id'].head(3))})")
    sources = [s for s in hit["sources"].iloc[0].split(";") if s]
    if not sources:
        raise M4IError(f"row {row_id!r} of table {table} lists no sources")
    return sources


def _cmd_provenance(args) -> int:
    from m4i.provenance import trace

    table = Path(args.table)
    from m4i.identity import Layout

    root = Path(args.results_root) if args.results_root else Layout.root_of(table)
    trees = [trace(root, src) for src in table_sources(table, args.row_id)]
    _emit(trees, args.json)
    return EXIT_OK if all(t["ok"] for t in trees) else EXIT_STALE


def _cmd_trace(args) -> int:
    from m4i.provenance import trace

    tree = trace(Path(args.results_root), args.artifact)
    _emit([tree], args.json)
    return EXIT_OK if tree["ok"] else EXIT_STALE


def _emit(trees: list[dict], as_json: bool) -> None:
    from m4i.provenance import format_trace

    if as_json:
        print(json.dumps(trees, indent=2, sort_keys=True))
    else:
        print("\n\n".join(format_trace(t) for t in trees))


def diff_values(a, b, path: str = "metrics") -> list[str]:
    """Paths where two JSON-like values differ; NaN equals NaN, numbers compared exactly."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{path}.{k}: only in {'recorded' if k in a else 'recomputed'}"
               for k in sorted(set(a) ^ set(b))]
        for k in sorted(set(a) & set(b)):
            out += diff_values(a[k], b[k], f"{path}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: length {len(a)} vs {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in diff_values(x, y, f"{path}[{i}]")]
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return []
    # True == 1 in Python; a flag turned into a count is still a difference.
    same = (a is b) if isinstance(a, bool) or isinstance(b, bool) else a == b
    return [] if same else [f"{path}: {a!r} vs {b!r}"]


def _json_roundtrip(obj):
    """What write_json would store: tuples -> lists, numpy scalars -> Python numbers."""
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o),
                                 allow_nan=True))


def recompute(metrics_path: str | Path) -> tuple[dict, dict, list[str]]:
    """Re-evaluate the sibling scores.parquet with the recorded settings: (recorded, new, diffs)."""
    from m4i.evaluation import evaluate

    metrics_path = Path(metrics_path)
    doc = read_json(metrics_path)
    scores_path = metrics_path.with_name("scores.parquet")
    if not scores_path.is_file():
        raise M4IError(f"{metrics_path}: sibling {scores_path.name} is missing")
    try:
        recorded = doc["metrics"]
        threshold = doc["decision"]["threshold"]
        n_boot, seed = recorded["ci95"]["n_bootstrap"], recorded["ci95"]["seed"]
        fprs = tuple(float(k) for k in recorded["tpr_at_fpr"])
    except (KeyError, TypeError) as exc:
        raise M4IError(f"{metrics_path}: missing key {exc} needed to recompute") from None
    scores = read_table(scores_path)
    for col in ("label", "score"):
        if col not in scores.columns:
            raise M4IError(f"{scores_path}: no {col!r} column")
    new = evaluate(scores["label"].to_numpy(), scores["score"].to_numpy(), threshold,
                   fpr_targets=fprs, n_bootstrap=n_boot, seed=seed)
    new = _json_roundtrip(new)
    return recorded, new, diff_values(recorded, new)


def _cmd_recompute(args) -> int:
    _, _, diffs = recompute(args.metrics)
    if diffs:
        print(f"MISMATCH: {args.metrics}: {len(diffs)} value(s) differ")
        for d in diffs[:50]:
            print(f"  {d}")
        return EXIT_MISMATCH
    print(f"OK: {args.metrics}: recomputed metrics match exactly")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="m4i", description="M^4I study: audit tools")
    sub = p.add_subparsers(dest="command", required=True)

    pv = sub.add_parser("provenance", help="trace a table row back to its raw inputs")
    pv.add_argument("table", help="a CSV table written by m4i (results/<study>/tables/*.csv)")
    pv.add_argument("row_id", help="the row's row_id, e.g. attack:unrestricted:mb-svm:s0")
    pv.add_argument("--results-root", help="default: the table's parent's parent")
    pv.add_argument("--json", action="store_true", help="print the trace as JSON")
    pv.set_defaults(func=_cmd_provenance)

    tr = sub.add_parser("trace", help="trace one artifact back to its raw inputs")
    tr.add_argument("artifact", help="path relative to the results root (or under it)")
    tr.add_argument("--results-root", required=True)
    tr.add_argument("--json", action="store_true")
    tr.set_defaults(func=_cmd_trace)

    rc = sub.add_parser("recompute", help="recompute metrics.json from its scores.parquet")
    rc.add_argument("metrics", help="attacks/<scenario>/<attack>/s<k>/metrics.json")
    rc.set_defaults(func=_cmd_recompute)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except M4IError as exc:
        print(f"m4i {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
