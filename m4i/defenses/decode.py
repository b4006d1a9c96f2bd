"""Output-side defense: the captioner answers with a sampled and/or truncated caption.

Nothing is trained: the defended captioner is its undefended twin's weights answering through
other decode settings (``m4i.plan.Plan.weights_of``). Sampling only hides membership from an
attacker who asks once; the study therefore also runs multi-query attacks (``queries: N``)
against every sampling target, which see N independent samples per image.
"""
from __future__ import annotations

from m4i.io import M4IError

TRAINING = False
KEYS = ("method", "temperature", "top_k", "truncate")


def check(name: str, params: dict, arch: dict) -> None:
    if params.get("method", "sample") != "sample" and ("temperature" in params or "top_k" in params):
        raise M4IError(f"config key defenses.{name}: temperature/top_k need method 'sample'")
    if params.get("method", "sample") != "sample" and params.get("truncate") is None:
        raise M4IError(f"config key defenses.{name}: a decode defense samples, truncates, or both")


def decode_for(params: dict, decode: dict) -> dict:
    method = params.get("method", "sample")
    decode["method"] = method
    if method == "sample":
        decode["temperature"] = float(params.get("temperature", 1.0))
        decode["top_k"] = int(params.get("top_k", 0))
        decode["beam_size"] = 1
    else:
        decode.pop("temperature", None)
        decode.pop("top_k", None)
    if params.get("truncate") is not None:
        decode["truncate"] = int(params["truncate"])
    return decode
