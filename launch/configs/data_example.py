"""Example data config over the small fixture in data_example/ (a tiny tokenizer, three
drawn shapes, dialogs, REC annotations and a MIMIC-IT in-context set):

  python -m launch data --config data_example --show 4 --check

A data config is a python file defining DATA, a `DataConfig`: the tokenizer, the sources and
their mixture weights (default: proportional to size), the model variant's view plan and image
block size K (tokens per image over all its views: 291 per view for SPHINX), the row length.
"""
from pathlib import Path

from sphinx_jax.data.mimic_it import MimicIt
from sphinx_jax.data.pipeline import DataConfig
from sphinx_jax.data.sources import Conversations, Task

HERE = Path(__file__).parent / "data_example"
IMAGES = str(HERE / "images")

DATA = DataConfig(
    tokenizer=str(HERE / "tokenizer.model"),
    sources=(
        Conversations(str(HERE / "conversations.jsonl"), image_root=IMAGES),
        Task(str(HERE / "grounding.jsonl"), "rec", image_root=IMAGES),
        MimicIt(str(HERE / "mimic" / "LACR_instructions.json"),
                images=str(HERE / "mimic" / "LACR.json"), kind="in_context"),
    ),
    weights=(2, 1, 1),
    view_plan="sphinx",
    tokens_per_image=291,
    seq_len=2048,
    max_images=3,
    batch_size=2,
)
