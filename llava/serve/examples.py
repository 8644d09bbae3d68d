"""Example images for the web demo, drawn at startup (no image files are shipped or downloaded).

They are scenes from :mod:`llava.data.synthetic` (the quickstart's training data), so a checkpoint
trained on it answers them, and any other checkpoint still gets a clear picture to talk about.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from llava.data.synthetic import render_image

#: (file stem, scene attributes, question)
EXAMPLES: tuple[tuple[str, dict[str, str], str], ...] = (
    ("red_circle", {"kind": "object", "color": "red", "shape": "circle", "position": "center"},
     "What color is the shape?"),
    ("three_blue_stars", {"kind": "count", "count": "3", "color": "blue", "shape": "star"},
     "How many shapes are there?"),
    ("word_cat", {"kind": "word", "word": "cat", "color": "green"}, "What word is written in the image?"),
    ("orange_triangle_left", {"kind": "object", "color": "orange", "shape": "triangle", "position": "left"},
     "Where is the triangle: left, center, or right?"),
)
IMAGE_SIZE = 336


def default_examples_dir() -> Path:
    return Path(tempfile.gettempdir()) / "llava_serve_examples"


def example_images(out_dir: str | Path | None = None, image_size: int = IMAGE_SIZE) -> list[tuple[str, str]]:
    """Draws the example images once (reused when present) and returns ``[(image path, question)]``.

    Args:
        out_dir: where to write the PNGs (default: ``$TMPDIR/llava_serve_examples``).
        image_size: side of each square image in pixels.
    """
    out = Path(out_dir) if out_dir is not None else default_examples_dir()
    out.mkdir(parents=True, exist_ok=True)
    examples = []
    for i, (stem, attrs, question) in enumerate(EXAMPLES):
        path = out / f"{stem}_{image_size}.png"
        if not path.is_file():
            image, _ = render_image(attrs, image_size, np.random.default_rng(i))
            tmp = path.with_suffix(".tmp.png")
            image.save(tmp)
            tmp.replace(path)  # atomic: a concurrent start never reads half a file
        examples.append((str(path), question))
    return examples
