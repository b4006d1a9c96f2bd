"""Reading dataset images safely: paths stay under their root, bad files name themselves."""
from __future__ import annotations

import os

from PIL import Image, UnidentifiedImageError

from m4i.io import M4IError, safe_join


def load_image(root: str | os.PathLike, rel: str) -> Image.Image:
    """The image at ``root/rel`` as RGB; refuses paths that escape ``root``."""
    path = safe_join(root, rel, what="image path")
    if not path.is_file():
        raise M4IError(f"image file not found: {path} (record image {rel!r} under {root})")
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise M4IError(f"unreadable or corrupt image: {path} ({exc})") from exc
