"""Per-rule time and peak memory of a study run, as a Markdown table, from the benchmark files
Snakemake wrote (``results/<study>/benchmarks/**/*.tsv``, one per job).

    .venv/bin/python benchmarks/study_summary.py results/default [--readme README.md] [--out FILE]

Which rule wrote a benchmark file is read from the rules themselves (the literal leading folders
of each rule's ``L.benchmark(...)``), so a new rule shows up without editing this script.
``--readme`` replaces the block between ``<!-- runtime-table:start -->`` and
``<!-- runtime-table:end -->`` in that file: the README's runtime table is generated, not typed.

A second table splits the jobs by part of the study, read from the ids in each benchmark path
(``m4i.identity``): the defenses (a model or scenario with a defense), the confounded control (the
paper's protocol), the online attacks' reference captioners, and the rest (data, backbone,
features, MFEs, the four scenarios' targets, shadows and attacks): what each part costs.

Columns: jobs; wall seconds summed over jobs and of the longest job; CPU seconds summed
(Snakemake's ``cpu_time``: user + system of the job's processes); the largest peak RSS of any job.
The run's wall span is estimated as the time from the first job's start (file time minus its
``s``) to the last job's end; it counts only jobs that wrote a benchmark file, and a rerun of
some jobs makes it meaningless (their files are newer).
"""
from __future__ import annotations

import argparse
import ast
import csv
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from m4i.identity import PROTOCOL_SUFFIX, MfeId, ModelId, ScenarioId  # noqa: E402
from m4i.io import M4IError  # noqa: E402
from m4i.names import DEFAULT_PROTOCOL  # noqa: E402

PARTS = ("four scenarios (shared)", "reference captioners", "defenses", "confounded control")
START, END = "<!-- runtime-table:start -->", "<!-- runtime-table:end -->"


def rule_prefixes(rules_dir: Path = REPO / "rules") -> dict[tuple[str, ...], str]:
    """{leading literal folders of a rule's benchmark path: rule name} from rules/*.smk."""
    out: dict[tuple[str, ...], str] = {}
    for smk in sorted(rules_dir.glob("*.smk")):
        # `rule name:`, or a rule made in a loop, `rule:  # label` (its name comes from the config)
        for block in re.split(r"^\s*rule(?=[\s:])", smk.read_text(), flags=re.M)[1:]:
            head = block.split("\n", 1)[0]
            name = head.split(":", 1)[0].strip() or head.split("#", 1)[-1].strip()
            m = re.search(r"L\.benchmark\(([^)]*)\)", block)
            if not m or not name:
                continue
            try:
                args = ast.parse(f"[{m.group(1)}]", mode="eval").body.elts
            except SyntaxError:
                continue
            prefix = []
            for a in args:  # the literal folders up to the first wildcard or variable
                if not isinstance(a, ast.Constant) or not isinstance(a.value, str) or "{" in a.value:
                    break
                prefix.append(a.value)
            key = tuple(prefix)
            out[key] = name if key not in out or out[key] == name else f"{out[key]} / {name}"
    return out


def _rule_of(rel: Path, prefixes: dict[tuple[str, ...], str]) -> str:
    if rel.parts in prefixes:  # a rule whose benchmark path is all literal (one job)
        return prefixes[rel.parts]
    parts = rel.parts[:-1]
    for n in range(len(parts), -1, -1):
        if parts[:n] in prefixes and n:
            return prefixes[parts[:n]]
    return "/".join(parts) or rel.stem


def study_part(rel: Path) -> str:
    """The part of the study (one of PARTS) a job belongs to, from the model, MFE, scenario or
    split id in its benchmark path (innermost first)."""
    for name in reversed(rel.with_suffix("").parts):
        protocol = name.rsplit("-s", 1)[0]
        if protocol in PROTOCOL_SUFFIX:  # a split file's folder: <protocol>-s<seed>
            return PARTS[0] if protocol == DEFAULT_PROTOCOL else PARTS[3]
        for cls in (ModelId, MfeId, ScenarioId):
            try:
                ident = cls.parse(name)
            except M4IError:
                continue
            if getattr(ident, "defense", None):
                return PARTS[2]
            if ident.protocol != DEFAULT_PROTOCOL:
                return PARTS[3]
            return PARTS[1] if getattr(ident, "role", None) == "ref" else PARTS[0]
    return PARTS[0]


def read_jobs(results: Path) -> list[dict]:
    bench = results / "benchmarks"
    if not bench.is_dir():
        raise SystemExit(f"study_summary: no benchmarks folder under {results}")
    prefixes = rule_prefixes()
    jobs = []
    for tsv in sorted(bench.rglob("*.tsv")):
        with tsv.open() as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        if not rows:
            continue
        row = rows[-1]  # a repeated benchmark writes one row per repeat; the last is the run's

        def num(key):
            try:
                return float(row.get(key, "nan"))
            except ValueError:
                return float("nan")

        jobs.append({"rule": _rule_of(tsv.relative_to(bench), prefixes), "s": num("s"), "cpu": num("cpu_time"),
                     "rss": num("max_rss"), "end": tsv.stat().st_mtime, "file": str(tsv.relative_to(bench)),
                     "part": study_part(tsv.relative_to(bench))})
    return jobs


def _f(x: float, fmt: str = "{:.1f}") -> str:
    return "–" if x != x else fmt.format(x)


def summary_table(jobs: list[dict]) -> str:
    by: dict[str, list[dict]] = {}
    for j in jobs:
        by.setdefault(j["rule"], []).append(j)
    lines = ["| rule | jobs | wall s (sum) | wall s (longest job) | CPU s (sum) | peak RSS MB (max) |",
             "|---|---:|---:|---:|---:|---:|"]
    order = sorted(by, key=lambda r: -sum(j["s"] for j in by[r]))
    for rule in order:
        js = by[rule]
        lines.append(f"| `{rule}` | {len(js)} | {_f(sum(j['s'] for j in js))} | {_f(max(j['s'] for j in js))} | "
                     f"{_f(sum(j['cpu'] for j in js))} | {_f(max(j['rss'] for j in js), '{:.0f}')} |")
    total_s, total_cpu = sum(j["s"] for j in jobs), sum(j["cpu"] for j in jobs)
    peak = max(jobs, key=lambda j: j["rss"])
    lines.append(f"| **all** | {len(jobs)} | {_f(total_s)} | {_f(max(j['s'] for j in jobs))} | {_f(total_cpu)} | "
                 f"{_f(peak['rss'], '{:.0f}')} |")
    span = max(j["end"] for j in jobs) - min(j["end"] - j["s"] for j in jobs)
    lines += ["", "| part of the study | jobs | wall s (sum) | share of the job time |", "|---|---:|---:|---:|"]
    for part in PARTS:
        js = [j for j in jobs if j["part"] == part]
        if js:
            part_s = sum(j["s"] for j in js)
            lines.append(f"| {part} | {len(js)} | {_f(part_s)} | {_f(100 * part_s / total_s, '{:.0f}')} % |")
    lines.append("")
    lines.append(f"Wall span of the run (first job start to last job end): {span:.0f} s = {span / 60:.1f} min; "
                 f"largest peak memory: {peak['rss']:.0f} MB (`{peak['file']}`).")
    return "\n".join(lines) + "\n"


def replace_block(text: str, table: str) -> str:
    if START not in text or END not in text:
        raise SystemExit(f"study_summary: {START} ... {END} markers not found")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{table}{END}{tail}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", help="a study's results folder, e.g. results/default")
    ap.add_argument("--out", help="write the table here (default: stdout)")
    ap.add_argument("--readme", help="replace the runtime-table block of this Markdown file")
    args = ap.parse_args(argv)
    jobs = read_jobs(Path(args.results))
    if not jobs:
        raise SystemExit(f"study_summary: no benchmark files under {args.results}/benchmarks")
    table = summary_table(jobs)
    if args.out:
        Path(args.out).write_text(table)
    if args.readme:
        p = Path(args.readme)
        p.write_text(replace_block(p.read_text(), table))
    if not args.out and not args.readme:
        sys.stdout.write(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
