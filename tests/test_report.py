"""Tables and figures from hand-made metrics.json / utility JSON files."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from pathlib import Path

import yaml

from m4i.identity import ScenarioId, attack_identity
from m4i.io import M4IError, write_json
from m4i.report import tables as T

CONFIG = yaml.safe_load((Path(__file__).resolve().parents[1] / "config" / "config.yaml").read_text())


def identity_fields(scenario, attack):
    return {"attack": attack_identity(attack, CONFIG["attacks"][attack]).fields(),
            "scenario": ScenarioId.parse(scenario).fields()}


SHADOW_SIDE = {"data-restricted": "doodles-lstm", "model-restricted": "shapes-tfm"}


def metrics_doc(scenario, attack, seed, asr, auc, *, tpr1=0.2, tpr01=None, refs=True, cv=None, target=None):
    tpr = {"0.01": {"target_fpr": 0.01, "defined": True, "tpr": tpr1, "fpr": 0.01, "threshold": 0.9,
                    "tp": round(tpr1 * 300), "fp": 3, "n_pos": 300, "n_neg": 300},
           "0.001": ({"target_fpr": 0.001, "defined": True, "tpr": tpr01, "fpr": 0.001}
                     if tpr01 is not None else {"defined": False, "reason": "too few negatives"})}
    return {
        "attack": attack, "scenario": scenario, "seed": seed,
        "identity": identity_fields(scenario, attack),
        "target_model": target or f"shapes-lstm-target-s{seed}", "shadow_model": SHADOW_SIDE.get(ScenarioId.parse(scenario).name, "shapes-lstm") + f"-shadow0-s{seed}",
        "signal": "metrics", "uses_references": refs,
        "info": {} if cv is None else {"shadow_cv_auc": cv, "shadow_cv_accuracy": cv - 0.05, "shadow_fit_auc": 0.99},
        "decision": {"rule": "score >= threshold", "threshold": 0.5},
        "metrics": {"n": 600, "n_members": 300, "n_nonmembers": 300,
                    "attack_success_rate": asr, "precision": asr + 0.01, "recall": asr - 0.01,
                    "auc": auc, "ci95": {"auc": [auc - 0.05, auc + 0.05],
                                         "attack_success_rate": [asr - 0.04, asr + 0.04],
                                         "n_bootstrap": 100, "seed": 0,
                                         "tpr_at_fpr": {"0.01": [tpr1 - 0.1, tpr1 + 0.1], "0.001": None}},
                    "tpr_at_fpr": tpr,
                    "roc": {"fpr": [0.0, 0.0005, 0.01, 0.3, 1.0], "tpr": [0.0, 0.05, 0.2, 0.8, 1.0],
                            "thresholds": [2.0, 0.95, 0.9, 0.5, 0.0]}},
    }


# scenario, attack, seed, asr, auc, shadow_cv_auc (None: no shadow fit)
# On the shadow side mb-logreg looks best (CV AUC 0.80 > 0.70) although mb-svm is better on the
# target: the tables must pick mb-logreg (no selection on target data).
RUNS = [
    ("unrestricted", "mb-svm", 0, 0.70, 0.78, 0.70),
    ("unrestricted", "mb-svm", 1, 0.80, 0.86, 0.70),
    ("unrestricted", "mb-logreg", 0, 0.60, 0.66, 0.80),
    ("unrestricted", "mb-logreg", 1, 0.70, 0.74, 0.80),
    ("unrestricted", "fb-paper-mlp", 0, 0.90, 0.95, 0.90),
    ("unrestricted", "fb-paper-mlp", 1, 0.95, 0.97, 0.90),
    ("unrestricted", "blind", 0, 0.50, 0.49, 0.50),
    ("unrestricted", "blind", 1, 0.52, 0.51, 0.50),
    ("data-restricted", "mb-svm", 0, 0.62, 0.68, 0.60),
    ("unrestricted-paper-protocol-confounded", "blind", 0, 0.95, 0.99, 0.99),
]
# Further runs of the richer fixture (``full_study``): confounded attacks, a calibrated attack and
# defended scenarios (defense dp1 and sample, both attacker models), seed 0 only.
MORE = [
    ("unrestricted-paper-protocol-confounded", "mb-logreg", 0, 0.97, 0.99, 0.99),
    ("unrestricted-paper-protocol-confounded", "fb-paper-mlp", 0, 0.98, 1.00, 0.99),
    ("unrestricted", "lira-online-bb", 0, 0.66, 0.90, None),
    ("unrestricted@dp1-unaware", "mb-svm", 0, 0.52, 0.55, 0.52),
    ("unrestricted@dp1-unaware", "mb-logreg", 0, 0.51, 0.53, 0.56),
    ("unrestricted@dp1-unaware", "fb-paper-mlp", 0, 0.53, 0.56, 0.55),
    ("unrestricted@dp1-adaptive", "mb-logreg", 0, 0.55, 0.58, 0.57),
    ("unrestricted@dp1-adaptive", "fb-paper-mlp", 0, 0.54, 0.57, 0.58),
    ("unrestricted@sample-unaware", "mb-logreg", 0, 0.60, 0.64, 0.61),
    ("unrestricted@sample-adaptive", "mb-logreg", 0, 0.62, 0.66, 0.66),
]
DEFENSES = {"dp1": {"kind": "dp_sgd", "epsilon": 1.0, "max_grad_norm": 1.0, "batch_images": 64},
            "sample": {"kind": "decode", "method": "sample", "temperature": 1.0, "top_k": 0}}


def target_of(scenario, seed):
    sid = ScenarioId.parse(scenario)
    suffix = f"-{sid.defense}" if sid.defense else ""
    return f"shapes-lstm-target-s{seed}{suffix}" + ("-paper-protocol-confounded" if "confounded" in scenario else "")


def write_runs(root, runs):
    paths = []
    for scen, att, seed, asr, auc, cv in runs:
        p = root / "attacks" / scen / att / f"s{seed}" / "metrics.json"
        write_json(metrics_doc(scen, att, seed, asr, auc, tpr01=0.05 if att == "mb-svm" else None,
                               refs=att.startswith("mb"), cv=cv, target=target_of(scen, seed)), p)
        paths.append(str(p))
    return paths


def utility_doc(held_cider, mem_cider, **extra):
    return {"heldout": {"bleu1": 0.6, "bleu4": 0.2, "cider": held_cider},
            "members": {"bleu1": 0.8, "bleu4": 0.4, "cider": mem_cider},
            "gap": {"bleu1": 0.2, "bleu4": 0.2, "cider": mem_cider - held_cider},
            "baseline_fixed_caption": {"caption": "a red circle", "heldout": {"bleu1": 0.5, "bleu4": 0.1, "cider": 0.3}},
            "content_accuracy": {"heldout": {"colour": 0.7}, "members": {"colour": 0.9},
                                 "baseline_fixed_caption": {"colour": 0.25}}, **extra}


@pytest.fixture()
def study(tmp_path):
    root = tmp_path / "results" / "default"
    paths = write_runs(root, RUNS)
    util = root / "utility" / "shapes-lstm-target-s0.json"
    write_json(utility_doc(0.9, 1.5), util)
    return root, paths, [str(util)]


@pytest.fixture()
def full_study(study):
    """``study`` plus confounded attacks, a calibrated attack, defended scenarios, their targets'
    utility and a DP checkpoint carrying the accountant's recipe."""
    from m4i.io import save_torch

    root, paths, util = study
    paths = paths + write_runs(root, MORE)
    u1 = root / "utility" / "shapes-lstm-target-s1.json"
    write_json(utility_doc(1.1, 1.5), u1)
    udp = root / "utility" / "shapes-lstm-target-s0-dp1.json"
    write_json(utility_doc(0.4, 0.45), udp)
    usample = root / "utility" / "shapes-lstm-target-s0-sample.json"
    write_json(utility_doc(0.7, 1.0), usample)
    ckpt = root / "models" / "shapes-lstm-target-s0-dp1.pt"
    save_torch({"state_dict": {}, "recipe": {"defense": "dp_sgd", "epsilon_achieved": 0.98, "delta": 1e-4,
                                              "noise_multiplier": 3.2, "max_grad_norm": 1.0}}, ckpt)
    return root, paths, util + [str(u1), str(udp), str(usample)], [str(ckpt)]


def test_attacks_table_rows(study):
    root, paths, _ = study
    df = T.attacks_table(paths, root)
    assert len(df) == len(RUNS)
    assert df["row_id"].iloc[0] == "attack:unrestricted:mb-svm:s0"
    r = df.set_index("row_id").loc["attack:unrestricted:fb-paper-mlp:s1"]
    assert r["family"] == "fb" and r["attack_success_rate"] == 0.95 and r["auc"] == 0.97
    assert (r["asr_ci_lo"], r["asr_ci_hi"]) == pytest.approx((0.91, 0.99))
    assert r["tpr@1%fpr"] == 0.2 and math.isnan(r["tpr@0.1%fpr"])  # undefined, not 0
    assert r["sources"] == "attacks/unrestricted/fb-paper-mlp/s1/metrics.json"
    svm = df.set_index("row_id").loc["attack:unrestricted:mb-svm:s0"]
    assert svm["tpr@0.1%fpr"] == 0.05 and bool(svm["uses_references"])
    assert set(df["family"]) == {"mb", "fb", "blind"}
    # config order kept: scenarios in order of first appearance
    assert list(dict.fromkeys(df["scenario"])) == ["unrestricted", "data-restricted", "unrestricted-paper-protocol-confounded"]


def test_attacks_table_rejects_path_content_mismatch(tmp_path):
    p = tmp_path / "attacks" / "unrestricted" / "mb-svm" / "s0" / "metrics.json"
    write_json(metrics_doc("unrestricted", "mb-logreg", 0, 0.6, 0.6), p)
    with pytest.raises(M4IError, match="mb-logreg"):
        T.attacks_table([str(p)], tmp_path)


def test_attacks_table_rejects_paths_outside_root(study, tmp_path):
    root, paths, _ = study
    with pytest.raises(M4IError, match="not under the results root"):
        T.attacks_table(paths, tmp_path / "elsewhere")


def test_summary_mean_ci_over_seeds_and_single_seed_bootstrap(study):
    root, paths, _ = study
    s = T.summary_table(T.attacks_table(paths, root)).set_index("row_id")
    svm = s.loc["summary:unrestricted:mb-svm"]
    assert svm["n_seeds"] == 2 and svm["seeds"] == "0;1"
    assert svm["attack_success_rate_mean"] == pytest.approx(0.75)
    half = 12.7062047 * (0.1 / math.sqrt(2)) / math.sqrt(2)  # t(0.975, 1) * sd / sqrt(n)
    assert svm["attack_success_rate_ci_lo"] == pytest.approx(0.75 - half, rel=1e-6)
    assert svm["ci_method"] == "t over seeds"
    assert svm["sources"].split(";") == ["attacks/unrestricted/mb-svm/s0/metrics.json",
                                         "attacks/unrestricted/mb-svm/s1/metrics.json"]
    # tpr@0.1% undefined in every seed of mb-logreg -> undefined summary
    assert math.isnan(s.loc["summary:unrestricted:mb-logreg", "tpr@0.1%fpr_mean"])
    single = s.loc["summary:data-restricted:mb-svm"]
    assert single["ci_method"].startswith("bootstrap")
    assert (single["auc_mean"], single["auc_ci_lo"], single["auc_ci_hi"]) == pytest.approx((0.68, 0.63, 0.73))


def test_paper_vs_run_averages(full_study):
    root, paths, _, _ = full_study
    s = T.summary_table(T.attacks_table(paths, root))
    settings = {"study": "default", "datasets": ["shapes", "doodles"], "archs": ["lstm", "tfm"], "seeds": [0, 1]}
    p = T.paper_vs_run_table(s, settings).set_index("row_id")
    # MB: (mean(.70,.80) + mean(.60,.70)) / 2 = 0.70; FB: mean(.90,.95) = 0.925
    assert p.loc["paper:mb", "run_asr_pct"] == pytest.approx(70.0)
    assert p.loc["paper:mb", "difference_pp"] == pytest.approx(-2.5)
    assert p.loc["paper:fb", "run_asr_pct"] == pytest.approx(92.5)
    assert p.loc["paper:fb", "paper_asr_pct"] == 94.83
    assert p.loc["paper:mb", "n_attacks"] == 2 and p.loc["paper:mb", "datasets"] == "shapes;doodles"
    assert "data-restricted" not in p.loc["paper:mb", "sources"]  # unrestricted only
    assert "@" not in p.loc["paper:mb", "sources"]  # no defended scenario
    # the same attack on the confounded split, and the blind baseline on both
    assert p.loc["paper:mb", "confounded_asr_pct"] == pytest.approx(97.0)
    assert p.loc["paper:mb", "blind_honest_auc"] == pytest.approx(0.50)
    assert p.loc["paper:mb", "blind_confounded_auc"] == pytest.approx(0.99)
    lr = p.loc["paper:mb:mb-logreg"]
    assert (lr["run_auc"], lr["confounded_auc"]) == pytest.approx((0.70, 0.99))
    assert lr["run_asr_pct"] == pytest.approx(65.0) and lr["paper_asr_pct"] == 72.5
    svm = p.loc["paper:mb:mb-svm"]
    assert math.isnan(svm["confounded_auc"]) and svm["run_auc"] == pytest.approx(0.82)  # not run there
    assert "shadow_out = target_out" in lr["note"] and "two leaks" in lr["note"]
    assert "attacks/unrestricted-paper-protocol-confounded/mb-logreg/s0/metrics.json" in lr["sources"].split(";")
    assert math.isnan(p.loc["paper:lira:lira-online-bb", "paper_asr_pct"])


def test_blind_vs_attacks_flags_confounded(study):
    root, paths, _ = study
    b = T.blind_vs_attacks_table(T.summary_table(T.attacks_table(paths, root))).set_index("row_id")
    conf = b.loc["blind:unrestricted-paper-protocol-confounded"]
    assert bool(conf["confounded"]) and conf["blind_auc"] == 0.99 and conf["mb_n_attacks"] == 0
    assert "blind" in conf["note"]
    un = b.loc["blind:unrestricted"]
    assert not un["confounded"] and un["blind_auc"] == pytest.approx(0.50)
    # best = highest cross-validated SHADOW AUC (mb-logreg), not the higher target AUC (mb-svm)
    assert un["mb_best_attack"] == "mb-logreg" and un["mb_best_auc"] == pytest.approx(0.70)
    assert un["mb_best_shadow_cv_auc"] == pytest.approx(0.80) and un["fb_best_auc"] == pytest.approx(0.96)
    assert un["note"] == ""


def test_caption_quality_table(study):
    root, _, util = study
    c = T.caption_quality_table(util, root).set_index("row_id")
    r = c.loc["utility:shapes-lstm-target-s0:bleu4"]
    assert (r["heldout"], r["members"], r["gap"], r["fixed_caption_heldout"]) == (0.2, 0.4, 0.2, 0.1)
    assert r["arch"] == "lstm" and r["role"] == "target" and r["sources"] == "utility/shapes-lstm-target-s0.json"
    assert list(c["metric"][:3]) == ["bleu1", "bleu4", "cider"]
    acc = c.loc["utility:shapes-lstm-target-s0:content_accuracy.colour"]
    assert acc["members"] == 0.9 and acc["gap"] == pytest.approx(0.2) and acc["fixed_caption_heldout"] == 0.25


def test_build_tables_writes_csv_and_markdown(study):
    root, paths, util = study
    out = root / "tables"
    written = T.build_tables(paths, util, root, out, {"study": "default", "seeds": [0, 1]})
    assert len(written) == 2 * 10 + 5 and all((out / p).stat().st_size > 0 for p in written)
    back = pd.read_csv(out / "attacks.csv").set_index("row_id")
    assert math.isnan(back.loc["attack:unrestricted:blind:s0", "tpr@0.1%fpr"])
    md = (out / "attacks.md").read_text()
    assert "undefined" in md and "attack:unrestricted:mb-svm:s0" in md
    assert "paper:fb" in (out / "paper_vs_run.md").read_text()
    assert "nan" not in (out / "blind.md").read_text() and "n/a" in (out / "blind.md").read_text()
    assert (out / "quality.csv").is_file() and (out / "blind.md").is_file()


def test_figures_written_deterministic_and_readable(study, tmp_path):
    from PIL import Image

    from m4i.io import write_table
    from m4i.report.figures import build_figures

    root, paths, util = study
    write_table(pd.DataFrame({"record_id": list("abcd"), "rougeL_mean": [0.9, 0.8, 0.3, 0.2]}),
                tmp_path / "in.parquet")
    write_table(pd.DataFrame({"record_id": list("efgh"), "rougeL_mean": [0.4, 0.3, 0.2, 0.1]}),
                tmp_path / "out.parquet")
    write_table(pd.DataFrame({"record_id": list("abcd"), "label": [1, 1, 0, 0], "cos": [0.9, 0.7, 0.2, 0.1]}),
                tmp_path / "scores.parquet")
    dists = [{"title": "MB: ROUGE-L", "column": "rougeL_mean",
              "members": str(tmp_path / "in.parquet"), "nonmembers": str(tmp_path / "out.parquet")},
             {"title": "FB: cosine", "column": "cos", "path": str(tmp_path / "scores.parquet")}]
    a = build_figures(paths[:4] + paths[8:], util, dists, tmp_path / "a")
    names = sorted(p.split("/")[-1] for p in a)
    assert names == sorted(f"{f}.{e}" for f in ("roc_linear", "roc_loglog", "attack_summary",
                                                "distributions", "quality", "privacy_utility")
                            for e in ("png", "pdf"))
    assert all((tmp_path / "a" / n).stat().st_size > 1000 for n in names)
    # Same inputs -> same bytes (no timestamps in PNG/PDF metadata). Declared figures
    # without inputs still exist (a placeholder saying so).
    build_figures(paths[:4] + paths[8:], [], [], tmp_path / "b")
    for name in ("roc_loglog.png", "roc_loglog.pdf", "attack_summary.pdf"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert (tmp_path / "b" / "quality.png").stat().st_size > 1000
    with Image.open(tmp_path / "a" / "roc_linear.png") as im:
        assert im.size[0] > 1000


def test_distribution_input_names_missing_column(tmp_path):
    from m4i.io import write_table
    from m4i.report.figures import load_distribution

    write_table(pd.DataFrame({"record_id": ["a"], "label": [1], "score": [0.1]}), tmp_path / "s.parquet")
    with pytest.raises(M4IError, match="s.parquet: no column 'cos'"):
        load_distribution({"column": "cos", "path": str(tmp_path / "s.parquet")})


def test_headline_metrics(study):
    _, paths, _ = study
    h = T.headline_metrics(paths)
    assert h["attacks"]["unrestricted"]["mb-svm"]["attack_success_rate"] == pytest.approx(0.75)
    assert h["attacks"]["unrestricted"]["mb-logreg"]["tpr@0.1%fpr"] is None  # undefined, JSON null
    assert h["unrestricted_average_asr_pct"]["mb"] == {"run": pytest.approx(70.0), "paper": 72.5}


def test_tables_accept_real_evaluate_output(tmp_path):
    from m4i import evaluation
    import numpy as np

    labels = np.repeat([1, 0], 20)
    scores = np.linspace(0, 1, 40)[::-1]  # members score higher: perfect separation
    m = evaluation.evaluate(labels, scores, 0.5, fpr_targets=(0.01, 0.001), n_bootstrap=0, seed=0)
    p = tmp_path / "attacks" / "unrestricted" / "fb-clip-mlp" / "s0" / "metrics.json"
    write_json({"attack": "fb-clip-mlp", "scenario": "unrestricted", "seed": 0, "uses_references": False,
                "identity": identity_fields("unrestricted", "fb-clip-mlp"), "target_model": "t", "shadow_model": "s", "decision": {"threshold": 0.5}, "metrics": m}, p)
    r = T.attacks_table([str(p)], tmp_path).iloc[0]
    assert r["auc"] == 1.0 and r["attack_success_rate"] == 1.0 and r["family"] == "fb"
    assert math.isnan(r["auc_ci_lo"])  # n_bootstrap 0: no CI, not a crash
    assert math.isnan(r["tpr@1%fpr"])  # 0.01 * 20 negatives < 1: undefined


# ------------------------------------------------------------------------ selection, seeds, views, defenses
def test_summary_reports_sd_over_seeds_beside_each_seeds_bootstrap_ci(study):
    root, paths, _ = study
    s = T.summary_table(T.attacks_table(paths, root)).set_index("row_id")
    svm = s.loc["summary:unrestricted:mb-svm"]
    assert svm["auc_mean"] == pytest.approx(0.82) and svm["auc_sd"] == pytest.approx(0.08 / math.sqrt(2))
    assert svm["auc_boot_ci_per_seed"] == "s0:[0.73,0.83];s1:[0.81,0.91]"
    assert svm["shadow_cv_auc_mean"] == pytest.approx(0.70)
    assert math.isnan(s.loc["summary:data-restricted:mb-svm", "auc_sd"])  # one seed: no sd
    assert s.loc["summary:data-restricted:mb-svm", "shadow_side"] == "doodles/lstm"


def test_best_is_chosen_on_the_shadow_side_and_never_for_calibrated_attacks(full_study):
    root, paths, _, _ = full_study
    s = T.summary_table(T.attacks_table(paths, root))
    un = s[s["scenario"] == "unrestricted"]
    assert T.best_by_shadow(un, "mb")["attack"] == "mb-logreg"  # shadow CV 0.80 > 0.70 (target says mb-svm)
    with pytest.raises(M4IError, match="no shadow fit"):
        T.best_by_shadow(un, "lira")
    b = T.blind_vs_attacks_table(s).set_index("row_id").loc["blind:unrestricted"]
    assert b["calibrated_attacks"] == "lira-online-bb=0.900"
    # files without a cross-validated shadow AUC (older runs) are never picked
    old = un.assign(shadow_cv_auc_mean=float("nan"))
    assert T.best_by_shadow(old, "mb") is None


def test_paper_views_cells_are_traceable_and_render_to_markdown_and_latex(full_study, tmp_path):
    from m4i.cli import table_sources

    root, paths, util, ckpts = full_study
    out = root / "tables"
    written = T.build_tables(paths, util, root, out, {"study": "default"}, defenses=DEFENSES, recipe_paths=ckpts)
    assert {p.rsplit("/", 1)[-1] for p in written} >= {"paper_attacks.tex", "paper_grid.md", "defenses.tex"}
    cells = pd.read_csv(out / "paper_attacks.csv").set_index("row_id")
    c = cells.loc["paper_attacks:AUC:mb-svm (MB):unrestricted"]
    # two seeds: mean ± sd [t interval over seeds, here wider than [0, 1] and clipped to it]
    assert T.mean_ci([0.78, 0.86])[1] < 0.4 and T.mean_ci([0.78, 0.86])[2] > 1.0
    assert c["cell"] == f"0.820 ± {0.08 / math.sqrt(2):.3f} [{T.mean_ci([0.78, 0.86])[1]:.3f}, 1.000]"
    one = cells.loc["paper_attacks:AUC:mb-svm (MB):data-restricted"]
    assert one["cell"] == "0.680 [0.630, 0.730]"  # one seed: bootstrap CI
    assert cells.loc["paper_attacks:TPR at 1% FPR:mb-logreg (MB):unrestricted", "cell"] == "0.200 ± 0.000 [0.200, 0.200]"
    assert cells.loc["paper_attacks:TPR at 1% FPR:mb-svm (MB):data-restricted", "cell"] == "0.200 [0.100, 0.300]"
    assert not any("@" in r for r in cells.index)  # defended scenarios live in the defenses table
    # every cell traceable by the provenance command's own lookup
    assert table_sources(out / "paper_attacks.csv", "paper_attacks:AUC:mb-svm (MB):data-restricted") == [
        "attacks/data-restricted/mb-svm/s0/metrics.json"]
    md, tex = (out / "paper_attacks.md").read_text(), (out / "paper_attacks.tex").read_text()
    assert "| mb-svm (MB) | 0.820 ± " in md and "lira-online-bb (LIRA, calibrated)" in md
    assert r"\toprule" in tex and r"\bottomrule" in tex and r"$\pm$" in tex and "0.680 [0.630, 0.730]" in tex
    assert r"TPR at 1\% FPR" in tex  # LaTeX specials escaped
    grid = pd.read_csv(out / "paper_grid.csv").set_index("row_id")
    g = grid.loc["paper_grid:MB attack success rate (%):target shapes/lstm:shadow shapes/lstm"]
    assert g["attack"] == "mb-logreg" and g["cell"] == "65.0 ± 7.1 (mb-logreg)"
    assert "paper_grid:MB attack success rate (%):target shapes/lstm:shadow doodles/lstm" in grid.index
    assert not any("confounded" in r for r in grid.index)  # honest split only
    q = pd.read_csv(out / "paper_quality.csv").set_index("row_id")
    assert q.loc["paper_quality:Caption quality (held-out unless stated):shapes/lstm target:CIDEr", "cell"] == \
        f"1.000 ± {math.sqrt(0.02):.3f}"  # seeds 0 and 1: 0.9 and 1.1
    assert "shapes/lstm target [dp1]" in set(q["row"])


def test_defenses_table_rows_selection_epsilon_and_utility(full_study):
    from m4i.report.defenses import defenses_table, read_recipes

    root, paths, util, ckpts = full_study
    attacks = T.attacks_table(paths, root)
    d = defenses_table(attacks, util, root, DEFENSES, read_recipes(ckpts)).set_index("row_id")
    assert list(d.index) == ["defense:unrestricted", "defense:unrestricted@dp1-unaware", "defense:unrestricted@dp1-adaptive",
                             "defense:unrestricted@sample-unaware", "defense:unrestricted@sample-adaptive"]
    u = d.loc["defense:unrestricted"]
    assert u["defense"] == "none" and u["attacker"] == "none" and u["mb_attack"] == "mb-logreg"
    assert u["heldout_cider"] == pytest.approx(1.0) and u["gap_cider"] == pytest.approx(0.5) and u["n_seeds"] == 2
    # the undefended row picks from the defended rows' menu of attacks (no blind run against a defense here)
    assert math.isnan(u["blind_auc"])
    dp = d.loc["defense:unrestricted@dp1-unaware"]
    assert dp["kind"] == "dp_sgd" and dp["epsilon_target"] == 1.0 and dp["epsilon_achieved"] == pytest.approx(0.98)
    assert dp["noise_multiplier"] == pytest.approx(3.2) and '"epsilon":1.0' in dp["params"]
    # shadow-side choice: mb-logreg (CV 0.56) over mb-svm (0.52) although mb-svm is stronger on the target
    assert dp["mb_attack"] == "mb-logreg" and dp["mb_auc"] == pytest.approx(0.53)
    assert (dp["mb_auc_ci_lo"], dp["mb_auc_ci_hi"]) == pytest.approx((0.48, 0.58))
    assert dp["mb_tpr@1%fpr"] == pytest.approx(0.2) and dp["fb_attack"] == "fb-paper-mlp"
    assert dp["heldout_cider"] == pytest.approx(0.4) and dp["gap_cider"] == pytest.approx(0.05)
    assert "utility/shapes-lstm-target-s0-dp1.json" in dp["sources"].split(";")
    sample = d.loc["defense:unrestricted@sample-adaptive"]
    assert sample["kind"] == "decode" and math.isnan(sample["epsilon_target"]) and sample["attacker"] == "adaptive"
    assert sample["fb_attack"] is None or pd.isna(sample["fb_attack"])  # no FB attack ran: none, not a guess
    # absent recipe: epsilon_achieved unknown (NaN), the table still builds
    d2 = defenses_table(attacks, util, root, DEFENSES, {}).set_index("row_id")
    assert math.isnan(d2.loc["defense:unrestricted@dp1-unaware", "epsilon_achieved"])
    with pytest.raises(M4IError, match="defenses does not declare"):
        defenses_table(attacks, util, root, {"sample": DEFENSES["sample"]}, {})


def test_defenses_outputs_written_and_figure_has_points(full_study, tmp_path):
    from m4i.report.figures import build_figures

    root, paths, util, ckpts = full_study
    out = root / "tables"
    T.build_tables(paths, util, root, out, {"study": "default"}, defenses=DEFENSES, recipe_paths=ckpts)
    md = (out / "defenses.md").read_text()
    assert "unrestricted: dp1 (dp_sgd) · unaware · ε=0.98" in md and "undefended" in md
    assert "m4i provenance tables/defenses.csv" in md
    written = build_figures(paths, util, [], tmp_path / "f", defenses=DEFENSES, recipe_paths=ckpts)
    assert (tmp_path / "f" / "privacy_utility.png").stat().st_size > 20000  # points, not the placeholder
    # no defended scenario: the declared outputs still exist and say so
    plain = [p for p in paths if "@" not in p]
    T.build_tables(plain, util, root, tmp_path / "t", {"study": "default"})
    assert "no defense" in (tmp_path / "t" / "defenses.md").read_text()
    assert len(written) == 12


def test_low_fpr_view_lists_every_attack_with_counts_and_interval(full_study):
    root, paths, util, ckpts = full_study
    out = root / "tables"
    T.build_tables(paths, util, root, out, {"study": "default"}, defenses=DEFENSES, recipe_paths=ckpts)
    attacks = pd.read_csv(out / "attacks.csv").set_index("row_id")
    r = attacks.loc["attack:unrestricted:lira-online-bb:s0"]
    # the counts and the bootstrap interval of the operating point, beside the rate
    assert (r["tpr@1%fpr"], r["tpr@1%fpr_tp"], r["tpr@1%fpr_fp"]) == (0.2, 60, 3)
    assert (r["tpr@1%fpr_ci_lo"], r["tpr@1%fpr_ci_hi"]) == pytest.approx((0.1, 0.3))
    assert math.isnan(r["tpr@0.1%fpr_tp"]) and math.isnan(r["tpr@0.1%fpr_ci_lo"])  # undefined, not 0
    summary = pd.read_csv(out / "summary.csv").set_index("row_id")
    assert summary.loc["summary:unrestricted:mb-svm", "tpr@1%fpr_counts_per_seed"] == \
        "s0:60/300 TP at 3/300 FP;s1:60/300 TP at 3/300 FP"
    cells = pd.read_csv(out / "low_fpr.csv").set_index("row_id")
    # only the undefended honest scenario with a calibrated attack; every attack of it, none picked
    assert set(cells["scenario"]) == {"unrestricted"}
    assert set(cells["attack"]) == {"mb-svm", "mb-logreg", "fb-paper-mlp", "blind", "lira-online-bb"}
    lira = "low_fpr:unrestricted: TPR at 1 % FPR:lira-online-bb (LIRA, calibrated)"
    assert cells.loc[f"{lira}:TPR [95 % CI]", "cell"] == "0.200 [0.100, 0.300]"
    assert cells.loc[f"{lira}:TP / members at FP / non-members", "cell"] == "s0:60/300 TP at 3/300 FP"
    assert cells.loc[f"{lira}:access", "cell"] == "black-box"
    assert cells.loc[f"{lira}:TPR [95 % CI]", "sources"] == "attacks/unrestricted/lira-online-bb/s0/metrics.json"
    assert cells.loc["low_fpr:unrestricted: TPR at 0.1 % FPR:blind (BLIND):TPR [95 % CI]", "cell"] == "undef."
    md = (out / "low_fpr.md").read_text()
    assert "## unrestricted: TPR at 1 % FPR" in md and "best" not in md.split("- No row")[0]
    assert r"TPR at 1 \% FPR" in (out / "low_fpr.tex").read_text()
