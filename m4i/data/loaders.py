"""Read real caption datasets into manifest records.

Every loader returns ``(records, image_root)`` where each record is
``{"record_id", "image" (relative to image_root), "captions": [str, ...], "attributes": {}}``.
Loaders read datasets in place; nothing is copied. Errors name the file and line or record.
A dataset may come in several caption files (COCO's train and val annotations): config
``captions`` and ``images`` are then lists, read into ONE dataset (one manifest, one split
permutation), never two.
"""
from __future__ import annotations

import csv
import io
import json
import os
from collections import OrderedDict
from pathlib import Path

from m4i.io import M4IError, safe_join
from m4i.names import REAL_DATASET_KINDS

LOADERS = REAL_DATASET_KINDS


def read_text(path: Path) -> str:
    """The file's text (UTF-8, an optional BOM dropped); bytes that are not UTF-8 fail naming the
    file, line and column instead of a bare UnicodeDecodeError."""
    data = path.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise M4IError(f"{path}:{line}: not valid UTF-8 (byte 0x{data[exc.start]:02x} at column {col}); "
                       "save the caption file as UTF-8") from None


def _lines(path: Path) -> list[str]:
    """Lines as Python's universal-newline reading gives them (\\n, \\r\\n or \\r end a line;
    no other Unicode line separator does, so line numbers match an editor's)."""
    return read_text(path).replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _add_caption(groups: OrderedDict, image: str, caption: str, where: str) -> None:
    caption = caption.strip()
    if not caption:
        raise M4IError(f"{where}: empty caption for image {image!r}")
    groups.setdefault(image, []).append(caption)


def _records(dataset: str, groups: OrderedDict, id_of) -> list[dict]:
    records, seen = [], {}
    for image, captions in groups.items():
        rid = f"{dataset}:{id_of(image)}"
        if rid in seen:
            raise M4IError(f"duplicate record id {rid!r}: images {seen[rid]!r} and {image!r}")
        seen[rid] = image
        records.append({"record_id": rid, "image": image, "captions": captions, "attributes": {}})
    return records


def _stem_id(image: str) -> str:
    """Record id from an image path: path without extension, '/' kept out of ids."""
    return os.path.splitext(image)[0].replace("/", "__")


def read_flickr8k(dataset: str, captions_file: str | os.PathLike) -> OrderedDict:
    """Flickr8k captions: Kaggle ``image,caption`` CSV (header), its headerless form used by the
    original M4I code, or the original ``Flickr8k.token.txt`` (``<image>#<n>\\t<caption>``).

    Only the first comma (or tab) separates the fields: captions contain commas.
    """
    path = Path(captions_file)
    if not path.is_file():
        raise M4IError(f"captions file not found: {path}")
    groups: OrderedDict = OrderedDict()
    for lineno, line in enumerate(_lines(path), start=1):
        where = f"{path}:{lineno}"
        if not line.strip():
            continue
        if lineno == 1 and line.strip().lower() == "image,caption":
            continue
        if "\t" in line and "#" in line.split("\t", 1)[0]:
            image, caption = line.split("\t", 1)
            image = image.rsplit("#", 1)[0]
        elif "," in line:
            image, caption = line.split(",", 1)
        else:
            raise M4IError(
                f"{where}: expected '<image>,<caption>' (Kaggle Flickr8k captions.txt) or "
                f"'<image>#<n><TAB><caption>' (Flickr8k.token.txt), got {line[:80]!r}"
            )
        image = image.strip()
        if not image.lower().endswith((".jpg", ".jpeg", ".png")):
            raise M4IError(f"{where}: first field {image[:80]!r} is not an image file name")
        _add_caption(groups, image, caption, where)
    if not groups:
        raise M4IError(f"{path}: no captions found")
    return groups


def read_coco(dataset: str, annotations_file: str | os.PathLike) -> OrderedDict:
    """COCO captions JSON (``captions_*.json``): images[{id, file_name}], annotations[{image_id, caption}]."""
    path = Path(annotations_file)
    if not path.is_file():
        raise M4IError(f"annotations file not found: {path}")
    try:
        data = json.loads(read_text(path))
        images = data["images"]
        annotations = data["annotations"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise M4IError(f"{path}: not a COCO captions file (need 'images' and 'annotations'): {exc}") from exc
    files: dict = {}
    for i, im in enumerate(images):
        try:
            iid, name = im["id"], im["file_name"]
        except (KeyError, TypeError) as exc:
            raise M4IError(f"{path}: images[{i}] lacks id/file_name") from exc
        if iid in files:
            raise M4IError(f"{path}: duplicate image id {iid} in images[{i}]")
        files[iid] = name
    groups: OrderedDict = OrderedDict((files[i], []) for i in sorted(files))
    for i, ann in enumerate(annotations):
        try:
            iid, caption = ann["image_id"], ann["caption"]
        except (KeyError, TypeError) as exc:
            raise M4IError(f"{path}: annotations[{i}] lacks image_id/caption") from exc
        if iid not in files:
            raise M4IError(f"{path}: annotations[{i}] names unknown image_id {iid}")
        _add_caption(groups, files[iid], str(caption), f"{path}: annotations[{i}]")
    empty = [name for name, caps in groups.items() if not caps]
    if empty:
        raise M4IError(f"{path}: {len(empty)} images have no caption, e.g. {empty[0]!r}")
    return groups


def read_table_captions(dataset: str, table_file: str | os.PathLike, fmt: str) -> OrderedDict:
    """Generic CSV (header with ``image`` and ``caption`` columns, one row per caption) or JSONL
    (one object per line with ``image`` and ``caption`` or ``captions``)."""
    path = Path(table_file)
    if not path.is_file():
        raise M4IError(f"caption table not found: {path}")
    groups: OrderedDict = OrderedDict()
    with io.StringIO(read_text(path), newline="") as f:
        if fmt == "csv":
            reader = csv.DictReader(f)
            if not reader.fieldnames or not {"image", "caption"} <= set(reader.fieldnames):
                raise M4IError(f"{path}:1: CSV header must have 'image' and 'caption' columns, got {reader.fieldnames}")
            for row in reader:
                where = f"{path}:{reader.line_num}"
                if row.get("image") is None or row.get("caption") is None:
                    raise M4IError(f"{where}: row has missing fields")
                _add_caption(groups, row["image"].strip(), row["caption"], where)
        else:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                where = f"{path}:{lineno}"
                try:
                    obj = json.loads(line)
                    image = str(obj["image"]).strip()
                    caps = obj["captions"] if "captions" in obj else [obj["caption"]]
                except (json.JSONDecodeError, KeyError, TypeError) as exc:
                    raise M4IError(f"{where}: expected a JSON object with 'image' and 'caption(s)': {exc}") from exc
                if not isinstance(caps, list):
                    raise M4IError(f"{where}: 'captions' must be a list")
                for c in caps:
                    _add_caption(groups, image, str(c), where)
    if not groups:
        raise M4IError(f"{path}: no captions found")
    return groups


def _read_groups(dataset: str, kind: str, captions_file: Path) -> OrderedDict:
    if kind == "flickr8k":
        return read_flickr8k(dataset, captions_file)
    if kind == "coco":
        return read_coco(dataset, captions_file)
    if kind in ("csv", "jsonl"):
        return read_table_captions(dataset, captions_file, kind)
    raise M4IError(f"datasets.{dataset}.kind: unknown dataset kind {kind!r} (known: synthetic, {', '.join(LOADERS)})")


def _as_list(value, default: str, key: str) -> list[str]:
    value = default if value is None else value
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not values or not all(isinstance(v, str) and v for v in values):
        raise M4IError(f"{key}: expected a path or a non-empty list of paths, got {value!r}")
    return values


def load_real_dataset(dataset: str, cfg: dict) -> tuple[list[dict], Path]:
    """Records and image root of a real dataset described by its config entry.

    ``cfg``: kind (flickr8k | coco | csv | jsonl), root, captions (file relative to root, or a
    list of files), images (folder relative to root; with several caption files one folder for
    all or a list, one per file). Paths in a caption file are taken relative to its image
    folder and may not escape it. Several caption files make ONE dataset: their records are
    merged (an image listed in two files gets the captions of both), with the image paths
    relative to the dataset root and record ids from the image names, which must not collide.
    """
    kind = cfg["kind"]
    root = Path(cfg["root"])
    if not root.is_dir():
        raise M4IError(f"datasets.{dataset}.root: folder not found: {root}")
    files = _as_list(cfg.get("captions"), "captions.txt", f"datasets.{dataset}.captions")
    folders = _as_list(cfg.get("images"), "images", f"datasets.{dataset}.images")
    if len(folders) == 1:
        folders = folders * len(files)
    if len(folders) != len(files):
        raise M4IError(f"datasets.{dataset}.images: {len(folders)} image folders for {len(files)} caption files "
                       "(give one folder, or one per caption file)")
    if len(files) == 1:
        captions_file = safe_join(root, files[0], what=f"datasets.{dataset}.captions")
        image_root = safe_join(root, folders[0], what=f"datasets.{dataset}.images")
        groups = _read_groups(dataset, kind, captions_file)
        for image in groups:
            safe_join(image_root, image, what=f"image path in {captions_file}")
        return _records(dataset, groups, _stem_id), image_root

    image_root = root.resolve()
    merged: OrderedDict = OrderedDict()
    id_of: dict[str, str] = {}
    for i, (rel, folder) in enumerate(zip(files, folders)):
        captions_file = safe_join(root, rel, what=f"datasets.{dataset}.captions[{i}]")
        folder_path = safe_join(root, folder, what=f"datasets.{dataset}.images[{i}]")
        for image, caps in _read_groups(dataset, kind, captions_file).items():
            path = safe_join(folder_path, image, what=f"image path in {captions_file}")
            key = path.relative_to(image_root).as_posix()
            merged.setdefault(key, []).extend(caps)
            id_of[key] = image  # the id comes from the name inside its folder: train and val alike
    return _records(dataset, merged, lambda key: _stem_id(id_of[key])), image_root
