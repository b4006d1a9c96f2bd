"""Loaders, manifests, splits and vocabularies (issue: foundation)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from m4i.data.images import load_image
from m4i.data.loaders import load_real_dataset, read_flickr8k
from m4i.data.manifest import records_to_manifest, select
from m4i.data.splits import check_disjoint, make_splits
from m4i.data.vocab import training_vocab
from m4i.names import REQUIRED_SPLITS
from m4i.io import M4IError, sha256_file, write_json
from m4i.text import SPECIALS, Vocab, tokenize

FLICKR = Path(__file__).resolve().parents[2] / "shared" / "data" / "flickr8k"
SIZES = {"target_in": 4, "target_out": 4, "shadow_in": 4, "shadow_out": 4, "mfe": 3, "heldout": 2}


def _png(path: Path, colour=(200, 10, 10)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path)


def _flickr_like(tmp_path: Path, lines: list[str], images=("a.jpg", "b.jpg")) -> Path:
    root = tmp_path / "ds"
    for i, name in enumerate(images):
        _png(root / "images" / name, (i * 40, 0, 0))
    (root / "captions.txt").write_text("\n".join(lines) + "\n")
    return root


def _manifest(n: int, prefix: str = "d") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "record_id": [f"{prefix}:{i:03d}" for i in range(n)],
            "image": [f"{i}.png" for i in range(n)],
            "sha256": [f"{i:064x}" for i in range(n)],
            "captions": [[f"caption {i} one", f"caption {i} two"] for i in range(n)],
            "attributes": ["{}"] * n,
        }
    )


# ---------------------------------------------------------------- loaders
def test_flickr8k_kaggle_format_splits_on_first_comma_only(tmp_path):
    root = _flickr_like(
        tmp_path,
        ["image,caption", "a.jpg,A dog, brown and white, runs .", "a.jpg,A dog runs .", "b.jpg,Two cats sit ."],
    )
    records, image_root = load_real_dataset("f", {"kind": "flickr8k", "root": str(root)})
    assert [r["record_id"] for r in records] == ["f:a", "f:b"]
    assert records[0]["captions"] == ["A dog, brown and white, runs .", "A dog runs ."]
    df = records_to_manifest(records, image_root)
    assert df.loc[0, "sha256"] == sha256_file(root / "images" / "a.jpg")


def test_flickr8k_headerless_and_token_formats(tmp_path):
    root = _flickr_like(tmp_path, ["a.jpg,A dog runs .", "b.jpg,A cat, sitting ."])
    groups = read_flickr8k("f", root / "captions.txt")
    assert groups["b.jpg"] == ["A cat, sitting ."]
    (root / "token.txt").write_text("a.jpg#0\tA dog runs .\na.jpg#1\tA dog , running .\n")
    assert read_flickr8k("f", root / "token.txt")["a.jpg"] == ["A dog runs .", "A dog , running ."]


def test_coco_and_generic_tables(tmp_path):
    root = tmp_path / "coco"
    _png(root / "imgs" / "1.jpg")
    _png(root / "imgs" / "2.jpg")
    ann = {
        "images": [{"id": 2, "file_name": "2.jpg"}, {"id": 1, "file_name": "1.jpg"}],
        "annotations": [{"image_id": 1, "caption": "a red square"}, {"image_id": 2, "caption": "x"}, {"image_id": 1, "caption": "red box"}],
    }
    (root / "captions_val.json").write_text(json.dumps(ann))
    recs, _ = load_real_dataset("c", {"kind": "coco", "root": str(root), "captions": "captions_val.json", "images": "imgs"})
    assert {r["record_id"]: r["captions"] for r in recs} == {"c:1": ["a red square", "red box"], "c:2": ["x"]}

    (root / "t.csv").write_text('image,caption\n1.jpg,"red, square"\n2.jpg,blue\n1.jpg,red\n')
    recs, _ = load_real_dataset("g", {"kind": "csv", "root": str(root), "captions": "t.csv", "images": "imgs"})
    assert recs[0]["captions"] == ["red, square", "red"]
    (root / "t.jsonl").write_text('{"image": "1.jpg", "captions": ["a", "b"]}\n{"image": "2.jpg", "caption": "c"}\n')
    recs, _ = load_real_dataset("j", {"kind": "jsonl", "root": str(root), "captions": "t.jsonl", "images": "imgs"})
    assert [len(r["captions"]) for r in recs] == [2, 1]


def test_several_coco_caption_files_are_one_dataset(tmp_path):
    """COCO train + val: two annotation files, two image folders, ONE dataset (one manifest)."""
    root = tmp_path / "coco"
    for folder, iid in (("train", 1), ("train", 2), ("val", 3)):
        _png(root / folder / f"{iid:012d}.jpg", (iid * 50, 0, 0))
    train = {"images": [{"id": 1, "file_name": f"{1:012d}.jpg"}, {"id": 2, "file_name": f"{2:012d}.jpg"}],
             "annotations": [{"image_id": 1, "caption": "a dog"}, {"image_id": 2, "caption": "a cat"}]}
    val = {"images": [{"id": 3, "file_name": f"{3:012d}.jpg"}],
           "annotations": [{"image_id": 3, "caption": "a bird"}, {"image_id": 3, "caption": "one bird"}]}
    (root / "ann").mkdir()
    (root / "ann" / "captions_train.json").write_text(json.dumps(train))
    (root / "ann" / "captions_val.json").write_text(json.dumps(val))
    cfg = {"kind": "coco", "root": str(root), "captions": ["ann/captions_train.json", "ann/captions_val.json"],
           "images": ["train", "val"]}
    recs, image_root = load_real_dataset("coco", cfg)
    assert image_root == root.resolve()
    assert [(r["record_id"], r["image"], r["captions"]) for r in recs] == [
        ("coco:000000000001", "train/000000000001.jpg", ["a dog"]),
        ("coco:000000000002", "train/000000000002.jpg", ["a cat"]),
        ("coco:000000000003", "val/000000000003.jpg", ["a bird", "one bird"]),
    ]
    df = records_to_manifest(recs, image_root)
    assert df.loc[2, "sha256"] == sha256_file(root / "val" / f"{3:012d}.jpg")
    # the same image name in two folders would be two records with one id: an error naming both
    _png(root / "val" / f"{1:012d}.jpg")
    val["images"].append({"id": 1, "file_name": f"{1:012d}.jpg"})
    val["annotations"].append({"image_id": 1, "caption": "another dog"})
    (root / "ann" / "captions_val.json").write_text(json.dumps(val))
    with pytest.raises(M4IError, match="duplicate record id 'coco:000000000001'.*train/.*val/"):
        load_real_dataset("coco", cfg)
    with pytest.raises(M4IError, match=r"images: 3 image folders for 2 caption files"):
        load_real_dataset("coco", {**cfg, "images": ["train", "val", "x"]})


def test_several_flickr_caption_files_share_one_folder(tmp_path):
    root = _flickr_like(tmp_path, ["image,caption", "a.jpg,A dog ."])
    (root / "more.txt").write_text("a.jpg,A brown dog .\nb.jpg,A cat .\n")
    recs, image_root = load_real_dataset("f", {"kind": "flickr8k", "root": str(root),
                                               "captions": ["captions.txt", "more.txt"], "images": "images"})
    assert [(r["record_id"], r["image"], r["captions"]) for r in recs] == [
        ("f:a", "images/a.jpg", ["A dog .", "A brown dog ."]), ("f:b", "images/b.jpg", ["A cat ."])]
    records_to_manifest(recs, image_root)


@pytest.mark.parametrize("kind, name, content", [
    ("flickr8k", "captions.txt", b"image,caption\na.jpg,A dog .\nb.jpg,A caf\xe9 sign .\n"),
    ("csv", "t.csv", b"image,caption\na.jpg,A dog .\nb.jpg,A caf\xe9 sign .\n"),
    ("jsonl", "t.jsonl", b'{"image": "a.jpg", "caption": "x"}\n{"image": "a.jpg", "caption": "y"}\n'
                         b'{"image": "b.jpg", "caption": "caf\xe9"}\n'),
    ("coco", "c.json", b'{"images": [{"id": 1, "file_name": "a.jpg"}],\n "annotations": [\n'
                       b' {"image_id": 1, "caption": "caf\xe9"}]}\n'),
])
def test_caption_file_not_utf8_names_file_and_line(tmp_path, kind, name, content):
    root = _flickr_like(tmp_path, ["image,caption"])
    (root / name).write_bytes(content)
    line = 3
    with pytest.raises(M4IError, match=rf"{name}:{line}: not valid UTF-8 \(byte 0xe9"):
        load_real_dataset("f", {"kind": kind, "root": str(root), "captions": name, "images": "images"})
    # latin-1 text is the usual culprit; a UTF-8 BOM is not an error
    (root / name).write_bytes(b"\xef\xbb\xbf" + content.replace(b"\xe9", "\u00e9".encode()))
    recs, _ = load_real_dataset("f", {"kind": kind, "root": str(root), "captions": name, "images": "images"})
    assert any("é" in c for r in recs for c in r["captions"])


@pytest.mark.skipif(not FLICKR.is_dir(), reason="shared Flickr8k subset not present")
def test_flickr8k_shared_subset_in_place():
    records, image_root = load_real_dataset("flickr8k", {"kind": "flickr8k", "root": str(FLICKR)})
    assert len(records) == 1000 and all(len(r["captions"]) == 5 for r in records)
    assert image_root == (FLICKR / "images").resolve()
    # a caption with a comma survives whole
    assert any("," in c for r in records for c in r["captions"])
    df = records_to_manifest(records[:20], image_root)
    assert df["sha256"].str.len().eq(64).all()
    assert load_image(image_root, df.loc[0, "image"]).mode == "RGB"


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "lines, message",
    [
        (["image,caption", "a.jpg,"], "captions.txt:2: empty caption"),
        (["image,caption", "a.jpg a dog runs"], "captions.txt:2: expected"),
        (["image,caption", "nota image,caption text"], "captions.txt:2: first field"),
    ],
)
def test_bad_caption_files_name_file_and_line(tmp_path, lines, message):
    root = _flickr_like(tmp_path, lines)
    with pytest.raises(M4IError, match=message.replace(".", r"\.")):
        load_real_dataset("f", {"kind": "flickr8k", "root": str(root)})


def test_missing_and_corrupt_images_are_named(tmp_path):
    root = _flickr_like(tmp_path, ["a.jpg,A dog .", "c.jpg,A cat ."])
    records, image_root = load_real_dataset("f", {"kind": "flickr8k", "root": str(root)})
    with pytest.raises(M4IError, match=r"image file not found: .*c\.jpg"):
        records_to_manifest(records, image_root)
    (root / "images" / "c.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(M4IError, match=r"corrupt image: .*c\.jpg"):
        records_to_manifest(records, image_root)


def test_paths_escaping_the_root_are_rejected(tmp_path):
    root = _flickr_like(tmp_path, ["../../etc/passwd.jpg,escape"])
    with pytest.raises(M4IError, match="escapes the dataset root"):
        load_real_dataset("f", {"kind": "flickr8k", "root": str(root)})
    with pytest.raises(M4IError, match="escapes the dataset root"):
        load_image(root / "images", "../captions.txt")
    with pytest.raises(M4IError, match="is absolute"):
        load_image(root / "images", "/etc/hostname")


def test_duplicate_ids_and_empty_captions(tmp_path):
    root = tmp_path / "x"
    _png(root / "a.png")
    rec = {"record_id": "d:a", "image": "a.png", "captions": ["ok"], "attributes": {}}
    with pytest.raises(M4IError, match="duplicate record id 'd:a'"):
        records_to_manifest([rec, dict(rec)], root)
    with pytest.raises(M4IError, match="record 'd:a': empty caption"):
        records_to_manifest([dict(rec, captions=["fine", "  "])], root)
    # two images whose ids collide in a real dataset
    (tmp_path / "y" / "images" / "s").mkdir(parents=True)
    _png(tmp_path / "y" / "images" / "a.jpg")
    _png(tmp_path / "y" / "images" / "a.png")
    (tmp_path / "y" / "captions.txt").write_text("image,caption\na.jpg,one\na.png,two\n")
    with pytest.raises(M4IError, match="duplicate record id 'f:a'"):
        load_real_dataset("f", {"kind": "flickr8k", "root": str(tmp_path / "y")})


def test_failed_manifest_rule_leaves_no_output(tmp_path):
    """The atomic writer: an exception while writing leaves neither the file nor a temp file."""
    from m4i.io import atomic_path

    target = tmp_path / "out" / "manifest.parquet"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert list((tmp_path / "out").iterdir()) == []


# ---------------------------------------------------------------- splits
def test_splits_are_disjoint_sized_and_hashed():
    m = _manifest(30)
    s = make_splits(m, "d", SIZES, seed=0)
    check_disjoint(s["splits"])
    assert s["sizes"] == SIZES and list(s["splits"]) == list(REQUIRED_SPLITS)
    assert set(s["hashes"]) == set(REQUIRED_SPLITS) and not s["confounded"]
    # a changed caption changes the hash of the split holding that record
    rid = s["splits"]["mfe"][0]
    m2 = m.copy()
    m2.loc[m2.record_id == rid, "captions"] = pd.Series([["changed"]], index=m2.index[m2.record_id == rid])
    s2 = make_splits(m2, "d", SIZES, seed=0)
    assert s2["hashes"]["mfe"] != s["hashes"]["mfe"] and s2["hashes"]["target_in"] == s["hashes"]["target_in"]


def test_splits_deterministic_bytes_and_seed_dependent(tmp_path):
    m = _manifest(30)
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        write_json(make_splits(m.sample(frac=1, random_state=len(name)), "d", SIZES, seed=seed), tmp_path / f"{name}.json")
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()  # row order does not matter
    assert (tmp_path / "a.json").read_bytes() != (tmp_path / "c.json").read_bytes()


def test_optional_val_split_is_cut_last_and_leaves_the_others_unchanged():
    m = _manifest(40)
    without = make_splits(m, "d", SIZES, seed=0)
    with_val = make_splits(m, "d", {**SIZES, "val": 5}, seed=0)
    assert "val" not in without["splits"] and len(with_val["splits"]["val"]) == 5
    assert {k: v for k, v in with_val["splits"].items() if k != "val"} == without["splits"]
    check_disjoint(with_val["splits"])
    assert make_splits(m, "d", {**SIZES, "val": 0}, seed=0) == without  # size 0: no val split at all


def test_too_small_dataset_names_both_numbers():
    with pytest.raises(M4IError, match=r"has 10 records but splits.sizes ask for 21"):
        make_splits(_manifest(10), "d", SIZES, seed=0)


def test_confounded_protocol_is_explicit_and_confounded():
    a, b = _manifest(30, "a"), _manifest(30, "b")
    s = make_splits(a, "a", SIZES, 0, protocol="paper_protocol_confounded", nonmember_manifest=b, nonmember_dataset="b")
    sp = s["splits"]
    assert s["confounded"] and s["protocol"] == "paper_protocol_confounded"
    assert all(r.startswith("b:") for r in sp["target_out"]) and sp["shadow_out"] == sp["target_out"]
    assert all(r.startswith("a:") for r in sp["target_in"] + sp["shadow_in"])
    with pytest.raises(M4IError, match="unknown protocol"):
        make_splits(a, "a", SIZES, 0, protocol="paper")


# ---------------------------------------------------------------- vocabulary
def test_vocab_threshold_and_roundtrip():
    m = _manifest(5)
    records = select(m, ["d:000", "d:001"])  # "caption" 4 times; "0", "1", "one", "two" twice each
    v = training_vocab(records, min_count=2)
    assert v["tokens"][:4] == SPECIALS and v["tokens"][4] == "caption"
    assert set(v["tokens"][4:]) == {"caption", "0", "1", "one", "two"}
    assert training_vocab(records, min_count=3)["tokens"][4:] == ["caption"]
    voc = Vocab(v["tokens"])
    assert voc.decode(voc.encode("Caption, one!")) == "caption one"
    assert voc.encode("zebra")[1] == voc.unk
    assert tokenize("A dog's ball, red.") == ["a", "dog's", "ball", "red"]
    json.dumps(v)  # plain JSON, no pickles


def test_select_keeps_order_and_rejects_unknown():
    m = _manifest(5)
    assert list(select(m, ["d:003", "d:001"]).record_id) == ["d:003", "d:001"]
    with pytest.raises(M4IError, match="not in the manifest"):
        select(m, ["d:999"])
