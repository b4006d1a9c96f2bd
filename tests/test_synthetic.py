"""The embedded synthetic dataset: deterministic scenes, five varied captions, two styles."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from m4i.data import synthetic
from m4i.data.synthetic import STYLES, content_accuracy, generate
from m4i.io import M4IError
from m4i.text import tokenize

N = 20


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Both styles, generated once for the whole module (keeps the file fast)."""
    out = {}
    for style in STYLES:
        root = tmp_path_factory.mktemp(style)
        out[style] = (root, generate(root, N, 32, style, 7, "syn"))
    return out


def _pixels(root, rec):
    return np.asarray(Image.open(root / rec["image"]))


def test_same_arguments_give_identical_files_and_records(made, tmp_path):
    root, recs = made["shapes"]
    again = generate(tmp_path / "b", N, 32, "shapes", 7, "syn")
    assert again == recs
    for a in recs:
        assert (root / a["image"]).read_bytes() == (tmp_path / "b" / a["image"]).read_bytes()
    other = generate(tmp_path / "c", N, 32, "shapes", 8, "syn")
    assert [r["captions"] for r in other] != [r["captions"] for r in recs]
    assert [r["attributes"] for r in other] != [r["attributes"] for r in recs]
    assert (tmp_path / "c" / recs[0]["image"]).read_bytes() != (root / recs[0]["image"]).read_bytes()
    # image i does not depend on how many images are generated
    assert generate(tmp_path / "d", 3, 32, "shapes", 7, "syn") == recs[:3]


def test_record_format(made):
    root, recs = made["doodles"]
    assert [r["record_id"] for r in recs] == [f"syn:img{i:05d}" for i in range(N)]
    assert sorted(p.name for p in root.iterdir()) == sorted(r["image"] for r in recs)
    im = Image.open(root / recs[0]["image"])
    assert im.size == (32, 32) and im.mode == "RGB"
    for r in recs:
        json.dumps(r["attributes"])  # JSON-serialisable (the manifest stores it as a string)
        objs = r["attributes"]["objects"]
        assert 1 <= len(objs) <= 3 == synthetic.MAX_OBJECTS
        assert len({(o["row"], o["col"]) for o in objs}) == len(objs)  # one object per cell


@pytest.mark.parametrize("style", STYLES)
def test_five_distinct_captions_that_state_the_scene(made, style):
    _, recs = made[style]
    for r in recs:
        caps = r["captions"]
        assert len(caps) == 5 and all(c.strip() for c in caps)
        assert len(set(caps)) == 5  # annotators phrase it differently
        assert all(len(tokenize(c)) <= synthetic.MAX_CAPTION_TOKENS for c in caps)  # + <end> fits max_len 20
        for c in caps:  # but all name every object's shape and colour (synonyms allowed)
            assert content_accuracy(c, r["attributes"]) == {
                "shape": 1.0, "colour": 1.0, "pair": 1.0, "count": 1.0, "all": 1.0}, c
    all_caps = [c for r in recs for c in r["captions"]]
    assert len(set(all_caps)) > 0.9 * len(all_caps)


@pytest.mark.parametrize("style", STYLES)
def test_content_accuracy_is_lower_for_another_images_captions(made, style):
    _, recs = made[style]
    other = [content_accuracy(recs[(i + 1) % N]["captions"][0], r["attributes"])
             for i, r in enumerate(recs)]
    assert np.mean([o["all"] for o in other]) < 0.2
    assert np.mean([o["pair"] for o in other]) < 0.5


def test_styles_differ_in_pictures_and_language(made):
    (ra, a), (rb, b) = made["shapes"], made["doodles"]
    va = {w for r in a for c in r["captions"] for w in tokenize(c)}
    vb = {w for r in b for c in r["captions"] for w in tokenize(c)}
    assert len(va ^ vb) > 0.4 * len(va | vb)
    assert {"drawing", "sketch", "doodle"} & vb and not {"drawing", "sketch", "doodle"} & va
    bright_a = np.mean([_pixels(ra, r).mean() for r in a])
    bright_b = np.mean([_pixels(rb, r).mean() for r in b])
    assert bright_b - bright_a > 100  # light paper vs dark noisy backgrounds

    def grain(root, recs):  # background noise: median |difference| of neighbouring pixels
        return np.mean([np.median(np.abs(np.diff(_pixels(root, r).astype(int), axis=1)))
                        for r in recs])

    assert grain(ra, a) > 3 * grain(rb, b)


def test_content_accuracy_understands_synonyms_and_bindings():
    scene = {"objects": [{"shape": "circle", "colour": "red"}, {"shape": "square", "colour": "blue"}]}
    perfect = {"shape": 1.0, "colour": 1.0, "pair": 1.0, "count": 1.0, "all": 1.0}
    assert content_accuracy("a big red disc and a box in blue ink on lined paper", scene) == perfect
    assert content_accuracy("two shapes: a ring in red ink as well as a blue block", scene) == perfect
    assert content_accuracy("a red circle and a blue square", json.dumps(scene)) == perfect
    swapped = content_accuracy("a blue circle and a red square", scene)
    assert swapped["shape"] == swapped["colour"] == 1.0 and swapped["pair"] == 0.0
    assert swapped["all"] == 0.0
    extra = content_accuracy("a red circle, a blue square and a green star", scene)
    assert extra["shape"] == pytest.approx(2 / 3) and extra["count"] == 0.0
    assert content_accuracy("three shapes: a red circle and a blue square", scene)["count"] == 0.0
    assert content_accuracy("", scene)["all"] == 0.0
    with pytest.raises(M4IError, match="objects"):
        content_accuracy("a red circle", {})
    with pytest.raises(M4IError, match="JSON"):
        content_accuracy("a red circle", "{not json")


@pytest.mark.parametrize("kwargs, match", [
    ({"style": "oil"}, "unknown style 'oil'"), ({"n_images": 0}, "n_images"),
    ({"n_images": True}, "n_images"), ({"image_size": 8}, "image_size"),
    ({"seed": -1}, "seed"), ({"dataset": "a-b"}, "'a-b'"),
])
def test_bad_arguments_raise_and_write_nothing(tmp_path, kwargs, match):
    args = dict(n_images=2, image_size=32, style="shapes", seed=0, dataset="d") | kwargs
    with pytest.raises(M4IError, match=match):
        generate(tmp_path / "out", **args)
    assert not (tmp_path / "out").exists()


def test_failure_midway_leaves_no_stray_files(tmp_path, monkeypatch):
    real, calls = synthetic.render_scene, []

    def flaky(scene, size, rng):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("disk full")
        return real(scene, size, rng)

    monkeypatch.setattr(synthetic, "render_scene", flaky)
    with pytest.raises(RuntimeError):
        generate(tmp_path / "new", 5, 32, "shapes", 0, "d")
    assert not (tmp_path / "new").exists()
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "keep.txt").write_text("x")
    calls.clear()
    with pytest.raises(RuntimeError):
        generate(tmp_path / "old", 5, 32, "shapes", 0, "d")
    assert [p.name for p in (tmp_path / "old").iterdir()] == ["keep.txt"]


def test_longest_scenes_still_fit_the_decoder():
    # Three doodles each "in <colour> ink" overflow unless other synonyms are drawn (~2 % did).
    scene = {"style": "doodles", "background": "lined", "n_objects": 3, "objects": [
        {"shape": s, "colour": "grey", "size": "large", "row": r, "col": 0, "cell": f"r{r}"}
        for r, s in enumerate(("cross", "diamond", "triangle"))]}
    lengths = [len(tokenize(c)) for k in range(150)
               for c in synthetic.make_captions(scene, np.random.default_rng(k))]
    assert max(lengths) <= synthetic.MAX_CAPTION_TOKENS
