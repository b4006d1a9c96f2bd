"""One manifest per dataset: record id, image path (relative to the root), image SHA-256, captions."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from m4i.data.images import load_image
from m4i.io import M4IError, read_table, read_table_meta, safe_join, sha256_file
from m4i.records import lookup, unique_ids

COLUMNS = ["record_id", "image", "sha256", "captions", "attributes"]


def records_to_manifest(records: list[dict], root: str | os.PathLike, verify_images: bool = True) -> pd.DataFrame:
    """Validate records, hash their images and return the manifest table.

    Every image must exist, stay under ``root`` and decode (when ``verify_images``);
    record ids must be unique; every record needs at least one non-empty caption.
    """
    seen: set[str] = set()
    rows = []
    for rec in records:
        rid = rec["record_id"]
        if rid in seen:
            raise M4IError(f"duplicate record id {rid!r}")
        seen.add(rid)
        captions = [str(c) for c in rec["captions"]]
        if not captions or any(not c.strip() for c in captions):
            raise M4IError(f"record {rid!r}: empty caption")
        path = safe_join(root, rec["image"], what=f"record {rid!r} image path")
        if verify_images:
            load_image(root, rec["image"])  # raises naming the file when missing or corrupt
        elif not path.is_file():
            raise M4IError(f"record {rid!r}: image file not found: {path}")
        rows.append(
            {
                "record_id": rid,
                "image": Path(rec["image"]).as_posix(),
                "sha256": sha256_file(path),
                "captions": captions,
                "attributes": json.dumps(rec.get("attributes") or {}, sort_keys=True),
            }
        )
    if not rows:
        raise M4IError(f"no records found under {root}")
    return pd.DataFrame(rows, columns=COLUMNS)


def build_manifest(dataset: str, cfg: dict, work_dir: str | os.PathLike) -> tuple[pd.DataFrame, Path]:
    """Manifest of one configured dataset and its image root.

    Synthetic datasets are generated into ``work_dir/images``; real ones are read in place.
    """
    if cfg["kind"] == "synthetic":
        from m4i.data.synthetic import generate

        root = Path(work_dir) / "images"
        records = generate(root, cfg["n_images"], cfg["image_size"], cfg["style"], cfg["seed"], dataset)
    else:
        from m4i.data.loaders import load_real_dataset

        records, root = load_real_dataset(dataset, cfg)
    return records_to_manifest(records, root, verify_images=cfg.get("verify_images", True)), Path(root)


def manifest_meta(dataset: str, cfg: dict, root: Path) -> dict:
    return {"dataset": dataset, "kind": cfg["kind"], "root": str(root)}


def read_manifest(path: str | os.PathLike) -> tuple[pd.DataFrame, Path]:
    """The manifest table and the image root recorded in it."""
    meta = read_table_meta(path)
    if "root" not in meta:
        raise M4IError(f"{path}: not an m4i manifest (no root in its metadata)")
    df = read_table(path)
    df["captions"] = df["captions"].map(list)
    return df, Path(meta["root"])


def read_manifests(paths) -> tuple[pd.DataFrame, Path]:
    """One manifest table over several datasets (the confounded protocol's non-members come from
    another dataset) and one image root above all of them; image paths are made relative to it."""
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if len(paths) == 1:
        return read_manifest(paths[0])
    parts = [read_manifest(p) for p in paths]
    root = Path(os.path.commonpath([str(Path(r).resolve()) for _, r in parts]))
    frames = []
    for df, r in parts:
        prefix = Path(r).resolve().relative_to(root)
        frames.append(df.assign(image=[(prefix / im).as_posix() for im in df["image"]]))
    df = pd.concat(frames, ignore_index=True)
    unique_ids(df["record_id"], f"manifests {[str(p) for p in paths]}")
    return df, root


def select(manifest: pd.DataFrame, record_ids: list[str], what: str = "split") -> pd.DataFrame:
    """Rows of ``manifest`` for ``record_ids``, in that order; unknown ids are an error."""
    return lookup(manifest, record_ids, what)


def split_records(manifest_path, splits_path: str | os.PathLike, split: str) -> tuple[pd.DataFrame, Path]:
    """The manifest rows of one split (in the split file's order) and the image root
    (``manifest_path``: one manifest or a list, see ``read_manifests``)."""
    parts, root = records_of_splits(manifest_path, splits_path, [split])
    return parts[split], root


def records_of_splits(manifest_path, splits_path: str | os.PathLike, names) -> tuple[dict[str, pd.DataFrame], Path]:
    """``split_records`` for several splits, reading the manifests and the split file once."""
    from m4i.io import read_json

    manifest, root = read_manifests(manifest_path)
    splits = read_json(splits_path)
    out = {}
    for split in names:
        if split not in splits.get("splits", {}):
            raise M4IError(f"{splits_path}: no split named {split!r}")
        out[split] = select(manifest, splits["splits"][split], what=f"{splits_path} split {split}")
    return out, root


