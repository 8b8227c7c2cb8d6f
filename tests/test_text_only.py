"""The LLM alone trained on text (`llm:<preset>`, launch/configs/text.py): it learns, its export
is an LLM checkpoint that `LanguageModel` reads and a later run starts from, and a text-only
model refuses views and towers."""
import dataclasses
import json
import random
from pathlib import Path

import pytest

from launch import config_files
from sphinx_jax.data.sources import TextCorpus
from sphinx_jax.inference.language_model import LanguageModel
from sphinx_jax.train import loop
from sphinx_jax.util.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER = ROOT / "launch" / "configs" / "data_example" / "tokenizer.model"
COUNTING = "one two three four five six seven eight nine ten"


def _experiment(workdir: Path, corpus: Path, *overrides: str):
  exp = config_files.load("text:tiny", [f"workdir={workdir}", "train.steps=40",
                                        "train.compute_dtype=float32", "train.remat_policy=none",
                                        "train.optim.lr=0.003", "train.optim.min_lr=0.0003",
                                        "train.checkpoint_every=100", "data.text_rows=8",
                                        "data.seq_len=64", "data.threads=1", *overrides])
  return dataclasses.replace(exp, data=dataclasses.replace(
      exp.data, tokenizer=str(TOKENIZER), corpus=TextCorpus(str(corpus))))


def _losses(workdir: Path) -> list[float]:
  return [json.loads(line)["loss"] for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_the_llm_alone_learns_text_and_exports_an_llm_checkpoint(tmp_path):
  corpus = tmp_path / "corpus.jsonl"
  random.seed(0)
  corpus.write_text("".join(json.dumps({"content": " ".join([COUNTING] * random.randint(1, 3))})
                            + "\n" for _ in range(64)))
  loop.train(_experiment(tmp_path / "a", corpus))
  losses = _losses(tmp_path / "a")
  print(f"text only, tiny LLM, 40 steps: loss {losses[0]:.3f} -> {losses[-1]:.3f}")
  assert losses[-1] < 0.25 * losses[0]

  export = tmp_path / "a" / "params_step40"
  assert json.loads((export / "config.json").read_text())["model"] == "llama"
  lm = LanguageModel.from_pretrained(export)
  prompt = lm.tokenizer.encode("one two three", bos=True)
  answer = lm.tokenizer.decode(lm.generate_ids(prompt, max_new_tokens=16))
  print("one two three ->", repr(answer))
  assert answer.strip().startswith("four five six")

  loop.train(_experiment(tmp_path / "b", corpus, f"train.init_from={export}", "train.steps=1"))
  assert _losses(tmp_path / "b")[0] < 2 * losses[-1]  # it starts from the trained weights


def test_a_text_only_run_has_no_views_and_no_towers(tmp_path):
  exp = config_files.load("text:tiny", [])
  assert loop.model_config(exp.train).n_layers == 2
  for change, words in (({"view_plan": "tiny"}, "no views"),
                        ({"trainable": ("llm", "mixer")}, "trains 'llm' \(or its"),
                        ({"model": "llm:llama9"}, "unknown LLM preset 'llama9'")):
    with pytest.raises(UserError, match=words):
      loop.model_config(dataclasses.replace(exp.train, **change))
  with pytest.raises(UserError, match="batch_size 4 with no sources"):
    dataclasses.replace(exp.data, batch_size=4)
