"""Study configuration: JSON-Schema validation (snakemake.utils.validate) plus cross-references.

Errors name the offending key, e.g. ``config key scenarios.unrestricted.shadow.arch: ...``.
"""
from __future__ import annotations

import os
from pathlib import Path

import yaml

from m4i.identity import ScenarioId
from m4i.io import M4IError

SCHEMA = Path(__file__).resolve().parents[1] / "config" / "schema.yaml"


def _key_path(path) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def _validation_error(exc: BaseException):
    """The jsonschema ValidationError inside whatever snakemake wrapped it in, if any."""
    import jsonschema

    seen = set()
    stack = [exc]
    while stack:
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, jsonschema.ValidationError):
            return e
        stack.extend(a for a in getattr(e, "args", ()) if isinstance(a, BaseException))
        if e.__cause__ is not None:
            stack.append(e.__cause__)
        if e.__context__ is not None:
            stack.append(e.__context__)
    return None


def _describe(err) -> str:
    import jsonschema

    err = jsonschema.exceptions.best_match([err, *err.context]) if err.context else err
    key = _key_path(err.absolute_path)
    if err.validator == "required":
        return f"config key {key}: {err.message}"
    if err.validator == "additionalProperties":
        return f"config key {key}: {err.message} (unknown key; see config/schema.yaml)"
    return f"config key {key}: {err.message}"


def validate_schema(config: dict, schema: str | os.PathLike = SCHEMA) -> None:
    from snakemake.utils import validate

    try:
        validate(config, str(schema), set_default=False)
    except Exception as exc:  # snakemake wraps jsonschema's error in a WorkflowError
        err = _validation_error(exc)
        if err is None:
            raise
        raise M4IError(_describe(err)) from None


def check_references(config: dict) -> None:
    """Names used in one section must exist in the section that defines them."""
    datasets, archs = config["datasets"], config["captioners"]
    feats, mfes = config["features"], config["mfe"]
    for name, arch in archs.items():
        feat = (arch.get("encoder") or {}).get("features")
        if feat is not None and feat not in feats:
            raise M4IError(f"config key captioners.{name}.encoder.features: unknown feature extractor {feat!r}")
    for name, mfe in mfes.items():
        if mfe["kind"] == "paper" and mfe.get("features") not in feats:
            raise M4IError(f"config key mfe.{name}.features: unknown feature extractor {mfe.get('features')!r}")
    for name, scn in config["scenarios"].items():
        try:
            ScenarioId(name)
        except M4IError as exc:
            raise M4IError(f"config key scenarios.{name}: {exc}") from None
        for side in ("target", "shadow"):
            if scn[side]["dataset"] not in datasets:
                raise M4IError(f"config key scenarios.{name}.{side}.dataset: unknown dataset {scn[side]['dataset']!r}")
            if scn[side]["arch"] not in archs:
                raise M4IError(f"config key scenarios.{name}.{side}.arch: unknown captioner {scn[side]['arch']!r}")
        for attack in scn.get("attacks") or []:
            if attack not in config["attacks"]:
                raise M4IError(f"config key scenarios.{name}.attacks: unknown attack {attack!r}")
    for name, attack in config["attacks"].items():
        if attack["signal"] == "mfe" and attack.get("mfe") not in mfes:
            raise M4IError(f"config key attacks.{name}.mfe: unknown MFE {attack.get('mfe')!r}")
        if attack["signal"] != "mfe" and "mfe" in attack:
            raise M4IError(f"config key attacks.{name}.mfe: only attacks with signal 'mfe' use an MFE")
    control = config["splits"].get("confounded_control")
    if control:
        for key in ("dataset", "nonmember_dataset"):
            if control[key] not in datasets:
                raise M4IError(f"config key splits.confounded_control.{key}: unknown dataset {control[key]!r}")


def _seeds_from_command_line(config: dict) -> None:
    """``snakemake --config seeds=[0,1,2]`` gives ``['0', '1', '2']``: Snakemake reads a list on
    its command line with YAML's BaseLoader, which makes every item a string. Seeds are the one
    list of numbers a person overrides there (README: several seeds), so decimal strings become
    ints, in place; anything else is left for the schema to reject by key."""
    seeds = config.get("seeds")
    if isinstance(seeds, list) and any(isinstance(s, str) for s in seeds):
        config["seeds"] = [int(s) if isinstance(s, str) and s.strip().isdecimal() else s for s in seeds]


def check_config(config: dict) -> dict:
    _seeds_from_command_line(config)
    validate_schema(config)
    check_references(config)
    return config


def canonical(value):
    """``value`` with every mapping's keys sorted, recursively (lists keep their order).

    For the config values a job takes as ``params``: Snakemake compares params by their ``repr``,
    so the same settings with keys in another order (a YAML dumper sorts them, a person moves a
    line) would otherwise rerun every job (found by the rerun test). Order-bearing config (the
    order of scenarios, attacks, defenses in the tables) is read from ``config`` itself, not from
    these values."""
    if isinstance(value, dict):
        return {k: canonical(value[k]) for k in sorted(value)}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    return value


def load_config(path: str | os.PathLike) -> dict:
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise M4IError(f"{path}: cannot read config ({exc})") from exc
    if not isinstance(config, dict):
        raise M4IError(f"{path}: a config must be a mapping of keys")
    try:
        return check_config(config)
    except M4IError as exc:
        raise M4IError(f"{path}: {exc}") from None
