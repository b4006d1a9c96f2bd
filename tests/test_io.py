"""m4i.io: atomic, deterministic artifact writers."""
from __future__ import annotations

import zipfile

import torch

from m4i.io import load_torch, save_torch, sha256_file


def _obj():
    g = torch.Generator().manual_seed(0)
    return {"state_dict": {"w": torch.randn(4, 3, generator=g), "b": torch.zeros(3)}, "vocab": ["<pad>", "a"],
            "epoch": 3, "loss": [1.5, 0.25], "shared": [torch.arange(5)] * 2}


def test_two_saves_of_the_same_object_are_byte_identical(tmp_path):
    # Different destination names and folders: torch.save(obj, path) would store each name in the zip.
    a, b = tmp_path / "one" / "model.pt", tmp_path / "two" / "other-name.pt"
    save_torch(_obj(), a)
    save_torch(_obj(), b)
    assert a.read_bytes() == b.read_bytes()
    save_torch(_obj(), a)  # overwriting: same bytes again
    assert sha256_file(a) == sha256_file(b)


def test_saved_archive_carries_no_file_name_and_loads_back(tmp_path):
    path = tmp_path / "x.pt"
    save_torch(_obj(), path)
    names = zipfile.ZipFile(path).namelist()
    assert all(n.startswith("archive/") for n in names), names
    assert not [p for p in tmp_path.iterdir() if p.name != "x.pt"]  # no temporary file left
    back = load_torch(path)
    assert torch.equal(back["state_dict"]["w"], _obj()["state_dict"]["w"]) and back["vocab"] == ["<pad>", "a"]


def test_different_objects_give_different_bytes(tmp_path):
    save_torch({"w": torch.zeros(3)}, tmp_path / "a.pt")
    save_torch({"w": torch.ones(3)}, tmp_path / "b.pt")
    assert (tmp_path / "a.pt").read_bytes() != (tmp_path / "b.pt").read_bytes()


def test_read_split_selects_one_split_of_a_multi_split_table(tmp_path):
    import pandas as pd
    import pytest

    from m4i.io import M4IError, read_split, write_table

    long = tmp_path / "long.parquet"
    write_table(pd.DataFrame({"split": ["target_in", "target_out", "target_in"], "record_id": ["a", "b", "c"],
                              "x": [1.0, 2.0, 3.0]}), long)
    got = read_split(long, "target_in")
    assert list(got.columns) == ["record_id", "x"]  # the split column goes
    assert got["record_id"].tolist() == ["a", "c"] and got["x"].tolist() == [1.0, 3.0]
    assert read_split(long, "target_out")["record_id"].tolist() == ["b"]
    with pytest.raises(M4IError, match=r"long\.parquet: no rows of \{'split': 'heldout'\} \(its split parts: \['target_in', 'target_out'\]\)"):
        read_split(long, "heldout")
    one = tmp_path / "one.parquet"  # a table of one split (no split column) comes back as it is
    write_table(pd.DataFrame({"record_id": ["a"], "x": [1.0]}), one)
    assert read_split(one, "anything").equals(pd.read_parquet(one))
    # further keys: a captioner's MFE signals hold each (MFE, split) part; both select
    mfe = tmp_path / "mfe.parquet"
    write_table(pd.DataFrame({"mfe": ["clip-a-s0", "clip-a-s0", "paper-a-s0"], "split": ["target_in"] * 3,
                              "record_id": ["a", "b", "a"], "cos": [0.1, 0.2, 0.3]}), mfe)
    got = read_split(mfe, "target_in", mfe="paper-a-s0")
    assert list(got.columns) == ["record_id", "cos"] and got["cos"].tolist() == [0.3]
    assert read_split(mfe, "target_in", mfe="clip-a-s0")["record_id"].tolist() == ["a", "b"]
    with pytest.raises(M4IError, match=r"mfe\.parquet: no rows of .*'mfe': 'clip-b-s0'.*its split/mfe parts: \['target_in/clip-a-s0', 'target_in/paper-a-s0'\]"):
        read_split(mfe, "target_in", mfe="clip-b-s0")
    with pytest.raises(M4IError, match=r"one\.parquet: no 'split' column to select"):
        read_split(one, "target_in", mfe="clip-a-s0")
