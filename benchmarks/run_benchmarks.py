"""Speed targets of the study, each a ratio of two ways of doing the same work, measured side by
side in one run on the same machine (absolute seconds vary between machines; ratios much less).

    .venv/bin/python benchmarks/run_benchmarks.py [--out benchmarks/results.json]

Targets live in benchmarks/targets.yaml; the script exits 1 when one is missed.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = Path(__file__).resolve().parent


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _dataset(tmp: Path, n: int):
    from m4i.data.manifest import records_to_manifest
    from m4i.data.synthetic import generate

    records = generate(tmp / "images", n, 48, "shapes", 7, "bench")
    return records_to_manifest(records, tmp / "images"), tmp / "images"


def bench_corpus_vs_per_record_metrics(manifest, n: int = 40) -> dict:
    """Caption metrics: one corpus-level call per table vs one call per record (ENV.md)."""
    from m4i.signals.caption_metrics import corpus_scores

    sub = manifest.head(n)
    cands = {r: caps[0] for r, caps in zip(sub.record_id, sub.captions)}
    refs = {r: caps[1:] for r, caps in zip(sub.record_id, sub.captions)}
    corpus_scores(dict(list(cands.items())[:2]), refs)  # start the METEOR JVM outside the timing
    corpus = _timed(lambda: corpus_scores(cands, refs))
    per_record = _timed(lambda: [corpus_scores({r: c}, {r: refs[r]}) for r, c in cands.items()])
    return {"corpus_s": corpus, "per_record_s": per_record, "ratio": per_record / corpus, "records": n}


def _arch(encoder: dict, grouped: bool) -> dict:
    return {
        "kind": "show_tell", "encoder": encoder, "embed": 128, "hidden": 256, "layers": 1,
        "train": {"epochs": 2, "batch_size": 32, "optimizer": "adam", "lr": 0.002, "length_grouped": grouped},
        "decode": {"method": "greedy", "max_len": 20},
    }


def bench_training(manifest, root, tmp: Path, n: int = 200) -> dict:
    """LSTM epochs: length-grouped vs random batches, and feature cache vs end-to-end encoder."""
    from m4i.models.features import extract_features
    from m4i.models.train import train_captioner
    from m4i.text import build_vocab

    records = manifest.head(n)
    vocab = build_vocab((c for caps in records.captions for c in caps), 1)
    spec = {"backbone": "resnet18", "weights": "none", "layers": ["layer2", "layer3", "layer4"], "grid": 3,
            "input_size": 96, "bn_recalibrate": True, "batch_size": 64}
    features = extract_features(records, root, spec, 0)

    def train(arch, name, feats):
        return lambda: train_captioner(arch, records, root, feats, vocab, 0, tmp / f"{name}.pt", tmp / f"{name}.resume.pt")

    grouped = _timed(train(_arch({"features": "f"}, True), "grouped", features))
    ungrouped = _timed(train(_arch({"features": "f"}, False), "ungrouped", features))
    e2e = _timed(train(_arch({"backbone": "resnet18", "weights": "none", "trainable": True, "input_size": 48}, True), "e2e", None))
    return {
        "grouped_s": grouped, "ungrouped_s": ungrouped, "length_grouping_ratio": ungrouped / grouped,
        "end_to_end_s": e2e, "feature_cache_ratio": e2e / grouped, "records": n, "epochs": 2,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(HERE / "results.json"))
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(2)
    targets = yaml.safe_load((HERE / "targets.yaml").read_text())
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        manifest, root = _dataset(tmp, 240)
        results = {
            "metrics": bench_corpus_vs_per_record_metrics(manifest),
            "training": bench_training(manifest, root, tmp),
        }
    failed = []
    for key, minimum in targets.items():
        group, name = key.split(".")
        value = results[group][name]
        ok = value >= minimum
        failed += [] if ok else [key]
        print(f"{key:40s} {value:8.2f}  (target >= {minimum})  {'ok' if ok else 'MISSED'}")
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
