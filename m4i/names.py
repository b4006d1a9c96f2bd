"""The study's closed lists of names, each defined once.

Why one module: the config schema, the package and the Snakemake rules all need these lists
(which splits exist, which protocols, which tables a study writes, ...). Copies drift: the
schema once allowed optimizers ``[adam, sgd]`` while training also accepted ``adamw``. Here
every list lives once; ``rules/*.smk`` import them, the package modules import them, and
``tests/test_names.py`` checks that every enum in ``config/schema.yaml`` equals its list.

Nothing here imports anything heavy: the Snakefile imports this module at parse time.
"""
from __future__ import annotations

# --- data ---------------------------------------------------------------------------------------
DATASET_KINDS = ("synthetic", "flickr8k", "coco", "csv", "jsonl")
REAL_DATASET_KINDS = DATASET_KINDS[1:]
SYNTHETIC_STYLES = ("shapes", "doodles")

# Splits of one dataset, in the order they are cut from the seeded permutation. `val` is last
# and optional (size 0 when no defense needs a validation split), so adding it leaves every
# other split of an existing study unchanged.
SPLIT_NAMES = ("target_in", "target_out", "shadow_in", "shadow_out", "mfe", "heldout", "val")
REQUIRED_SPLITS = SPLIT_NAMES[:-1]
OPTIONAL_SPLITS = ("val",)
PROTOCOLS = ("disjoint", "paper_protocol_confounded")
DEFAULT_PROTOCOL = "disjoint"

# --- models -------------------------------------------------------------------------------------
BACKBONES = ("resnet18", "resnet50", "resnet152", "vgg16")
RESNET_TAPS = ("layer1", "layer2", "layer3", "layer4")
VGG_TAPS = ("pool1", "pool2", "pool3", "pool4", "pool5", "fc6", "fc7")
CAPTIONER_KINDS = ("show_tell", "vit_gpt2")
OPTIMIZERS = ("adam", "adamw", "sgd")
DECODE_METHODS = ("greedy", "beam", "sample")
MFE_KINDS = ("paper", "open_clip")

# Roles of a captioner in a scenario: the attacked target, the attacker's shadows (index i),
# the attacker's reference captioners for per-example calibration (index i).
ROLES = ("target", "shadow", "ref")

# --- attacks ------------------------------------------------------------------------------------
# Per-record signals: caption similarity to the references (metrics), image-caption features of
# an MFE (mfe), the blind baseline's statistics (blind), and the teacher-forced log-likelihood of
# each reference caption (loglik: gray-box, needs the model's token probabilities).
SIGNALS = ("metrics", "mfe", "blind", "loglik")
# The paper's shadow-calibrated attacks (one global rule fitted on shadows), then the per-example
# calibrated ones (LiRA, Carlini et al. 2022; RMIA, Zarifzadeh et al. 2024).
PAPER_METHODS = ("threshold", "linear_svm", "logreg", "mlp")
CALIBRATED_METHODS = ("lira_online", "lira_offline", "rmia_online", "rmia_offline")
ATTACK_METHODS = PAPER_METHODS + CALIBRATED_METHODS
# What an attack needs of the captioner: nothing (blind), one generated caption per record
# (black-box), several sampled captions per record (multi-query), token probabilities (gray-box).
ACCESS_LEVELS = ("none", "black-box", "multi-query", "gray-box")
# Attack family: the paper's metric-based (MB) and feature-based (FB) M^4I and the blind baseline
# that never queries the model, by signal; the calibrated attacks by method.
FAMILY_OF_SIGNAL = {"metrics": "mb", "mfe": "fb", "blind": "blind", "loglik": "mb"}
FAMILY_OF_METHOD = {"lira_online": "lira", "lira_offline": "lira", "rmia_online": "rmia", "rmia_offline": "rmia"}
FAMILIES = ("mb", "fb", "blind", "lira", "rmia")

# Attacker models against a defended target: trained its shadows without the defense (unaware) or
# with the same defense and parameters (adaptive).
ATTACKERS = ("unaware", "adaptive")

# Defense kinds, each a module of m4i.defenses: training-side (dp_sgd, regularize, relaxloss) or
# output-side (decode: sampled or truncated answers from the undefended weights).
DEFENSE_KINDS = ("dp_sgd", "regularize", "relaxloss", "decode")

# --- results ------------------------------------------------------------------------------------
# Tables: long-format data (CSV + a Markdown dump) and paper-style views (cells traceable through
# their CSV, Markdown and LaTeX grids); LATEX_TABLES also get a .tex (booktabs).
TABLE_NAMES = ("attacks", "summary", "quality", "blind", "paper_vs_run", "defenses",
               "paper_attacks", "paper_grid", "paper_quality", "low_fpr")
LATEX_TABLES = ("defenses", "paper_attacks", "paper_grid", "paper_quality", "low_fpr")
FIGURE_NAMES = ("roc_linear", "roc_loglog", "attack_summary", "distributions", "quality", "privacy_utility")
