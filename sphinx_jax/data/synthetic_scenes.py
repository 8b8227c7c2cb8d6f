"""The synthetic world's scenes: what is in an image and how it is drawn (data.synthetic writes
the world, data.synthetic_text says things about a scene).

A scene is 1-4 objects on a non-square image (so pad-to-square matters): shapes in colours and two
sizes, each colour x shape at most once (so "the red circle" names one object), and sometimes a
short word in PIL's bitmap font (no anti-aliasing, the same pixels on every FreeType build). Boxes
are pixels [x1, y1, x2, y2] with exclusive ends: an object's drawn pixels span exactly columns
x1..x2-1 and rows y1..y2-1.

Geometry: the image is 5 x 3 CELLs of 20 px, and the 100-px square it is padded to is the mini
model's 5 x 5 grid of 20-px patches (configs `mini`), the image its middle three rows. A small
shape fills one cell, a large one 2 x 2 cells, a word one cell, each MARGIN px inside its cells
(so things in neighbouring cells are 2 x MARGIN apart): every patch of the global view shows one
thing or nothing, and a small shape or a word whole (docs/architecture.md has the arithmetic).
"""
from __future__ import annotations

import functools
import io

from PIL import Image, ImageDraw, ImageFont

COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220),
           "yellow": (235, 200, 30)}
SHAPES = ("circle", "square", "triangle")
WORDS = ("cat", "dog", "sun", "map", "box", "cup", "hat", "pen", "key", "car")
CELL = 20  # px: the mini model's patch
MARGIN = 2  # px between a thing and its cells' edges
CELLS = (5, 3)  # columns x rows
IMAGE_SIZE = (CELLS[0] * CELL, CELLS[1] * CELL)
SPAN = {"small": 1, "large": 2}  # cells a shape spans per side
SIZES = {name: n * CELL - 2 * MARGIN for name, n in SPAN.items()}  # its side in px: 16, 36


@functools.cache
def _font() -> ImageFont.ImageFont:
  return ImageFont.load_default_imagefont()


def _place(rng, taken: set, span: int):
  """The top-left cell (column, row) of a free span x span block of cells, marked taken, or None
  when none is free."""
  free = [(c, r) for c in range(CELLS[0] - span + 1) for r in range(CELLS[1] - span + 1)
          if not any((c + i, r + j) in taken for i in range(span) for j in range(span))]
  if not free:
    return None
  c, r = free[int(rng.integers(len(free)))]
  taken.update((c + i, r + j) for i in range(span) for j in range(span))
  return c, r


def shape_box(cell, size: str) -> list[int]:
  """The pixel box of a `size` shape whose top-left cell is `cell` (column, row)."""
  x, y = cell[0] * CELL + MARGIN, cell[1] * CELL + MARGIN
  return [x, y, x + SIZES[size], y + SIZES[size]]


def word_box(cell, text: str) -> list[int]:
  """The pixel box of `text` written centred in `cell`."""
  left, top, right, bottom = _font().getbbox(text)
  w, h = right - left, bottom - top
  x, y = cell[0] * CELL + (CELL - w) // 2, cell[1] * CELL + (CELL - h) // 2
  return [x, y, x + w, y + h]


def position(box) -> str:
  """Where a box's centre is, by thirds of the image: `at the top left`, `at the top`, `at the
  left`, `at the centre`, ... (one of PLACES). A large shape's centre is on a third's edge, which
  counts as the outer third."""
  w, h = IMAGE_SIZE
  cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
  row = "top" if cy <= h / 3 else "bottom" if cy >= 2 * h / 3 else ""
  column = "left" if cx <= w / 3 else "right" if cx >= 2 * w / 3 else ""
  return f"at the {f'{row} {column}'.strip() or 'centre'}"


PLACES = tuple(f"at the {f'{r} {c}'.strip() or 'centre'}" for r in ("top", "", "bottom")
               for c in ("left", "", "right"))


def object_record(colour: str, shape: str, size: str, box) -> dict:
  return {"colour": colour, "shape": shape, "size": size, "box": box, "position": position(box)}


def scene(rng) -> dict:
  """1-4 objects (distinct colour x shape) and, half the time, a word."""
  kinds = rng.permutation(len(COLOURS) * len(SHAPES))[:int(rng.integers(1, 5))]
  objects, taken = [], set()
  for k in kinds:
    size = ("small", "large")[int(rng.integers(2))]
    cell = _place(rng, taken, SPAN[size])
    if cell is not None:
      objects.append(object_record(list(COLOURS)[k // len(SHAPES)], SHAPES[k % len(SHAPES)],
                                   size, shape_box(cell, size)))
  word = None
  if rng.random() < 0.5:
    text = WORDS[int(rng.integers(len(WORDS)))]
    cell = _place(rng, taken, 1)
    if cell is not None:
      box = word_box(cell, text)
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
