"""`convert accessory` takes exactly what meta.json's variant reads (no tower dropped or missing,
no key left over) and every converter reports its source files' sizes and hashes."""
import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

from launch.__main__ import main
from sphinx_jax import Sphinx
from sphinx_jax.configs import sphinx_preset
from tests import llama_refs

FULL_ONLY = ("llma.clip.visual.", "llma.qformer.", "llma.qformer_proj.")


def _variant(release: Path, dst: Path, llama_type: str, keep=lambda key: True,
             edit=lambda state: None) -> Path:
  """A copy of the test release with meta.json naming `llama_type` and its shards filtered."""
  shutil.copytree(release, dst)
  for shard in dst.glob("consolidated.*.model.pth"):
    state = {k: v for k, v in torch.load(shard, weights_only=True)["model"].items() if keep(k)}
    edit(state)
    torch.save({"model": state}, shard)
  (dst / "meta.json").write_text(json.dumps({"llama_type": llama_type}))
  return dst


def _light(state: dict) -> None:
  """The light variants' visual_proj reads [ConvNeXt | DINOv2] only: drop CLIP's columns."""
  clip_width = sphinx_preset("tiny_1k").clip.width
  state["llma.visual_proj.0.weight"] = state["llma.visual_proj.0.weight"][:, clip_width:].clone()


def _convert(src: Path, dst: Path) -> int:
  return main(["convert", "accessory", "--src", str(src), "--dst", str(dst),
               "--view-plan", "tiny_1k"])


def _one_line(capsys) -> str:
  err = capsys.readouterr().err
  assert err.count("\n") == 1, err
  return err


def _nothing_written(root: Path) -> None:
  leftovers = [p.name for p in root.iterdir() if "out" in p.name]
  assert leftovers == [], leftovers


def test_light_variant_named_on_full_weights_is_refused(release, tmp_path, capsys):
  src = _variant(release[1], tmp_path / "release", "llama_ens5_light")
  assert _convert(src, tmp_path / "out") == 1
  err = _one_line(capsys)
  assert "llama_type 'llama_ens5_light' (meta.json) does not read" in err
  assert "'llma.clip.visual.conv1.weight'" in err and " more;" in err
  _nothing_written(tmp_path)


def test_full_variant_named_on_light_weights_names_the_missing_towers(release, tmp_path, capsys):
  light = lambda key: not key.startswith(FULL_ONLY)  # noqa: E731
  src = _variant(release[1], tmp_path / "release", "llama_ens5", keep=light, edit=_light)
  assert _convert(src, tmp_path / "out") == 1
  err = _one_line(capsys)
  assert "lack 3 part(s) that llama_type 'llama_ens5' (meta.json) reads" in err
  assert "'llma.clip.visual.', 'llma.qformer.', 'llma.qformer_proj.'" in err
  _nothing_written(tmp_path)
  (src / "meta.json").write_text(json.dumps({"llama_type": "llama_ens5_light"}))
  assert _convert(src, tmp_path / "light") == 0
  model = Sphinx.from_pretrained(tmp_path / "light")
  assert model.config.clip is None and model.config.blip2 is None


def test_weights_the_config_does_not_read_are_refused_with_no_output(release, tmp_path, capsys):
  """config.json says 1 layer, the shards hold 2: found only once everything is converted, and
  still nothing appears."""
  src = _variant(release[1], tmp_path / "release", "llama_ens5")
  config = json.loads((src / "config.json").read_text())
  (src / "config.json").write_text(json.dumps({**config, "n_layers": 1}))
  assert _convert(src, tmp_path / "out") == 1
  err = _one_line(capsys)
  assert "key(s) that llama_type 'llama_ens5' (meta.json) does not read: 'llma.layers.1." in err
  _nothing_written(tmp_path)


@pytest.mark.parametrize("name", ["meta.json", "config.json"])
@pytest.mark.parametrize("content", ['["llama_ens5"]', '"llama_ens5"', "{not json"])
def test_a_release_json_that_is_not_an_object_is_one_line_naming_it(release, tmp_path, capsys,
                                                                    name, content):
  src = tmp_path / "release"
  shutil.copytree(release[1], src)
  (src / name).write_text(content)
  assert _convert(src, tmp_path / "out") == 1
  assert str(src / name) in _one_line(capsys)
  _nothing_written(tmp_path)


def _check_source(ckpt: Path, fmt: str, src: Path, names: list[str]) -> None:
  source = json.loads((ckpt / "source.json").read_text())
  assert source["format"] == fmt and source["src"] == str(src)
  assert [f["path"] for f in source["files"]] == names
  for record in source["files"]:
    data = (src / record["path"]).read_bytes()
    assert record["bytes"] == len(data)
    assert record["sha256"] == hashlib.sha256(data).hexdigest()


def test_accessory_conversion_records_its_source_files(release):
  _check_source(release[2], "accessory", release[1],
                ["consolidated.00-of-02.model.pth", "consolidated.01-of-02.model.pth",
                 "config.json", "meta.json", "tokenizer.model"])


@pytest.fixture(scope="module")
def llama_model():
  return llama_refs.hf_llama(kv_heads=2, seed=5)


def test_meta_conversion_records_its_source_files(tmp_path, llama_model):
  src = llama_refs.write_meta(llama_model, tmp_path / "meta", n_shards=2)
  (tmp_path / "tokenizer.model").write_bytes(b"a tokenizer beside the directory")
  assert main(["convert", "meta", "--src", str(src), "--dst", str(tmp_path / "ckpt")]) == 0
  _check_source(tmp_path / "ckpt", "meta", src,
                ["consolidated.00.pth", "consolidated.01.pth", "params.json",
                 "../tokenizer.model"])


def test_hf_conversion_records_its_source_files(tmp_path, llama_model):
  src = llama_refs.write_hf(llama_model, tmp_path / "hf")
  assert main(["convert", "hf", "--src", str(src), "--dst", str(tmp_path / "ckpt")]) == 0
  _check_source(tmp_path / "ckpt", "hf", src, ["config.json", "model.safetensors"])


def test_hf_config_that_is_not_an_object_is_one_line_naming_it(tmp_path, llama_model, capsys):
  src = llama_refs.write_hf(llama_model, tmp_path / "hf")
  (src / "config.json").write_text("[]")
  capsys.readouterr()  # save_pretrained's progress bar
  assert main(["convert", "hf", "--src", str(src), "--dst", str(tmp_path / "out")]) == 1
  assert f"{src / 'config.json'}: expected a JSON object, got list" in _one_line(capsys)
  _nothing_written(tmp_path)
