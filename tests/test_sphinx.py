"""SPHINX end to end: a LLaMA2-Accessory release converted and run against a PyTorch SPHINX."""
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from launch.__main__ import main
from sphinx_jax import Sphinx, sharding
from sphinx_jax.checkpoints import params_io
from sphinx_jax.configs import SPHINX_PRESETS, sphinx_preset
from sphinx_jax.data import example, sample, templates
from sphinx_jax.data.image import VIEW_PLANS
from sphinx_jax.data.sample import image_after_bos
from sphinx_jax.models import sphinx as sphinx_model


@pytest.fixture(scope="module")
def model(release):
  return Sphinx.from_pretrained(release[2])


def _image(seed=0, size=(70, 40)):
  pixels = np.random.RandomState(seed).randint(0, 255, (size[1], size[0], 3)).astype(np.uint8)
  return Image.fromarray(pixels)


def test_converted_release_equals_pytorch_sphinx(release, model):
  reference, _, _ = release
  pixels = model.preprocess(_image())
  assert pixels["vit"].shape == (5, 28, 28, 3) and pixels["convnext"].shape == (5, 16, 16, 3)
  ids = [1] + list(range(5, 40))
  ours, theirs = model.logits(pixels, ids), reference.logits(pixels, ids)
  diff = np.abs(ours - theirs).max()
  print(f"SPHINX-1k (tiny) logits vs PyTorch reference: max abs diff {diff:.2e}")
  assert ours.shape == (len(ids), 512) and diff < 1e-4
  config = json.loads((release[2] / "config.json").read_text())
  assert config["model"] == "sphinx" and config["n_views"] == 5


def test_greedy_generation_equals_stepwise_argmax(model):
  pixels = model.preprocess(_image(1))
  prompt = [1, 17, 23, 99]
  generated = model.generate_ids(pixels, prompt, max_new_tokens=8, eos_id=None)
  assert len(generated) == 8
  ids = list(prompt)
  for token in generated:
    assert int(model.logits(pixels, ids)[-1].argmax()) == token
    ids.append(token)


def test_streaming_yields_the_generated_tokens(model):
  pixels = model.preprocess(_image(2))
  streamed = []
  generated = model.generate_ids(pixels, [1, 5, 6], max_new_tokens=5, eos_id=None,
                                 on_token=streamed.append)
  assert streamed == generated


def test_a_batch_of_chat_turns_answers_as_each_turn_alone(model):
  images = [_image(3), None, _image(4)]
  questions = ["What is in the image?", "Say something.", "Describe the picture in detail."]
  histories = [(), (("Hi", "Hello."),), ()]
  alone = [model.chat(*turn, max_new_tokens=6) for turn in zip(images, questions, histories)]
  print("answers:", alone)
  assert model.chat_batch(images, questions, histories, max_new_tokens=6) == alone
  assert len(set(alone)) > 1  # different turns, different answers: not one row copied


def test_several_images_are_one_media_after_bos_as_in_training(model):
  """A chat turn with several images (or video frames) is laid out exactly as MIMIC-IT's
  several-image samples train: one media of frames right after BOS, then the text."""
  tok, k = model.tokenizer, model.config.image_tokens
  question = "What changed between the pictures?"
  tokens, image_mask = sample.prompt(templates.conversation_prompt([(question, None)]), 3, tok, k)
  trained = sample.encode(example.dialog([(question, "nothing")], [(None,) * 3], "f", "r"), tok, k)
  ids, mask = np.maximum(trained[0], 0)[:len(tokens)], np.asarray(trained[1])[:len(tokens)]
  assert tokens.tolist() == ids.tolist() and image_mask.tolist() == mask.tolist()
  assert image_mask[1:1 + 3 * k].all() and image_mask.sum() == 3 * k


def test_a_batch_mixing_frames_images_and_text_answers_as_each_alone(model):
  turns = [([_image(5), _image(6)], "Compare them."), (_image(7), "What is it?"),
           (None, "Say something.")]
  budgets = [5, 7, 3]
  alone = [model.chat(media, q, max_new_tokens=b) for (media, q), b in zip(turns, budgets)]
  streamed = {i: [] for i in range(3)}
  together = model.chat_batch([m for m, _ in turns], [q for _, q in turns],
                              max_new_tokens=budgets,
                              on_text=lambda i, piece: streamed[i].append(piece))
  print("answers:", alone)
  assert together == alone
  for i in range(3):
    assert "".join(streamed[i]).strip().startswith(alone[i])
  prompts = [model._turn(media, q, ()) for media, q in turns]  # no EOS: every row runs out
  out = model.generate(model.batch(prompts), budgets, eos_id=None, steps=16)
  assert out.shape[1] == 16 and ((out != -1).sum(axis=1)[:3] == budgets).all()


@pytest.mark.parametrize("name,tokens", [("sphinx", 291), ("sphinx_1k", 1455),
                                         ("sphinx_2k", 2910), ("sphinx_tiny", 259),
                                         ("sphinx_tiny_1k", 1295)])
def test_every_variant_image_token_count(name, tokens):
  cfg = SPHINX_PRESETS[name]
  assert cfg.image_tokens == tokens and VIEW_PLANS[cfg.view_plan].num_views == cfg.n_views
  images = {k: jax.ShapeDtypeStruct((1, cfg.n_views, s, s, 3), jnp.float32)
            for k, s in cfg.view_sizes.items()}
  params = jax.eval_shape(lambda: nn.unbox(sphinx_model.init_params(cfg, jax.random.key(0))))
  out = jax.eval_shape(lambda p, x: sphinx_model.SphinxNet(cfg).apply(
      p, x, method=sphinx_model.SphinxNet.encode_images), params, images)
  assert out.shape == (1, tokens, cfg.llm.dim)


def test_sphinx_1k_layout_puts_the_image_after_bos():
  k = SPHINX_PRESETS["sphinx_1k"].image_tokens
  tokens, image_mask = image_after_bos([1, 40, 41, 42], k)
  assert k == 1455 and tokens.shape == (1 + 1455 + 3,)
  assert not image_mask[0] and image_mask[1:1 + 1455].all() and not image_mask[1456:].any()
  assert list(tokens[[0, 1456, 1457, 1458]]) == [1, 40, 41, 42]


def test_two_images_land_at_their_placeholders(model):
  cfg = model.config
  k = cfg.image_tokens
  texts = [1, 7, 8], [9, 10], [11]  # BOS text <image> text <image> text
  tokens = np.array(texts[0] + [0] * k + texts[1] + [0] * k + texts[2], np.int32)[None]
  image_mask = np.zeros(tokens.shape, bool)
  first, second = len(texts[0]), len(texts[0]) + k + len(texts[1])
  image_mask[0, first:first + k] = image_mask[0, second:second + k] = True
  views = [model.preprocess(_image(s)) for s in (4, 5)]
  images = {name: np.stack([v[name] for v in views])[None] for name in views[0]}
  module = sphinx_model.SphinxNet(cfg)
  embeds = module.apply(model.params, tokens, image_mask, images, method=module.embed)[0]
  encoded = module.apply(model.params, jax.tree.map(lambda x: x[0], images),
                         method=module.encode_images)
  text = module.apply(model.params, tokens, method=module.embed)[0]
  np.testing.assert_array_equal(embeds[first:first + k], encoded[0])
  np.testing.assert_array_equal(embeds[second:second + k], encoded[1])
  text_slots = ~image_mask[0]
  np.testing.assert_array_equal(embeds[text_slots], text[text_slots])


def test_sharded_forward_equals_single_device(model):
  pixels = model.preprocess(_image(6))
  ids = [1, 30, 31, 32, 33]
  host = jax.tree.map(np.asarray, model.params)  # fresh arrays: no trace of the 8-device mesh
  single = Sphinx(model.config, jax.device_put(host, jax.devices()[0]),
                  mesh=sharding.make_mesh(sharding.MeshConfig(1, 1, 1), jax.devices()[:1]))
  mesh = sharding.make_mesh(sharding.MeshConfig(2, 2, 2))
  abstract, shardings = sharding.param_shardings(
      lambda k: sphinx_model.init_params(model.config, k), mesh, jax.random.key(0))
  sharded = Sphinx(model.config, jax.device_put(host, shardings), mesh=mesh)
  wq = sharded.params["params"]["llm"]["layers"]["attention"]["wq"]
  assert wq.addressable_shards[0].data.shape[1:3] == (32, 2)  # fsdp halves dim, tensor heads
  diff = np.abs(sharded.logits(pixels, ids) - single.logits(pixels, ids)).max()
  print(f"(2,2,2) mesh vs one device: max abs diff {diff:.1e}")
  assert diff < 1e-5


def test_moe_is_refused_clearly(release, tmp_path, capsys):
  src = tmp_path / "moe"
  src.mkdir()
  (src / "meta.json").write_text(json.dumps({"llama_type": "mixtral_sparse_ens5"}))
  assert main(["convert", "accessory", "--src", str(src), "--dst", str(tmp_path / "out")]) == 1
  assert "not supported yet" in capsys.readouterr().err
  with pytest.raises(NotImplementedError, match="not supported yet"):
    sphinx_preset("sphinx_moe")


def test_checkpoint_params_are_stored_layer_by_layer(release):
  stored = params_io.stored_shapes(release[2])
  assert "llm/layers/1/attention/wq" in stored
  assert any(k.startswith("clip/layers/1/") for k in stored)
  assert stored["mixer/start_img"][0] == (64,)


def test_real_convnext_view_gives_257_tokens_of_3072():
  from sphinx_jax.models.mixer import convnext_tokens
  from sphinx_jax.models.vision.convnext import ConvNext
  cfg = SPHINX_PRESETS["sphinx"]
  pixels = jax.ShapeDtypeStruct((1, 256, 256, 3), jnp.float32)  # a 224 view after the 256 resize
  params = jax.eval_shape(lambda: nn.unbox(ConvNext(cfg.convnext).init(jax.random.key(0),
                                                                        jnp.zeros((1, 256, 256, 3)))))
  fmap = jax.eval_shape(ConvNext(cfg.convnext).apply, params, pixels)
  tokens = jax.eval_shape(lambda m: convnext_tokens(m, cfg.dinov2.grid), fmap)
  assert fmap.shape == (1, 8, 8, 3072) and tokens.shape == (1, 257, 3072)
