"""Test setup: 8 fake CPU devices (set before jax is imported) and float32 matmuls everywhere.

No persistent compilation cache: with one shared by the workers and their subprocesses, CI lost
two workers to crashes while they compiled (and a two-process run missed its barrier once).
"""
import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


import pytest  # noqa: E402

# Files that take minutes, longest first (measured, `--durations`): run first, so the two
# workers (`-n 2 --dist loadfile`) end together instead of one finishing them alone (xdist's
# default order, most tests first, left the two longest files to the end side by side;
# pyproject turns it off with --no-loadscope-reorder).
SLOW_FILES = ("test_learning.py", "test_default.py", "test_multiprocess.py", "test_train.py",
              "test_lora.py", "test_quantization.py", "test_sam.py", "test_checkpoint_integrity.py",
              "test_sphinx_variants.py", "test_attention.py", "test_compile.py")


def pytest_collection_modifyitems(items):
  rank = {name: i for i, name in enumerate(SLOW_FILES)}
  items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FILES)))


@pytest.fixture(scope="session")
def release(tmp_path_factory):
  """A tiny SPHINX-1k in the exact LLaMA2-Accessory layout (2 model-parallel shards), its PyTorch
  reference, and our conversion of it: (reference, release dir, checkpoint dir)."""
  from launch.__main__ import main
  from sphinx_jax.configs import sphinx_preset
  from tests import sphinx_refs
  from tests.tokenizer_refs import train_tokenizer
  root = tmp_path_factory.mktemp("sphinx")
  reference = sphinx_refs.TorchSphinx(sphinx_preset("tiny_1k"))
  src = sphinx_refs.write_accessory(reference, root / "release", "llama_ens5",
                                    train_tokenizer(root), n_shards=2)
  dst = root / "ckpt"
  assert main(["convert", "accessory", "--src", str(src), "--dst", str(dst),
               "--view-plan", "tiny_1k"]) == 0
  return reference, src, dst


@pytest.fixture(scope="session")
def trained_sphinx(tmp_path_factory):
  """tests/trained_square.py's tiny SPHINX (names a square's colour, detects it), trained once."""
  from tests.trained_square import train_square_model
  return train_square_model(tmp_path_factory.mktemp("square_world"))


@pytest.fixture(scope="session")
def tiny_sam(tmp_path_factory):
  """(HF SamModel, a checkpoint converted from its HF directory by `launch convert sam`):
  tests/sam_refs' tiny random SAM."""
  from launch.__main__ import main
  from tests.sam_refs import tiny_hf_sam
  root = tmp_path_factory.mktemp("sam")
  hf = tiny_hf_sam()
  hf.save_pretrained(root / "hf")
  assert main(["convert", "sam", "--src", str(root / "hf"), "--dst", str(root / "ckpt")]) == 0
  return hf, root / "ckpt"
