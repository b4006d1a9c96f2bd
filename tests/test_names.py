"""Each closed list of names lives once (m4i/names.py): the schema's enums, the rules and the
package modules must agree with it."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from m4i import names as N
from m4i.config import SCHEMA

REPO = Path(__file__).resolve().parents[1]
S = yaml.safe_load(SCHEMA.read_text())
P = S["properties"]
DATASET = P["datasets"]["additionalProperties"]
FEATURES = P["features"]["additionalProperties"]
CAPTIONER = P["captioners"]["additionalProperties"]


@pytest.mark.parametrize("enum, names", [
    (S["$defs"]["train"]["properties"]["optimizer"]["enum"], N.OPTIMIZERS),
    (S["$defs"]["decode"]["properties"]["method"]["enum"], N.DECODE_METHODS),
    (DATASET["properties"]["kind"]["enum"], N.DATASET_KINDS),
    (DATASET["allOf"][0]["then"]["properties"]["style"]["enum"], N.SYNTHETIC_STYLES),
    (DATASET["allOf"][0]["else"]["properties"]["kind"]["enum"], N.REAL_DATASET_KINDS),
    (P["splits"]["properties"]["protocol"]["enum"], N.PROTOCOLS),
    (list(P["splits"]["properties"]["sizes"]["properties"]), N.SPLIT_NAMES),
    (P["splits"]["properties"]["sizes"]["required"], N.REQUIRED_SPLITS),
    (FEATURES["properties"]["backbone"]["enum"], N.BACKBONES),
    (FEATURES["then"]["properties"]["layers"]["items"]["enum"], N.VGG_TAPS),
    (FEATURES["else"]["properties"]["layers"]["items"]["enum"], N.RESNET_TAPS),
    (CAPTIONER["properties"]["kind"]["enum"], N.CAPTIONER_KINDS),
    (CAPTIONER["allOf"][0]["then"]["properties"]["encoder"]["properties"]["backbone"]["enum"], N.BACKBONES),
    (P["mfe"]["additionalProperties"]["properties"]["kind"]["enum"], N.MFE_KINDS),
    (P["attacks"]["additionalProperties"]["properties"]["signal"]["enum"], N.SIGNALS),
    (P["attacks"]["additionalProperties"]["properties"]["method"]["enum"], N.ATTACK_METHODS),
    (P["defenses"]["additionalProperties"]["properties"]["kind"]["enum"], N.DEFENSE_KINDS),
    (P["defense_evaluation"]["properties"]["attackers"]["items"]["enum"], N.ATTACKERS),
])
def test_schema_enums_equal_the_package_lists(enum, names):
    assert list(enum) == list(names)


def _enums(node, path=""):
    """Every enum in the schema, with where it is."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "enum":
                yield path, v
            else:
                yield from _enums(v, f"{path}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _enums(v, f"{path}/{i}")


def test_every_schema_enum_is_a_package_list():
    """A new enum in the schema must be one of the lists above (or it would drift unchecked)."""
    lists = {tuple(v) for k, v in vars(N).items() if k.isupper() and isinstance(v, tuple)}
    for where, enum in _enums(S):
        assert tuple(enum) in lists, f"schema enum at {where} ({enum}) is not a list of m4i/names.py"


def test_package_modules_use_the_lists():
    from m4i import attacks, mfe
    from m4i.data import loaders, splits, synthetic
    from m4i.models import features, recipe, train

    assert attacks.METHODS is N.ATTACK_METHODS and synthetic.STYLES is N.SYNTHETIC_STYLES
    assert loaders.LOADERS is N.REAL_DATASET_KINDS and splits.SPLIT_NAMES is N.SPLIT_NAMES
    assert features.BACKBONES is N.BACKBONES and train.CAPTIONER_KINDS is N.CAPTIONER_KINDS
    assert recipe.OPTIMIZERS is N.OPTIMIZERS and sorted(mfe.KINDS) == sorted(N.MFE_KINDS)
    assert set(N.FAMILY_OF_SIGNAL) == set(N.SIGNALS)


def test_every_defense_kind_is_a_module():
    import importlib

    for kind in N.DEFENSE_KINDS:
        mod = importlib.import_module(f"m4i.defenses.{kind}")
        assert isinstance(mod.TRAINING, bool) and callable(mod.check)
        assert hasattr(mod, "recipe") == mod.TRAINING and hasattr(mod, "decode_for") != mod.TRAINING


def test_rules_import_the_lists_instead_of_copying_them():
    """No rule file spells a closed list out: they import m4i.names."""
    text = "\n".join(p.read_text() for p in (REPO / "rules").glob("*.smk"))
    for name in ("TABLE_NAMES", "FIGURE_NAMES", "SPLIT_NAMES", "PROTOCOLS"):
        values = getattr(N, name)
        assert not re.search(r"\[\s*" + r"\s*,\s*".join(f'"{v}"' for v in values[:2]), text), name
    assert "from m4i.names import" in (REPO / "rules" / "common.smk").read_text()


def test_every_table_and_figure_has_a_report_caption():
    for t in N.TABLE_NAMES:
        assert (REPO / "report" / f"table_{t}.rst").is_file(), t
    for f in N.FIGURE_NAMES:
        assert (REPO / "report" / f"figure_{f}.rst").is_file(), f
