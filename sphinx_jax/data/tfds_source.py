"""Any prepared TFDS dataset as task dialogs, read through `tfds.data_source` (random access,
array_record files; no TensorFlow needed to read). ClassLabel features arrive as their names, the
image feature as a PIL image, and the record is formatted by a Table-1 task (e.g. classification:
"Classify the image." -> "This is a {label}")."""
from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image

from sphinx_jax.data import tasks
from sphinx_jax.data.sources import Opened, task_example
from sphinx_jax.util.errors import UserError


@dataclasses.dataclass(frozen=True)
class Tfds:
  """Split `split` of the prepared TFDS dataset `dataset` (in `data_dir`), formatted by `task`."""

  dataset: str
  split: str
  task: str
  data_dir: str | None = None
  image_key: str = "image"
  name: str = ""

  def __post_init__(self):
    if self.task not in tasks.FORMATTERS:
      raise UserError(f"unknown task {self.task!r}; known: {', '.join(tasks.FORMATTERS)}")

  @property
  def label(self) -> str:
    return self.name or self.dataset

  def open(self) -> Opened:
    import tensorflow_datasets as tfds
    source = tfds.data_source(self.dataset, split=self.split, data_dir=self.data_dir)
    features = source.dataset_info.features
    labels = {k: f for k, f in features.items() if isinstance(f, tfds.features.ClassLabel)}
    file = f"tfds:{self.dataset}/{self.split}"

    def example(record: dict, file, rid: str):
      record = {k: labels[k].int2str(int(v)) if k in labels else v for k, v in record.items()}
      pixels = np.asarray(record[self.image_key])
      image = Image.fromarray(pixels[..., 0] if pixels.shape[-1:] == (1,) else pixels)
      return task_example(self.task, record, image, file, rid)

    return Opened(self.label, len(source), source.__getitem__,
                  lambda i: f"index {i}", example, file)
