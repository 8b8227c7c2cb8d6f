"""LoRA and QLoRA fine-tuning (TrainConfig.lora_rank, .quantize; configs/finetune_lora.py): the
adapters learn, the base stays bit-identical, the optimizer state covers the adapters alone, and
the export merges them into a plain checkpoint that answers as the adapter model does."""
import json

import jax
import numpy as np
import pytest
from PIL import Image

from launch import config_files
from sphinx_jax import Sphinx
from sphinx_jax.checkpoints import params_io
from sphinx_jax.models import lora, quantization
from sphinx_jax.train import loop, state_checkpoints
from sphinx_jax.train.optimizer import LORA, split
from sphinx_jax.util.errors import UserError

LORA_RUN = ("train.trainable=('lora',)", "train.lora_rank=2", "train.lora_alpha=8.0",
            "train.checkpoint_every=100", "train.optim.lr=0.01")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
  """A tiny SPHINX trained 10 steps on the fixture: the pretrained model a user adapts."""
  workdir = tmp_path_factory.mktemp("lora") / "base"
  loop.train(config_files.load("tiny", [f"workdir={workdir}", "train.steps=10",
                                        "train.checkpoint_every=100"]))
  return workdir / "params_step10"


def _experiment(workdir, base, *overrides):
  return config_files.load("tiny", [f"workdir={workdir}", f"train.init_from={base}", *LORA_RUN,
                                    *overrides])


def _losses(workdir) -> list[float]:
  return [json.loads(line)["loss"] for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def _bytes(tree) -> int:
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def test_lora_learns_keeps_the_base_and_exports_a_merged_checkpoint(base, tmp_path):
  base_dir = base
  exp = _experiment(tmp_path / "lora", base_dir, "train.steps=50")
  loop.train(exp)
  losses = _losses(tmp_path / "lora")
  first, last = losses[0], float(np.mean(losses[-5:]))
  print(f"LoRA rank 2, 50 steps on the tiny fixture: loss {first:.3f} -> {last:.3f}")
  assert last < 0.5 * first

  run = loop.setup(exp)
  state, _ = state_checkpoints.Checkpoints(tmp_path / "lora" / "checkpoints", 100, 1) \
      .restore_newest(run.abstract)
  adapters, frozen = split(state.params["params"], (LORA,))
  stored = params_io.load(base_dir, jax.tree.map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), frozen))
  jax.tree.map(np.testing.assert_array_equal, stored, frozen)  # the base is bit-identical
  assert set(adapters) == {"llm"} and all(lora.is_adapter(k) for k in
                                          adapters["llm"]["layers"]["attention"])

  full = loop.setup(config_files.load("tiny", [f"train.init_from={base_dir}"]))
  ratio = _bytes(run.abstract.opt_state) / _bytes(full.abstract.opt_state)
  print(f"optimizer state: LoRA {_bytes(run.abstract.opt_state) / 1e3:.1f} kB, full fine-tuning "
        f"{_bytes(full.abstract.opt_state) / 1e3:.1f} kB: {ratio:.3f}x")
  assert ratio <= 0.05

  merged = Sphinx.from_pretrained(tmp_path / "lora" / "params_step50")
  assert merged.config.llm.lora_rank == 0
  adapted = Sphinx(run.cfg, state.params, merged.tokenizer)
  ids = merged.tokenizer.encode("A red circle on a white background.", bos=True)
  pixels = merged.preprocess(Image.new("RGB", (40, 30), (200, 30, 30)))
  diff = np.abs(merged.logits(pixels, ids) - adapted.logits(pixels, ids)).max()
  print(f"merged export vs adapter model: max |dlogit| {diff:.2e}")
  assert diff <= 1e-5


def test_qlora_trains_adapters_over_an_int8_base(base, tmp_path):
  exp = _experiment(tmp_path / "qlora", base, "train.steps=30", "train.quantize=int8")
  loop.train(exp)
  losses = _losses(tmp_path / "qlora")
  print(f"QLoRA (int8 base), 30 steps: loss {losses[0]:.3f} -> {np.mean(losses[-5:]):.3f}")
  assert np.mean(losses[-5:]) < 0.5 * losses[0]
  run = loop.setup(exp)
  assert quantization.scheme_of(run.abstract.params) == "int8"
  assert Sphinx.from_pretrained(tmp_path / "qlora" / "params_step30").config.llm.lora_rank == 0


@pytest.mark.parametrize("overrides, message", [
    (("train.lora_rank=4",), "name 'lora' in trainable"),
    (("train.trainable=('lora',)",), "exactly when lora_rank > 0"),
    (("train.quantize=int8",), "QLoRA"),
])
def test_inconsistent_lora_settings_are_refused(overrides, message):
  with pytest.raises(UserError, match=message):
    loop.model_config(config_files.load("tiny", list(overrides)).train)
