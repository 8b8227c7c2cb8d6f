"""The synthetic world's scenes: what is in an image and how it is drawn (data.synthetic writes
the world, data.synthetic_text says things about a scene).

A scene is 1-4 objects on a non-square image (so pad-to-square matters): shapes in colours and two
sizes, each colour x shape at most once (so "the red circle" names one object), kept GAP pixels
apart, and sometimes a short word in PIL's bitmap font (no anti-aliasing, the same pixels on every
FreeType build). Boxes are pixels [x1, y1, x2, y2] with exclusive ends: an object's drawn pixels
span exactly columns x1..x2-1 and rows y1..y2-1.
"""
from __future__ import annotations

import functools
import io

from PIL import Image, ImageDraw, ImageFont

COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220),
           "yellow": (235, 200, 30)}
SHAPES = ("circle", "square", "triangle")
SIZES = {"small": 16, "large": 26}
WORDS = ("cat", "dog", "sun", "map", "box", "cup", "hat", "pen", "key", "car")
IMAGE_SIZE = (80, 64)
GAP = 4
# Corners sit on a 10-px grid of the 80-px padded square the model sees: the pitch of the
# sub-image crops' patches (docs/architecture.md has the arithmetic), so a box is a choice of
# cells and REC at laptop scale is about finding the object, not regressing pixels.
GRID = 10


@functools.cache
def _font() -> ImageFont.ImageFont:
  return ImageFont.load_default_imagefont()


def _apart(a, b) -> bool:
  return a[2] + GAP <= b[0] or b[2] + GAP <= a[0] or a[3] + GAP <= b[1] or b[3] + GAP <= a[1]


def _place(rng, taken, w: int, h: int):
  """A box of w x h inside the image with its corner on the GRID of the padded square, GAP away
  from every box taken, or None."""
  pad = (max(IMAGE_SIZE) - IMAGE_SIZE[1]) // 2  # rows above the image in its padded square
  xs = range(0, IMAGE_SIZE[0] - w + 1, GRID)
  ys = range(-pad % GRID, IMAGE_SIZE[1] - h + 1, GRID)
  for _ in range(100):
    x, y = int(xs[int(rng.integers(len(xs)))]), int(ys[int(rng.integers(len(ys)))])
    box = [x, y, x + w, y + h]
    if all(_apart(box, t) for t in taken):
      return box
  return None


def position(box) -> str:
  """Where a box's centre is: `at the top left`, `at the bottom` (middle third), ..."""
  w, h = IMAGE_SIZE
  cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
  column = "left" if cx < w / 3 else "right" if cx > 2 * w / 3 else ""
  return f"at the {'top' if cy < h / 2 else 'bottom'} {column}".rstrip()


def object_record(colour: str, shape: str, size: str, box) -> dict:
  return {"colour": colour, "shape": shape, "size": size, "box": box, "position": position(box)}


def scene(rng) -> dict:
  """1-4 objects (distinct colour x shape) and, half the time, a word."""
  kinds = rng.permutation(len(COLOURS) * len(SHAPES))[:int(rng.integers(1, 5))]
  objects, taken = [], []
  for k in kinds:
    size = ("small", "large")[int(rng.integers(2))]
    box = _place(rng, taken, SIZES[size], SIZES[size])
    if box is not None:
      taken.append(box)
      objects.append(object_record(list(COLOURS)[k // len(SHAPES)], SHAPES[k % len(SHAPES)], size, box))
  word = None
  if rng.random() < 0.5:
    text = WORDS[int(rng.integers(len(WORDS)))]
    left, top, right, bottom = _font().getbbox(text)
    box = _place(rng, taken, right - left, bottom - top)
    if box is not None:
      word = {"text": text, "box": box, "position": position(box)}
  return {"objects": objects, "word": word}


def render(s: dict) -> Image.Image:
  image = Image.new("RGB", IMAGE_SIZE, (255, 255, 255))
  draw = ImageDraw.Draw(image)
  for o in s["objects"]:
    x1, y1, x2, y2 = o["box"]
    fill = COLOURS[o["colour"]]
    if o["shape"] == "circle":
      draw.ellipse((x1, y1, x2 - 1, y2 - 1), fill=fill)
    elif o["shape"] == "square":
      draw.rectangle((x1, y1, x2 - 1, y2 - 1), fill=fill)
    else:
      draw.polygon([(x1, y2 - 1), (x2 - 1, y2 - 1), ((x1 + x2 - 1) / 2, y1)], fill=fill)
  if s["word"]:
    left, top, _, _ = _font().getbbox(s["word"]["text"])
    x, y = s["word"]["box"][:2]
    draw.text((x - left, y - top), s["word"]["text"], fill=(0, 0, 0), font=_font())
  return image


def png(s: dict) -> bytes:
  out = io.BytesIO()
  render(s).save(out, format="PNG")
  return out.getvalue()
