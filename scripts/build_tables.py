"""Rule tables: attack metrics + utility JSONs -> tables/*.csv|md and the headline metrics.json."""
from pathlib import Path

from m4i.io import write_json
from m4i.report.tables import build_tables, headline_metrics
from m4i.workflow import run


def main(smk):
    out_dir = Path(smk.output.csv[0]).parent
    build_tables(list(smk.input.metrics), list(smk.input.utility), smk.params.results_root, str(out_dir),
                 dict(smk.params.settings), defenses=dict(smk.params.defenses), recipe_paths=list(smk.input.recipes))
    write_json(headline_metrics(list(smk.input.metrics)), smk.output.headline)


run(snakemake, main)  # noqa: F821
