"""What every Snakemake ``script:`` shares: logging, threads, seeding, error reporting, provenance.

A script is ``run(snakemake, main)`` where ``main(smk)`` reads inputs, calls one package function
and writes outputs atomically. After ``main`` returns, provenance sidecars are written for every
output (m4i.provenance): the job's inputs and params, or, where one job makes several artifacts
from different inputs (the attacks of one scenario), what ``main`` returns: a list of parts, each
``{"outputs", "inputs", "params", "wildcards"}`` of one artifact group (``params["config"]``: the
config it depends on). When ``main`` raises, outputs are removed so no half-written artifact stays.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Callable

from m4i.identity import Layout
from m4i.io import M4IError


def _setup_logging(log_files: list[str]) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    for f in log_files[:1]:
        Path(f).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(f, mode="w"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", handlers=handlers, force=True)


def configure_threads(threads: int) -> None:
    """Torch uses exactly the rule's ``threads:`` (what Snakemake gave the job, after scaling it
    to ``--cores``): intra-op threads = threads, one inter-op thread. More threads than the job
    was given would compete with the other jobs for the same cores. (Idle OpenMP threads sleep:
    ``OMP_WAIT_POLICY=PASSIVE`` is set when m4i is imported, before torch is.)

    Torch is not imported here: most jobs (attacks, metric signals, tables) never need it, and
    importing it costs ~2.5 s a job (measured; ~260 such jobs in the default study). A torch
    imported later reads the thread count from ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` (set here,
    the rule's value wins); one the script already imported is set directly.
    """
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    torch = sys.modules.get("torch")
    if torch is None:
        return
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set, or inter-op work already ran in this process
        pass


def run(smk, main: Callable) -> None:
    _setup_logging(list(smk.log))
    log = logging.getLogger(f"m4i.{smk.rule}")
    threads = max(1, int(getattr(smk, "threads", 1) or 1))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    configure_threads(threads)
    log.info("rule %s: %d thread(s)", smk.rule, threads)
    outputs = [str(o) for o in smk.output]
    t0 = time.time()
    try:
        parts = main(smk)
    except M4IError as exc:
        log.error("%s", exc)
        _remove(outputs)
        sys.exit(f"m4i: error in rule {smk.rule}: {exc}")
    except BaseException:
        log.exception("rule %s failed", smk.rule)
        _remove(outputs)
        raise
    log.info("rule %s done in %.1f s", smk.rule, time.time() - t0)
    _provenance(smk, outputs, parts)


def _remove(outputs: list[str]) -> None:
    import shutil

    for out in outputs:
        p = Path(out)
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        elif p.exists():
            p.unlink()


def _provenance(smk, outputs: list[str], parts: list[dict] | None = None) -> None:
    from m4i import provenance

    config = dict(smk.config)
    wildcards = {k: v for k, v in smk.wildcards.items()}
    if parts is None:
        parts = [{"outputs": outputs, "inputs": [str(i) for i in smk.input],
                  "params": {k: v for k, v in smk.params.items()}, "wildcards": wildcards}]
    elif sorted(o for part in parts for o in part["outputs"]) != sorted(outputs):
        raise M4IError(f"rule {smk.rule}: the provenance parts do not cover the job's outputs exactly")
    for part in parts:
        params = part["params"]
        seed = params.get("seed", part["wildcards"].get("seed"))
        provenance.write_sidecar(
            results_root=Layout.of(config).root,
            rule=smk.rule,
            outputs=part["outputs"],
            inputs=part["inputs"],
            params=params,
            wildcards=part["wildcards"],
            config_subset=params.get("config", {}),
            seed=int(seed) if seed is not None else None,
            log=str(smk.log[0]) if len(smk.log) else None,
        )
