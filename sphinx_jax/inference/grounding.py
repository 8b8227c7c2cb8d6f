"""SPHINX's grounding format: `<p>phrase</p>[x1,y1,x2,y2;...]`, boxes and keypoints.

Coordinates are normalised to the padded square (max edge) the model saw; `to_image` maps them
back onto the original image (x * max_edge - pad offset), as the reference demo does
(accessory/demos/multi_turn_mm_box.py).
"""
from __future__ import annotations

import dataclasses
import re

from PIL import Image, ImageDraw, ImageFont

from sphinx_jax.data.image import to_rgb

_NUMBER = r"\d+\.\d+"
_GROUP = re.compile(r"(?:<p>(?P<phrase>.*?)</p>\s*)?\[(?P<body>[^\[\]]*)\]")
PALETTE = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
            (70, 240, 240), (240, 50, 230), (210, 245, 60))


@dataclasses.dataclass(frozen=True)
class Grounding:
  """A phrase (or None for a bare bracket) and its boxes (4 numbers) or keypoints (2 numbers)."""

  phrase: str | None
  coords: tuple[tuple[float, ...], ...]


def parse(text: str) -> list[Grounding]:
  """Every `<p>phrase</p>[...]` or bare `[...]` whose entries are 2 or 4 decimal numbers."""
  found = []
  for m in _GROUP.finditer(text):
    entries = []
    for entry in m.group("body").split(";"):
      numbers = re.findall(_NUMBER, entry)
      if len(numbers) in (2, 4) and re.fullmatch(rf"\s*{_NUMBER}(\s*,\s*{_NUMBER})*\s*", entry):
        entries.append(tuple(float(n) for n in numbers))
    if entries:
      found.append(Grounding(m.group("phrase"), tuple(entries)))
  return found


def to_image(coords: tuple[float, ...], width: int, height: int) -> tuple[float, ...]:
  """Normalised padded-square coordinates -> pixels of the original width x height image."""
  side = max(width, height)
  dx, dy = (side - width) // 2, (side - height) // 2
  return tuple(c * side - (dx if i % 2 == 0 else dy) for i, c in enumerate(coords))


def to_square(coords: tuple[float, ...], width: int, height: int) -> tuple[float, ...]:
  """Pixels of the original image -> coordinates normalised to its padded square."""
  side = max(width, height)
  dx, dy = (side - width) // 2, (side - height) // 2
  return tuple((c + (dx if i % 2 == 0 else dy)) / side for i, c in enumerate(coords))


def upscaled(image: Image.Image, min_side: int = 480) -> Image.Image:
  """`image` enlarged by a whole factor (nearest) until its short side reaches `min_side` (or
  unchanged), so boxes and phrases drawn on a small image stay readable."""
  factor = max(1, -(-min_side // min(image.size)))
  return image.resize((image.width * factor, image.height * factor), Image.NEAREST)


def draw(image: Image.Image, groundings: list[Grounding]) -> Image.Image:
  """A copy of `image` with each grounding's boxes / keypoints and phrase drawn on it."""
  out = to_rgb(image)
  pen = ImageDraw.Draw(out)
  radius = max(2, max(out.size) // 100)
  font = ImageFont.load_default(size=max(12, max(out.size) // 32))
  for i, g in enumerate(groundings):
    color = PALETTE[i % len(PALETTE)]
    for coords in g.coords:
      c = to_image(coords, *out.size)
      if len(c) == 4:
        c = (min(c[0], c[2]), min(c[1], c[3]), max(c[0], c[2]), max(c[1], c[3]))
        pen.rectangle(c, outline=color, width=max(2, radius // 2))
        anchor = (c[0] + 2, c[1] + 1)
      else:
        pen.ellipse((c[0] - radius, c[1] - radius, c[0] + radius, c[1] + radius), fill=color)
        anchor = (c[0] + radius, c[1])
      if g.phrase:  # white on the box's colour: legible on any image
        pen.rectangle(pen.textbbox(anchor, g.phrase, font=font), fill=color)
        pen.text(anchor, g.phrase, fill=(255, 255, 255), font=font)
  return out
