"""What a captioner's encoder reads for a set of records: cached feature rows or images."""
from __future__ import annotations

import pandas as pd
import torch

from m4i.io import M4IError
from m4i.records import unique_ids
from m4i.models.features import load_images, lookup_features

# Decoded images are kept in memory when they fit in this budget (toy and Flickr-size splits);
# larger sets (COCO at 224 px) are read from disk batch by batch.
IMAGE_CACHE_BYTES = 1 << 30


class InputSource:
    """Encoder inputs for ``records`` (row i = record i): ``take(rows) -> Tensor``."""

    def __init__(self, records: pd.DataFrame, root, *, features: dict | None = None, image_size: int | None = None):
        self.records = records.reset_index(drop=True)
        self.root = root
        self.image_size = image_size
        self.tensor = None
        if features is not None:
            self.tensor = lookup_features(features, [str(r) for r in self.records["record_id"]])
        else:
            if image_size is None:
                raise M4IError("InputSource: neither a feature cache nor an image size was given")
            if "image" not in self.records:
                raise M4IError("records lack the 'image' column needed by an image encoder")
            if len(self.records) * 3 * image_size * image_size * 4 <= IMAGE_CACHE_BYTES:
                self.tensor = load_images(self.records, root, image_size)

    def __len__(self) -> int:
        return len(self.records)

    def take(self, rows) -> torch.Tensor:
        rows = torch.as_tensor(rows, dtype=torch.long)
        if self.tensor is not None:
            return self.tensor[rows]
        return load_images(self.records.iloc[rows.tolist()], self.root, self.image_size)


def check_records(records: pd.DataFrame, what: str = "records") -> None:
    missing = [c for c in ("record_id", "captions") if c not in records]
    if missing:
        raise M4IError(f"{what}: missing column(s) {missing}")
    if len(records) == 0:
        raise M4IError(f"{what}: no records")
    unique_ids(records["record_id"], what)
