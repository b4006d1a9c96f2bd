"""Rule figures: attack metrics, utility and per-record signals -> figures/*.png|pdf."""
from pathlib import Path

from m4i.io import read_json
from m4i.report.figures import build_figures
from m4i.workflow import run


def main(smk):
    inp = smk.input
    distributions = []
    if "mb" in inp.keys():
        # The strongest single metric is the one the shadow-calibrated threshold attack picked.
        column = read_json(inp.mb_choice)["info"]["feature"] if "mb_choice" in inp.keys() else "cider_multi"
        distributions.append({"label": f"MB: {column}", "members": inp.mb, "members_rows": {"split": "target_in"},
                              "nonmembers": inp.mb, "nonmembers_rows": {"split": "target_out"}, "column": column})
    if "fb" in inp.keys():
        mfe = smk.params.fb_mfe
        distributions.append({"label": "FB: cos(f_img, f_txt)", "members": inp.fb, "nonmembers": inp.fb, "column": "cos",
                              "members_rows": {"split": "target_in", "mfe": mfe},
                              "nonmembers_rows": {"split": "target_out", "mfe": mfe}})
    build_figures(list(inp.metrics), list(inp.utility), distributions, str(Path(smk.output.png[0]).parent),
                  defenses=dict(smk.params.defenses), recipe_paths=list(inp.recipes),
                  results_root=smk.params.results_root)


run(snakemake, main)  # noqa: F821
