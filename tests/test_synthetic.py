"""The embedded synthetic dataset: deterministic, five varied captions per scene, two styles."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from m4i.data.synthetic import STYLES, content_accuracy, generate
from m4i.io import M4IError
from m4i.text import tokenize


def _gen(path, style="shapes", seed=3, n=20):
    return generate(path, n, 32, style, seed, "syn")


def test_same_seed_gives_identical_files_and_records(tmp_path):
    a, b, c = _gen(tmp_path / "a"), _gen(tmp_path / "b"), _gen(tmp_path / "c", seed=4)
    assert a == b
    for rec in a:
        assert (tmp_path / "a" / rec["image"]).read_bytes() == (tmp_path / "b" / rec["image"]).read_bytes()
    assert [r["captions"] for r in a] != [r["captions"] for r in c]
    assert a[0]["record_id"] == "syn:img00000" and Image.open(tmp_path / "a" / a[0]["image"]).size == (32, 32)


def test_five_varied_captions_that_state_the_scene(tmp_path):
    records = _gen(tmp_path, n=30)
    for rec in records:
        caps = rec["captions"]
        assert len(caps) == 5 and all(c.strip() for c in caps)
        # every caption names every object's shape and colour (synonyms allowed)
        assert all(content_accuracy(c, rec["attributes"])["all"] == 1.0 for c in caps)
    # phrasing differs within an image
    assert np.mean([len(set(r["captions"])) for r in records]) > 3.5


@pytest.mark.parametrize("style", STYLES)
def test_content_accuracy_is_lower_for_other_images(tmp_path, style):
    records = _gen(tmp_path, style=style, n=30)
    own = [content_accuracy(r["captions"][0], r["attributes"])["all"] for r in records]
    other = [content_accuracy(records[(i + 1) % 30]["captions"][0], r["attributes"])["all"] for i, r in enumerate(records)]
    assert np.mean(own) == 1.0 and np.mean(other) < 0.3


def test_styles_differ_in_pictures_and_language(tmp_path):
    a, b = _gen(tmp_path / "a", "shapes", n=30), _gen(tmp_path / "b", "doodles", n=30)
    va = {w for r in a for c in r["captions"] for w in tokenize(c)}
    vb = {w for r in b for c in r["captions"] for w in tokenize(c)}
    assert len(va ^ vb) > 0.4 * len(va | vb)

    def brightness(path, recs):
        return np.mean([np.asarray(Image.open(path / r["image"])).mean() for r in recs])

    assert brightness(tmp_path / "b", b) - brightness(tmp_path / "a", a) > 60  # paper vs noisy backgrounds


@pytest.mark.parametrize("kwargs, match", [
    ({"style": "oil"}, "style 'oil' unknown"), ({"n_images": 0}, "n_images"), ({"image_size": 8}, "image_size"),
])
def test_bad_arguments(tmp_path, kwargs, match):
    args = dict(n_images=2, image_size=32, style="shapes", seed=0, dataset="d") | kwargs
    with pytest.raises(M4IError, match=match):
        generate(tmp_path, **args)
