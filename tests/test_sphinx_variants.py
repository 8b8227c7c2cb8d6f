"""SPHINX (`llama_ens`), SPHINX-2k (`llama_ens10`), SPHINX-Tiny (`llama_ens_light`) and
SPHINX-Tiny-1k (`llama_ens5_light`) as released (SPHINX-1k: test_sphinx.py): a tiny release of each in the exact LLaMA2-Accessory layout (2
model-parallel shards, `llma.` keys, meta.json), converted and compared with its PyTorch
reference (tests/sphinx_refs.py, written from the variant's encode_image and forward): the views,
the image tokens, the logits and greedy decoding."""
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from PIL import Image

from launch.__main__ import main
from sphinx_jax import Sphinx
from sphinx_jax.checkpoints import params_io
from sphinx_jax.configs import sphinx_preset
from sphinx_jax.data.image import VIEW_PLANS, preprocess
from tests import sphinx_refs
from tests.tokenizer_refs import train_tokenizer

VARIANTS = {"llama_ens": "tiny", "llama_ens10": "tiny_2k", "llama_ens_light": "tiny_light",
            "llama_ens5_light": "tiny_light_1k"}


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def variant(request, tmp_path_factory):
  """(llama_type, PyTorch reference, our model of its converted release)."""
  llama_type, preset = request.param, VARIANTS[request.param]
  root = tmp_path_factory.mktemp(llama_type)
  reference = sphinx_refs.TorchSphinx(sphinx_preset(preset), seed=11)
  src = sphinx_refs.write_accessory(reference, root / "release", llama_type, train_tokenizer(root),
                                    n_shards=2)
  assert main(["convert", "accessory", "--src", str(src), "--dst", str(root / "ckpt"),
               "--view-plan", preset]) == 0
  return llama_type, reference, Sphinx.from_pretrained(root / "ckpt")


def _image(seed: int, size=(90, 50)) -> Image.Image:
  rng = np.random.RandomState(seed)
  return Image.fromarray(rng.randint(0, 255, (size[1], size[0], 3)).astype(np.uint8))


def _reference_views(llama_type, model, image):
  plan = VIEW_PLANS[model.config.view_plan]
  return sphinx_refs.reference_views(preprocess(image, plan.image_size), llama_type,
                                     plan.vit.side, plan.convnext.input_side)


def test_views_tokens_and_logits_equal_the_reference(variant):
  llama_type, reference, model = variant
  image = _image(0)
  ours = model.preprocess(image, arithmetic="cpu")  # the reference here is torch on a CPU
  theirs = _reference_views(llama_type, model, image)
  for tower in ("vit", "convnext"):
    np.testing.assert_array_equal(ours[tower], theirs[tower])
  tokens = model.encode_images({k: v[None] for k, v in ours.items()})[0]
  want = reference.encode_views(theirs["vit"], theirs["convnext"]).reshape(tokens.shape).numpy()
  ids = [1] + list(range(5, 37))
  logits, ref_logits = model.logits(ours, ids), reference.logits(theirs, ids)
  token_diff, logit_diff = np.abs(tokens - want).max(), np.abs(logits - ref_logits).max()
  print(f"{llama_type}: {tokens.shape[0]} image tokens, max diff {token_diff:.2e}; logits max "
        f"diff {logit_diff:.2e}")
  assert tokens.shape == (model.config.image_tokens, model.config.llm.dim)
  assert token_diff < 1e-4 and logit_diff < 1e-4


def test_greedy_ids_equal_the_reference(variant):
  llama_type, reference, model = variant
  image = _image(1)
  prompt = [1, 17, 23, 99]
  ours = model.generate_ids(model.preprocess(image, arithmetic="cpu"), prompt, max_new_tokens=8, eos_id=None)
  views = _reference_views(llama_type, model, image)
  ids = list(prompt)
  for _ in range(8):  # the reference, one full forward per token
    ids.append(int(np.argmax(reference.logits(views, ids)[-1])))
  print(f"{llama_type}: greedy {ours}")
  assert list(ours) == ids[len(prompt):]


def test_a_bf16_release_runs_in_bf16_close_to_the_fp32_reference(variant, tmp_path):
  """Released shards are bf16: they convert without a cast, compute in bf16 with the pixels cast
  as the reference's generate does; the figure is the distance to the fp32 reference."""
  llama_type, reference, fp32_model = variant
  src = sphinx_refs.write_accessory(reference, tmp_path / "release", llama_type,
                                    train_tokenizer(tmp_path), n_shards=2, dtype=torch.bfloat16)
  assert main(["convert", "accessory", "--src", str(src), "--dst", str(tmp_path / "ckpt"),
               "--view-plan", fp32_model.config.view_plan]) == 0
  stored = {str(d) for _, d in params_io.stored_shapes(tmp_path / "ckpt").values()}
  model = Sphinx.from_pretrained(tmp_path / "ckpt")
  cfg = model.config
  assert stored == {"bfloat16"}
  assert {cfg.llm.dtype, cfg.dinov2.dtype, cfg.convnext.dtype} == {"bfloat16"}
  image, ids = _image(2), [1] + list(range(5, 37))
  pixels = model.preprocess(image, arithmetic="cpu")
  assert pixels["vit"].dtype == jnp.bfloat16  # cast before the tiling, as the reference
  theirs = _reference_views(llama_type, model, image)
  diff = np.abs(model.logits(pixels, ids) - reference.logits(theirs, ids))
  prompt = [1, 17, 23, 99]
  ours = model.generate_ids(pixels, prompt, max_new_tokens=8, eos_id=None)
  want = fp32_model.generate_ids(fp32_model.preprocess(image, arithmetic="cpu"), prompt,
                                 max_new_tokens=8, eos_id=None)
  agree = sum(a == b for a, b in zip(ours, want))
  scale = np.abs(reference.logits(theirs, ids)).max()
  print(f"{llama_type} bf16 release: max |logits - fp32 reference| {diff.max():.3f} (mean "
        f"{diff.mean():.4f}, logits up to {scale:.2f}); greedy ids agree {agree}/8 ({ours} vs "
        f"{want})")
  assert diff.max() < 0.05 * scale
