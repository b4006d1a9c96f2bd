"""The embedded synthetic image-captioning datasets: small scenes of shapes, five captions each.

Two styles stand in for two data distributions (the study's "data-restricted" scenario):

- ``shapes``: filled shapes on a noisy dark coloured background, caption grammar A
  ("a picture of a little red disc in the top left corner on a navy background").
- ``doodles``: stroke-only, wobbly outlines in ink colours on light paper (plain, lined or
  squared), caption grammar B ("sketch showing a tiny box in blue ink at the top of the page").

Design notes (measured by the project's first probe: with four or five synonyms per slot the
captioner memorised but barely generalised; two made it generalise better and gave the
strongest attack): about two synonyms per slot, a few templates and optional details. Which details an image's captions mention is an image-specific "salience"
drawn once per image, like human annotators who agree on what stands out; a captioner can
only learn that by memorising the image, which is the membership signal the study measures,
while colours and shapes are always named, so a captioner can still generalise on content.

Every image draws from its own RNG streams keyed by (seed, style, index, purpose), so image i
does not depend on n_images and changing the caption grammar never changes the pixels.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from m4i.io import M4IError
from m4i.names import SYNTHETIC_STYLES
from m4i.text import tokenize

STYLES = SYNTHETIC_STYLES
SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross")
SIZES = ("small", "large")
GRID = 3
N_CAPTIONS = 5
MAX_OBJECTS = 3
MIN_IMAGE_SIZE = 16
# The default captioners decode at most 20 tokens; references longer than that could never be
# matched, so optional details are dropped until a caption fits.
MAX_CAPTION_TOKENS = 18
_SUPERSAMPLE = 4  # draw at 4x and downsample: anti-aliased shapes even at 32 px
_NAME_RE = re.compile(r"^[A-Za-z0-9]+$")
_ROWS = ("top", "middle", "bottom")
_COLS = ("left", "centre", "right")

# --- palettes and backgrounds -------------------------------------------------------------
# Bright fills for dark noisy backgrounds vs dark inks for light paper; the two palettes share
# four colour words (red, green, blue, purple) with different RGB values.
PALETTES = {
    "shapes": {
        "red": (225, 45, 40), "green": (50, 195, 70), "blue": (60, 110, 245),
        "yellow": (245, 225, 45), "orange": (250, 145, 25), "purple": (170, 70, 215),
        "white": (245, 245, 245), "cyan": (45, 225, 225),
    },
    "doodles": {
        "black": (25, 25, 25), "blue": (30, 60, 175), "red": (195, 30, 30),
        "green": (30, 125, 55), "brown": (125, 75, 30), "purple": (115, 40, 145),
        "pink": (230, 95, 155), "grey": (115, 115, 115),
    },
}
# Background names never reuse a colour word, so content_accuracy can count colour words blindly.
BACKGROUNDS = {
    "shapes": {"navy": (25, 30, 75), "maroon": (75, 22, 32), "olive": (62, 62, 22),
               "charcoal": (48, 48, 48)},
    # name -> (paper tint, ruling)
    "doodles": {"cream": ((246, 239, 214), None), "beige": ((232, 221, 194), None),
                "lined": ((244, 242, 232), "lined"), "squared": ((240, 242, 240), "squared")},
}

# --- caption lexicon ------------------------------------------------------------------------
_SHAPE_WORDS = {
    "shapes": {"circle": ["circle", "disc"], "square": ["square", "block"],
               "triangle": ["triangle"], "diamond": ["diamond", "rhombus"],
               "star": ["star"], "cross": ["cross", "plus"]},
    "doodles": {"circle": ["circle", "ring"], "square": ["square", "box"],
                "triangle": ["triangle"], "diamond": ["diamond", "kite"],
                "star": ["star"], "cross": ["cross", "plus sign"]},
}
_COLOUR_WORDS = {
    "shapes": {"red": ["red"], "green": ["green"], "blue": ["blue"], "yellow": ["yellow"],
               "orange": ["orange"], "purple": ["purple", "violet"], "white": ["white"],
               "cyan": ["cyan", "turquoise"]},
    "doodles": {"black": ["black"], "blue": ["blue"], "red": ["red"], "green": ["green"],
                "brown": ["brown"], "purple": ["purple"], "pink": ["pink"],
                "grey": ["grey", "gray"]},
}
_SIZE_WORDS = {
    "shapes": {"small": ["small", "little"], "large": ["large", "big"]},
    "doodles": {"small": ["small", "tiny"], "large": ["big", "huge"]},
}
_BG_WORDS = {
    "shapes": {"navy": ["navy"], "maroon": ["maroon"], "olive": ["olive"],
               "charcoal": ["charcoal"]},
    "doodles": {"cream": ["cream"], "beige": ["beige"], "lined": ["lined", "ruled"],
                "squared": ["squared", "graph"]},
}
_GENERIC = {"shapes": ["shapes", "objects"], "doodles": ["shapes", "figures"]}
_NUMBERS = {2: "two", 3: "three"}


def _lexicons() -> tuple[dict, dict]:
    """Word -> canonical shape / colour over BOTH styles (a captioner trained on one style may
    be scored on the other), plus the plurals a captioner might emit."""
    shapes, colours = {}, {}
    for style in STYLES:
        for canon, words in _SHAPE_WORDS[style].items():
            for word in words:
                head = word.split()[0]  # "plus sign" -> "plus"
                shapes[head] = canon
                shapes[head + ("es" if head.endswith(("s", "x")) else "s")] = canon
        for canon, words in _COLOUR_WORDS[style].items():
            colours.update({w: canon for w in words})
    return shapes, colours


_SHAPE_LEXICON, _COLOUR_LEXICON = _lexicons()
_COUNT_WORDS = {"one": 1, "single": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6}


# --- validation ---------------------------------------------------------------------------
def _check_args(n_images, image_size, style, seed, dataset) -> None:
    if style not in STYLES:
        raise M4IError(f"synthetic dataset {dataset!r}: unknown style {style!r}; "
                       f"choose one of {list(STYLES)}")
    for name, value, low in (("n_images", n_images, 1), ("image_size", image_size, MIN_IMAGE_SIZE),
                             ("seed", seed, 0)):
        # bool is an int subclass; `n_images: true` is a config typo, not one image
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise M4IError(f"synthetic dataset {dataset!r}: {name} must be an integer >= {low}, "
                           f"got {value!r}")
    if not isinstance(dataset, str) or not _NAME_RE.match(dataset):
        raise M4IError(f"synthetic dataset name {dataset!r} must match {_NAME_RE.pattern}")


def _rng(seed: int, style: str, index: int, purpose: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), STYLES.index(style), int(index), purpose])


# --- scenes -------------------------------------------------------------------------------
def sample_scene(rng: np.random.Generator, style: str) -> dict:
    """1-3 objects with distinct shapes (so each object is named unambiguously) in distinct cells."""
    n = int(rng.integers(1, MAX_OBJECTS + 1))
    cells = rng.choice(GRID * GRID, size=n, replace=False)
    shapes = rng.choice(len(SHAPES), size=n, replace=False)
    colours = list(PALETTES[style])
    objects = []
    for cell, shape in zip(cells, shapes):
        row, col = divmod(int(cell), GRID)
        objects.append({
            "shape": SHAPES[int(shape)],
            "colour": colours[int(rng.integers(len(colours)))],
            "size": SIZES[int(rng.integers(len(SIZES)))],
            "row": row, "col": col, "cell": f"{_ROWS[row]}-{_COLS[col]}",
        })
    objects.sort(key=lambda o: (o["row"], o["col"]))  # reading order: a stable attribute layout
    backgrounds = list(BACKGROUNDS[style])
    return {"style": style, "background": backgrounds[int(rng.integers(len(backgrounds)))],
            "n_objects": n, "objects": objects}


# --- drawing ------------------------------------------------------------------------------
def _unit_polygon(shape: str) -> np.ndarray:
    """Vertices of a shape of radius about 1 around the origin (image y axis points down)."""
    if shape == "circle":
        t = np.linspace(0, 2 * np.pi, 32, endpoint=False)
        return np.stack([np.cos(t), np.sin(t)], 1)
    if shape == "square":
        return np.array([[-0.82, -0.82], [0.82, -0.82], [0.82, 0.82], [-0.82, 0.82]])
    if shape == "triangle":
        t = np.deg2rad([-90, 30, 150])
        return np.stack([np.cos(t), np.sin(t) + 0.2], 1)
    if shape == "diamond":
        return np.array([[0, -1.0], [0.72, 0], [0, 1.0], [-0.72, 0]])
    if shape == "star":
        t = np.deg2rad(-90 + 36 * np.arange(10))
        r = np.where(np.arange(10) % 2 == 0, 1.05, 0.45)
        return np.stack([r * np.cos(t), r * np.sin(t)], 1)
    if shape == "cross":
        a, b = 0.32, 0.95
        return np.array([[-a, -b], [a, -b], [a, -a], [b, -a], [b, a], [a, a], [a, b], [-a, b],
                         [-a, a], [-b, a], [-b, -a], [-a, -a]])
    raise M4IError(f"unknown shape {shape!r}")  # pragma: no cover - SHAPES is closed


def _place(obj: dict, canvas: int, rng: np.random.Generator, max_rot_deg: float):
    """(vertices relative to the centre, centre, radius) on a ``canvas``-pixel square."""
    cell = canvas / GRID
    radius = cell * (0.42 if obj["size"] == "large" else 0.24)
    centre = (np.array([obj["col"], obj["row"]]) + 0.5) * cell + rng.uniform(-0.07, 0.07, 2) * cell
    rot = np.deg2rad(rng.uniform(-max_rot_deg, max_rot_deg))
    rmat = np.array([[np.cos(rot), -np.sin(rot)], [np.sin(rot), np.cos(rot)]])
    return _unit_polygon(obj["shape"]) @ rmat.T * radius, centre, radius


def _rgb(values) -> tuple[int, int, int]:
    return tuple(int(v) for v in np.clip(np.rint(values), 0, 255))


def _downsample(img: Image.Image, size: int) -> np.ndarray:
    return np.asarray(img.resize((size, size), Image.Resampling.BOX), dtype=np.float64)


def _render_shapes(scene: dict, size: int, rng: np.random.Generator) -> np.ndarray:
    big = size * _SUPERSAMPLE
    base = np.array(BACKGROUNDS["shapes"][scene["background"]], float) + rng.normal(0, 8, 3)
    img = Image.new("RGB", (big, big), _rgb(base))
    draw = ImageDraw.Draw(img)
    for obj in scene["objects"]:
        poly, centre, _ = _place(obj, big, rng, max_rot_deg=10)
        fill = np.array(PALETTES["shapes"][obj["colour"]]) + rng.normal(0, 8, 3)
        draw.polygon([tuple(p) for p in poly + centre], fill=_rgb(fill))
    arr = _downsample(img, size)
    # A random linear gradient plus strong per-pixel noise: the "noisy coloured background".
    ys, xs = np.mgrid[0:size, 0:size] / (size - 1) - 0.5
    angle = rng.uniform(0, 2 * np.pi)
    grad = (np.cos(angle) * xs + np.sin(angle) * ys) * rng.uniform(10, 35)
    arr = arr + grad[..., None] + rng.normal(0, 14, arr.shape)
    return np.clip(np.rint(arr), 0, 255).astype(np.uint8)


def _render_doodles(scene: dict, size: int, rng: np.random.Generator) -> np.ndarray:
    big = size * _SUPERSAMPLE
    tint, ruling = BACKGROUNDS["doodles"][scene["background"]]
    img = Image.new("RGB", (big, big), tint)
    draw = ImageDraw.Draw(img)
    if ruling:  # faint ruled or squared paper
        step = big / 6
        offset = rng.uniform(0, step)
        for k in range(7):
            y = offset + k * step
            draw.line([(0, y), (big, y)], fill=(165, 190, 230), width=_SUPERSAMPLE)
            if ruling == "squared":
                draw.line([(y, 0), (y, big)], fill=(165, 190, 230), width=_SUPERSAMPLE)
    for obj in scene["objects"]:
        poly, centre, radius = _place(obj, big, rng, max_rot_deg=15)
        poly = poly + rng.normal(0, 0.05 * radius, poly.shape)  # hand-drawn wobble
        ink = np.array(PALETTES["doodles"][obj["colour"]]) + rng.normal(0, 6, 3)
        pts = [tuple(p) for p in poly + centre]
        width = int(round(_SUPERSAMPLE * rng.uniform(1.1, 1.6)))
        draw.line(pts + [pts[0]], fill=_rgb(ink), width=width, joint="curve")
    arr = _downsample(img, size)
    # Paper texture: low-frequency blotches and a fine grain, far smoother than "shapes" noise.
    blotch = Image.fromarray(rng.normal(0, 7, (4, 4)).astype(np.float32), mode="F")
    blotch = np.asarray(blotch.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float64)
    arr = arr + blotch[..., None] + rng.normal(0, 3, arr.shape)
    return np.clip(np.rint(arr), 0, 255).astype(np.uint8)


def render_scene(scene: dict, image_size: int, rng: np.random.Generator) -> np.ndarray:
    """An ``image_size`` x ``image_size`` x 3 uint8 array of the scene."""
    render = _render_shapes if scene["style"] == "shapes" else _render_doodles
    return render(scene, image_size, rng)


# --- captions -----------------------------------------------------------------------------
def _pick(rng: np.random.Generator, options: list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _position(obj: dict, style: str, rng: np.random.Generator) -> str:
    row, col = obj["row"], obj["col"]
    vert = _pick(rng, ["top", "upper"] if row == 0 else ["bottom", "lower"]) if row != 1 else ""
    horiz = _COLS[col]
    if style == "shapes":
        if row == 1 and col == 1:
            return _pick(rng, ["in the centre", "in the middle"])
        if row == 1:
            return _pick(rng, [f"on the {horiz}", f"on the {horiz} side"])
        if col == 1:
            return _pick(rng, [f"at the {_ROWS[row]}", f"near the {_ROWS[row]}"])
        return _pick(rng, [f"in the {vert} {horiz} corner", f"at the {vert} {horiz}"])
    if row == 1 and col == 1:
        return _pick(rng, ["in the middle of the page", "at the centre of the page"])
    if row == 1:
        return _pick(rng, [f"on the {horiz} of the page", f"along the {horiz} edge"])
    if col == 1:
        return _pick(rng, [f"at the {_ROWS[row]} of the page", f"along the {_ROWS[row]} edge"])
    return _pick(rng, [f"in the {vert} {horiz} of the page", f"near the {vert} {horiz} corner"])


def _noun_phrase(obj: dict, style: str, flags: dict, k: int, single: bool,
                 rng: np.random.Generator) -> str:
    size = _pick(rng, _SIZE_WORDS[style][obj["size"]]) if flags["size"][k] else ""
    colour = _pick(rng, _COLOUR_WORDS[style][obj["colour"]])
    shape = _pick(rng, _SHAPE_WORDS[style][obj["shape"]])
    if style == "doodles" and rng.random() < 0.3:  # grammar B only: "a box in blue ink"
        core, tail = " ".join(w for w in (size, shape) if w), f" in {colour} ink"
    else:
        core, tail = " ".join(w for w in (size, colour, shape) if w), ""
    det = _pick(rng, ["one", "a single"]) + " " + core if single else _article(core)
    pos = " " + _position(obj, style, rng) if flags["pos"][k] else ""
    return det + tail + pos


def _object_list(scene: dict, style: str, flags: dict, rng: np.random.Generator) -> str:
    objs = scene["objects"]
    n = len(objs)
    order = list(range(n))
    if rng.random() < 0.5:  # annotators do not always read the scene left to right
        order = [int(i) for i in rng.permutation(n)]
    single = flags["count"] and n == 1
    nps = [_noun_phrase(objs[k], style, flags, k, single, rng) for k in order]
    if n == 1:
        text = nps[0]
    elif n == 2:
        conj = _pick(rng, ["and", "with"] if style == "shapes" else ["and", "as well as"])
        text = f"{nps[0]} {conj} {nps[1]}"
    else:
        text = f"{', '.join(nps[:-1])} and {nps[-1]}"
    if flags["count"] and n > 1:
        text = f"{_NUMBERS[n]} {_pick(rng, _GENERIC[style])}: {text}"
    return text


def _render_caption(scene: dict, flags: dict, template: int, seed: int) -> str:
    """One caption from a plan (template + which details to mention); synonyms from ``seed``."""
    rng = np.random.default_rng(seed)
    style = scene["style"]
    bg_word = _pick(rng, _BG_WORDS[style][scene["background"]])
    if template == 3 and not flags["bg"]:
        template = 0  # template 3 opens with the background; without it, it is template 0
    objs = _object_list(scene, style, flags, rng)
    if style == "shapes":
        bgp = (" " + _pick(rng, [f"on {_article(bg_word)} background", f"on a noisy {bg_word} background",
                                 f"against {_article(bg_word)} backdrop"])) if flags["bg"] else ""
        if template == 0:
            return f"{_pick(rng, ['a picture of', 'an image of'])} {objs}{bgp}"
        if template == 1:
            return f"{objs}{bgp}"
        if template == 2:
            return f"there {'is' if scene['n_objects'] == 1 else 'are'} {objs}{bgp}"
        return f"{_article(_pick(rng, ['', 'noisy ']) + bg_word)} background with {objs}"
    bgp = (" " + _pick(rng, [f"on {bg_word} paper", f"on a {bg_word} page"])) if flags["bg"] else ""
    verb = _pick(rng, ["drawn", "sketched"])
    if template == 0:
        return f"a {_pick(rng, ['drawing', 'sketch'])} of {objs}{bgp}"
    if template == 1:
        return f"{_pick(rng, ['sketch', 'doodle'])} showing {objs}{bgp}"
    if template == 2:
        return f"{objs} {verb} by hand{bgp}"
    return f"a {_pick(rng, ['page', 'sheet'])} of {bg_word} paper with {objs} {verb} on it"


def _salience(scene: dict, rng: np.random.Generator) -> dict:
    """Per image: which optional details its annotators find worth mentioning."""
    n = scene["n_objects"]
    return {"bg": bool(rng.random() < 0.5), "count": bool(rng.random() < 0.3),
            "size": [bool(v) for v in rng.random(n) < 0.5],
            "pos": [bool(v) for v in rng.random(n) < 0.4]}


def _caption(scene: dict, salience: dict, rng: np.random.Generator) -> str:
    def mention(salient: bool) -> bool:
        return bool(rng.random() < (0.8 if salient else 0.15))

    flags = {"bg": mention(salience["bg"]), "count": mention(salience["count"]),
             "size": [mention(s) for s in salience["size"]],
             "pos": [mention(s) for s in salience["pos"]]}
    template = int(rng.integers(4))
    seed = int(rng.integers(2**31))
    # "there are two shapes: ..." (never "there are a red circle and ...")
    needs_count = template == 2 and scene["style"] == "shapes" and scene["n_objects"] > 1
    flags["count"] = flags["count"] or needs_count
    text = _render_caption(scene, flags, template, seed)
    while len(tokenize(text)) > MAX_CAPTION_TOKENS:
        optional = [(k, i) for k in ("size", "pos") for i, on in enumerate(flags[k]) if on]
        optional += [(k, None) for k in ("bg", "count") if flags[k]
                     and not (k == "count" and needs_count)]
        if not optional:
            break
        key, i = optional[int(rng.integers(len(optional)))]
        if i is None:
            flags[key] = False
        else:
            flags[key][i] = False
        text = _render_caption(scene, flags, template, seed)
    # Only mandatory words left (3 doodles "in <colour> ink"): other synonym draws, derived from
    # ``seed`` without touching ``rng`` so that the image's other captions stay as they are.
    for k in range(1, 33):
        if len(tokenize(text)) <= MAX_CAPTION_TOKENS:
            break
        text = _render_caption(scene, flags, template, (seed + k) % 2**31)
    return text


def make_captions(scene: dict, rng: np.random.Generator, n: int = N_CAPTIONS) -> list[str]:
    """``n`` captions of one scene: same content, image-specific salience, varied phrasing."""
    salience = _salience(scene, rng)
    captions: list[str] = []
    for _ in range(n):
        text = _caption(scene, salience, rng)
        for _retry in range(30):  # five annotators rarely write the very same sentence
            if text not in captions:
                break
            text = _caption(scene, salience, rng)
        captions.append(text)
    return captions


# --- the dataset --------------------------------------------------------------------------
def scene_images(n_images: int, image_size: int, style: str, seed: int):
    """Yield ``(scene attributes, RGB pixels [S, S, 3] uint8)`` for images 0..n-1, in memory.

    The images of :func:`generate` without captions or files (each draw has its own RNG stream),
    for consumers such as backbone pretraining that need pixels and attributes only.
    """
    _check_args(n_images, image_size, style, seed, "scenes")
    for i in range(int(n_images)):
        scene = sample_scene(_rng(seed, style, i, 0), style)
        yield scene, render_scene(scene, int(image_size), _rng(seed, style, i, 2))


def generate(out_dir: str | os.PathLike, n_images: int, image_size: int, style: str, seed: int,
             dataset: str) -> list[dict]:
    """Write ``out_dir/<local>.png`` for each image; return one record per image.

    Records: ``{"record_id": "<dataset>:<local>", "image": "<local>.png", "captions": [5 str],
    "attributes": {"style", "background", "n_objects", "objects": [{"shape", "colour", "size",
    "row", "col", "cell"}]}}``. Same arguments give byte-identical PNGs and equal records.
    On error the PNGs written by this call (and a folder it created) are removed again.
    """
    _check_args(n_images, image_size, style, seed, dataset)
    out = Path(out_dir)
    width = max(5, len(str(n_images - 1)))
    created_dir = not out.exists()
    written: list[Path] = []
    records = []
    try:
        out.mkdir(parents=True, exist_ok=True)
        for i, (scene, pixels) in enumerate(scene_images(n_images, image_size, style, seed)):
            captions = make_captions(scene, _rng(seed, style, i, 1))
            local = f"img{i:0{width}d}"
            path = out / f"{local}.png"
            Image.fromarray(pixels, mode="RGB").save(path, format="PNG")
            written.append(path)
            records.append({"record_id": f"{dataset}:{local}", "image": path.name,
                            "captions": captions, "attributes": scene})
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        if created_dir and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise
    return records


# --- content accuracy ---------------------------------------------------------------------
def _as_attributes(attributes) -> dict:
    if isinstance(attributes, str):  # the manifest stores attributes as a JSON string
        try:
            attributes = json.loads(attributes)
        except json.JSONDecodeError as exc:
            raise M4IError(f"attributes are not valid JSON: {attributes[:80]!r} ({exc})") from exc
    objects = attributes.get("objects") if isinstance(attributes, dict) else None
    if not objects or not all(isinstance(o, dict) and "shape" in o and "colour" in o
                              for o in objects):
        raise M4IError("content_accuracy needs synthetic scene attributes with a non-empty "
                       f"'objects' list of {{shape, colour}}; got {str(attributes)[:120]!r}")
    return attributes


def _jaccard(pred: set, true: set) -> float:
    union = pred | true
    return len(pred & true) / len(union) if union else 1.0


def _bound_pairs(tokens: list[str]) -> set[tuple[str, str]]:
    """(colour, shape) pairs: "in <colour> [ink]" right after a shape, else the nearest
    earlier colour word since the previous shape (both grammars put colours there)."""
    shape_at = [i for i, t in enumerate(tokens) if t in _SHAPE_LEXICON]
    used: set[int] = set()
    pairs = set()
    for j, i in enumerate(shape_at):
        colour = None
        after = i + 2 if i + 1 < len(tokens) and tokens[i + 1] == "sign" else i + 1  # "plus sign"
        if after + 1 < len(tokens) and tokens[after] == "in" and tokens[after + 1] in _COLOUR_LEXICON:
            colour = _COLOUR_LEXICON[tokens[after + 1]]
            used.add(after + 1)
        else:
            start = shape_at[j - 1] + 1 if j else 0
            for k in range(i - 1, start - 1, -1):
                if tokens[k] in _COLOUR_LEXICON and k not in used:
                    colour = _COLOUR_LEXICON[tokens[k]]
                    break
        if colour is not None:
            pairs.add((colour, _SHAPE_LEXICON[tokens[i]]))
    return pairs


def content_accuracy(caption: str, attributes) -> dict:
    """Is the caption right about the scene? Each value is in [0, 1]:

    - ``shape``/``colour``: Jaccard overlap of the shapes/colours named (synonyms and plurals of
      either style understood) with the scene's; naming a wrong one costs as much as missing one.
    - ``pair``: the same for (colour, shape) bindings ("red circle" vs "blue circle").
    - ``count``: 1 if the object count (an explicit number word, else the number of shape words)
      is right.
    - ``all``: 1 if all four are perfect.
    ``attributes`` is a record's scene dict or its JSON string (as stored in the manifest).
    """
    objects = _as_attributes(attributes)["objects"]
    tokens = tokenize(caption)
    shapes = [_SHAPE_LEXICON[t] for t in tokens if t in _SHAPE_LEXICON]
    numbers = [_COUNT_WORDS[t] for t in tokens if t in _COUNT_WORDS]
    count = numbers[0] if numbers else len(shapes)
    scores = {
        "shape": _jaccard(set(shapes), {o["shape"] for o in objects}),
        "colour": _jaccard({_COLOUR_LEXICON[t] for t in tokens if t in _COLOUR_LEXICON},
                           {o["colour"] for o in objects}),
        "pair": _jaccard(_bound_pairs(tokens), {(o["colour"], o["shape"]) for o in objects}),
        "count": float(count == len(objects)),
    }
    scores["all"] = float(all(v == 1.0 for v in scores.values()))
    return scores
