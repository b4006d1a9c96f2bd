"""The embedded synthetic captioning dataset: small scenes of shapes, five captions each.

Two styles stand in for two data distributions; they differ in pictures *and* in language:
- ``shapes``: filled shapes on a noisy coloured background, grammar A;
- ``doodles``: outlined shapes on paper, another palette, grammar B.

Every caption of an image states the same facts (shapes and colours) but picks its own template,
synonyms, word order and optional details (size, position, background, count). About two
synonyms per slot: with more, a small captioner memorises its training phrasing but barely
generalises (DESIGN.md); with this much a model can describe unseen scenes yet matches a
training image's own phrasing better than an unseen image's, which is what membership inference
measures here.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from m4i.io import M4IError
from m4i.text import tokenize

STYLES = ("shapes", "doodles")
SHAPES = ("circle", "square", "triangle", "star", "diamond", "cross")
GRID = 3
N_CAPTIONS = 5
SUPERSAMPLE = 4  # draw large, then downsample: clean edges at 32-48 px

# Per style: RGB palette (8 colours), backgrounds, and the lexicon of grammar A / B.
PALETTES = {
    "shapes": {
        "red": (215, 40, 40), "green": (40, 165, 60), "blue": (40, 80, 220), "yellow": (235, 210, 40),
        "purple": (140, 50, 180), "orange": (240, 135, 30), "white": (245, 245, 245), "black": (15, 15, 15),
    },
    "doodles": {
        "red": (190, 30, 40), "blue": (30, 60, 170), "green": (30, 120, 50), "brown": (120, 70, 30),
        "pink": (225, 100, 160), "grey": (110, 110, 110), "black": (20, 20, 20), "orange": (225, 120, 20),
    },
}
BACKGROUNDS = {
    "shapes": {"grey": (125, 125, 125), "dark": (45, 50, 65), "brown": (105, 80, 55)},
    "doodles": {"cream": (240, 230, 205), "white": (250, 250, 246), "blue": (215, 228, 245)},
}
SHAPE_WORDS = {
    "shapes": {"circle": ["circle", "ball"], "square": ["square", "block"], "triangle": ["triangle", "pyramid"],
               "star": ["star", "starburst"], "diamond": ["diamond", "rhombus"], "cross": ["cross", "plus"]},
    "doodles": {"circle": ["ring", "loop"], "square": ["square", "frame"], "triangle": ["triangle", "tent"],
                "star": ["star", "asterisk"], "diamond": ["diamond", "kite"], "cross": ["cross", "x"]},
}
SIZE_WORDS = {
    "shapes": {"small": ["small", "little"], "large": ["big", "large"]},
    "doodles": {"small": ["tiny", "small"], "large": ["huge", "large"]},
}
POSITION_WORDS = {
    "shapes": [["at the top left", "in the upper left"], ["at the top", "near the top"], ["at the top right", "in the upper right"],
               ["on the left", "at the left"], ["in the middle", "in the center"], ["on the right", "at the right"],
               ["at the bottom left", "in the lower left"], ["at the bottom", "near the bottom"], ["at the bottom right", "in the lower right"]],
    "doodles": [["top left", "upper left corner"], ["top", "top edge"], ["top right", "upper right corner"],
                ["left side", "left edge"], ["middle", "centre"], ["right side", "right edge"],
                ["bottom left", "lower left corner"], ["bottom", "bottom edge"], ["bottom right", "lower right corner"]],
}
COUNT_WORDS = {2: ["two", "a pair of"], 3: ["three", "a group of three"]}
JOINERS = {"shapes": ["and", "with"], "doodles": ["and", "beside"]}
TEMPLATES = {
    "shapes": ["{nps}", "there is {nps}", "{nps} on a {bg} background", "{count} shapes , {nps}", "a picture of {nps}"],
    "doodles": ["a drawing of {nps}", "sketch showing {nps}", "{nps} drawn on {bg} paper", "a doodle of {count} figures , {nps}", "{nps} sketched in ink"],
}
COUNTED = {"shapes": 3, "doodles": 3}  # index of the template that states the count (scenes of 2-3 objects only)
DETAIL_P = {"size": 0.4, "position": 0.45}

# Words -> canonical facts, over both styles, for content_accuracy.
_SHAPE_OF = {w: s for lex in SHAPE_WORDS.values() for s, ws in lex.items() for w in ws}
_COLOURS = {c for p in PALETTES.values() for c in p}


# ---------------------------------------------------------------- scenes
def sample_scene(rng: np.random.Generator, style: str) -> dict:
    """1-3 objects in distinct cells of a 3x3 grid, each with shape, colour, size."""
    n = int(rng.integers(1, 4))
    cells = rng.choice(GRID * GRID, size=n, replace=False)
    colours = list(PALETTES[style])
    background = str(rng.choice(list(BACKGROUNDS[style])))
    objects = []
    for cell in sorted(int(c) for c in cells):
        objects.append({
            "shape": str(rng.choice(SHAPES)),
            "colour": colours[int(rng.integers(len(colours)))],
            "size": str(rng.choice(["small", "large"])),
            "row": cell // GRID,
            "col": cell % GRID,
        })
    return {"style": style, "background": background, "objects": objects}


def _shape_points(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "square":
        return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == "triangle":
        return [(cx, cy - r), (cx + r, cy + r * 0.8), (cx - r, cy + r * 0.8)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + r * 0.7, cy), (cx, cy + r), (cx - r * 0.7, cy)]
    if shape == "star":
        pts = []
        for k in range(10):
            a = -np.pi / 2 + k * np.pi / 5
            rr = r if k % 2 == 0 else r * 0.45
            pts.append((cx + rr * np.cos(a), cy + rr * np.sin(a)))
        return pts
    if shape == "cross":
        t = r * 0.35
        return [(cx - t, cy - r), (cx + t, cy - r), (cx + t, cy - t), (cx + r, cy - t), (cx + r, cy + t), (cx + t, cy + t),
                (cx + t, cy + r), (cx - t, cy + r), (cx - t, cy + t), (cx - r, cy + t), (cx - r, cy - t), (cx - t, cy - t)]
    raise ValueError(shape)


def render_scene(scene: dict, image_size: int, rng: np.random.Generator) -> Image.Image:
    style = scene["style"]
    big = image_size * SUPERSAMPLE
    bg = np.array(BACKGROUNDS[style][scene["background"]], dtype=np.float32)
    if style == "shapes":
        # Noisy coloured background: per-pixel noise plus a soft gradient.
        noise = rng.normal(0, 18, size=(image_size, image_size, 3))
        grad = np.linspace(-15, 15, image_size)[None, :, None] * rng.choice([-1, 1])
        base = np.clip(bg + noise + grad, 0, 255).astype(np.uint8)
    else:
        # Paper: faint grain and ruled lines.
        grain = rng.normal(0, 5, size=(image_size, image_size, 1))
        base = np.clip(bg + grain, 0, 255)
        offset = int(rng.integers(0, 4))
        base[offset::5, :, :] -= 18
        base = np.clip(base, 0, 255).astype(np.uint8)
    canvas = Image.fromarray(base).resize((big, big), Image.NEAREST)
    draw = ImageDraw.Draw(canvas)
    cell = big / GRID
    for obj in scene["objects"]:
        cx = (obj["col"] + 0.5) * cell + rng.uniform(-0.08, 0.08) * cell
        cy = (obj["row"] + 0.5) * cell + rng.uniform(-0.08, 0.08) * cell
        r = cell * (0.42 if obj["size"] == "large" else 0.24)
        colour = PALETTES[style][obj["colour"]]
        width = max(2, int(round(big / 48 * 3)))
        if style == "shapes":
            if obj["shape"] == "circle":
                draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
            else:
                draw.polygon(_shape_points(obj["shape"], cx, cy, r), fill=colour)
        else:
            if obj["shape"] == "circle":
                draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=colour, width=width)
            else:
                draw.polygon(_shape_points(obj["shape"], cx, cy, r), outline=colour, width=width)
    img = canvas.resize((image_size, image_size), Image.LANCZOS)
    return img.filter(ImageFilter.SMOOTH) if style == "doodles" else img


# ---------------------------------------------------------------- captions
def _noun_phrase(obj: dict, style: str, rng: np.random.Generator, detail: float) -> str:
    words = ["a"]
    if rng.random() < DETAIL_P["size"] * detail:
        words.append(str(rng.choice(SIZE_WORDS[style][obj["size"]])))
    words.append(obj["colour"])
    words.append(str(rng.choice(SHAPE_WORDS[style][obj["shape"]])))
    if rng.random() < DETAIL_P["position"] * detail:
        pos = str(rng.choice(POSITION_WORDS[style][obj["row"] * GRID + obj["col"]]))
        words.append(pos if style == "shapes" else f"in the {pos}")
    return " ".join(words)


def caption_scene(scene: dict, rng: np.random.Generator) -> str:
    style = scene["style"]
    objects = list(scene["objects"])
    if rng.random() < 0.3:
        objects = objects[::-1]  # another word order: the same facts, listed the other way round
    joiner = str(rng.choice(JOINERS[style]))
    detail = 0.5 if len(objects) == 3 else 1.0  # keeps three-object captions short
    nps = f" {joiner} ".join(_noun_phrase(o, style, rng, detail) for o in objects)
    templates = TEMPLATES[style]
    if len(objects) == 1:
        templates = [t for i, t in enumerate(templates) if i != COUNTED[style]]
    template = str(rng.choice(templates))
    count = str(rng.choice(COUNT_WORDS.get(len(objects), ["one"])))
    return template.format(nps=nps, bg=scene["background"], count=count)


def scene_captions(scene: dict, rng: np.random.Generator, n: int = N_CAPTIONS) -> list[str]:
    """``n`` captions of one scene, distinct where the grammar allows it."""
    captions: list[str] = []
    for _ in range(n * 20):
        c = caption_scene(scene, rng)
        if c not in captions:
            captions.append(c)
        if len(captions) == n:
            return captions
    while len(captions) < n:  # a one-object scene can run out of distinct phrasings
        captions.append(caption_scene(scene, rng))
    return captions


# ---------------------------------------------------------------- dataset
def generate(out_dir, n_images: int, image_size: int, style: str, seed: int, dataset: str) -> list[dict]:
    """Write ``n_images`` PNG scenes into ``out_dir`` and return their records (see module doc)."""
    if style not in STYLES:
        raise M4IError(f"synthetic style {style!r} unknown; known: {list(STYLES)}")
    if int(n_images) < 1:
        raise M4IError(f"synthetic n_images must be >= 1, got {n_images}")
    if int(image_size) < 16:
        raise M4IError(f"synthetic image_size must be >= 16, got {image_size}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    width = max(5, len(str(n_images - 1)))
    records = []
    for i in range(int(n_images)):
        # One generator per image: image i does not depend on how many images come before it.
        rng = np.random.default_rng([int(seed), i])
        scene = sample_scene(rng, style)
        local = f"img{i:0{width}d}"
        img = render_scene(scene, int(image_size), rng)
        tmp = out / f".{local}.png.tmp"
        img.save(tmp, format="PNG", optimize=False)
        os.replace(tmp, out / f"{local}.png")
        records.append({
            "record_id": f"{dataset}:{local}",
            "image": f"{local}.png",
            "captions": scene_captions(scene, rng),
            "attributes": scene,
        })
    return records


def content_accuracy(caption: str, attributes: dict) -> dict:
    """How right a caption is on content, for either style's vocabulary.

    ``shape``/``colour``: fraction of the scene's objects whose shape/colour the caption names
    (as multisets); ``count``: 1 if it names as many shapes as there are objects; ``all``: 1 if
    all three hold fully.
    """
    objects = attributes.get("objects") or []
    if not objects:
        return {}
    tokens = tokenize(caption)
    said_shapes = [_SHAPE_OF[t] for t in tokens if t in _SHAPE_OF]
    said_colours = [t for t in tokens if t in _COLOURS]

    def recall(truth: list[str], said: list[str]) -> float:
        left = list(said)
        hit = 0
        for t in truth:
            if t in left:
                left.remove(t)
                hit += 1
        return hit / len(truth)

    shape = recall([o["shape"] for o in objects], said_shapes)
    colour = recall([o["colour"] for o in objects], said_colours)
    count = float(len(said_shapes) == len(objects))
    return {"shape": shape, "colour": colour, "count": count, "all": float(shape == 1 and colour == 1 and count == 1)}
