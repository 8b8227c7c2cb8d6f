"""Grounding (parse, map back, draw), the chat command line and the inference notebook."""
import json
import os
import struct
import zlib
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient
from PIL import Image

from launch.__main__ import main
from sphinx_jax.inference import grounding

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "inference.ipynb"


def test_parse_phrases_boxes_and_keypoints():
  text = ("A <p>red circle</p>[0.10,0.20,0.50,0.60] beside <p>two dogs</p>"
          "[0.01,0.02,0.03,0.04;0.30,0.40,0.50,0.60], a nose [0.55,0.45] and [1, 2] (ints ignored)")
  found = grounding.parse(text)
  assert found == [
      grounding.Grounding("red circle", ((0.10, 0.20, 0.50, 0.60),)),
      grounding.Grounding("two dogs", ((0.01, 0.02, 0.03, 0.04), (0.30, 0.40, 0.50, 0.60))),
      grounding.Grounding(None, ((0.55, 0.45),)),
  ]


def test_boxes_map_from_the_padded_square():
  # 200 x 100 image: padded to 200 x 200 with 50 rows above; x unchanged, y shifted by 50.
  assert grounding.to_image((0.1, 0.3, 0.5, 0.6), 200, 100) == pytest.approx((20, 10, 100, 70))
  # 100 x 201 portrait: 50 columns left of it (201 - 100 = 101 -> 50 before, 51 after).
  assert grounding.to_image((0.5, 0.5), 100, 201) == pytest.approx((100.5 - 50, 100.5))
  box = (12.0, 7.0, 80.0, 44.0)
  assert grounding.to_image(grounding.to_square(box, 120, 60), 120, 60) == pytest.approx(box)


def test_draw_marks_the_box_edges():
  image = Image.new("RGB", (200, 100), (255, 255, 255))
  drawn = np.asarray(grounding.draw(image, grounding.parse("<p>x</p>[0.10,0.30,0.50,0.60]")))
  assert drawn.shape == (100, 200, 3)
  # box (20, 10, 100, 70) in pixels
  for edge in (drawn[10, 20:101], drawn[70, 20:101], drawn[10:71, 20], drawn[10:71, 100]):
    assert (edge != 255).any(axis=-1).all()
  assert (drawn[40, 60] == 255).all() and (drawn[5, 5] == 255).all()


def _png(path: Path) -> Path:
  Image.fromarray(np.random.RandomState(0).randint(0, 255, (30, 50, 3)).astype(np.uint8)).save(path)
  return path


def test_chat_one_shot_streams_an_answer(release, tmp_path, capsys):
  image = _png(tmp_path / "a.png")
  assert main(["chat", "--checkpoint", str(release[2]), "--image", str(image), "--prompt",
               "What is it?", "--max-new-tokens", "5", "--temperature", "0",
               "--boxes-out", str(tmp_path / "boxes.png")]) == 0
  out = capsys.readouterr().out
  assert "box(es) drawn in" in out and (tmp_path / "boxes.png").is_file()


def test_chat_on_a_corrupt_image_is_one_line_naming_it(release, tmp_path, capsys):
  bad = tmp_path / "corrupt.png"
  bad.write_bytes(_png(tmp_path / "ok.png").read_bytes()[:60])
  assert main(["chat", "--checkpoint", str(release[2]), "--image", str(bad), "--prompt", "hi"]) == 1
  err = capsys.readouterr().err
  assert str(bad) in err and err.count("\n") == 1


def _bomb(path: Path) -> Path:
  """A 1-pixel PNG whose header claims 100000 x 100000 pixels: decoding it would take 10 GB."""
  _png(path)
  Image.new("L", (1, 1)).save(path)
  data = bytearray(path.read_bytes())
  data[16:24] = struct.pack(">II", 100_000, 100_000)  # IHDR width, height
  data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # IHDR's CRC
  path.write_bytes(bytes(data))
  return path


def test_chat_on_a_decompression_bomb_is_one_line_naming_it(release, tmp_path, capsys):
  bomb = _bomb(tmp_path / "bomb.png")
  assert main(["chat", "--checkpoint", str(release[2]), "--image", str(bomb), "--prompt", "hi"]) == 1
  err = capsys.readouterr().err
  assert str(bomb) in err and err.count("\n") == 1


def test_chat_default_budget_fits_a_small_context(release, tmp_path, capsys):
  """512 new tokens do not fit after a prompt in the tiny model's 512 positions: the default is
  what is left, and a larger --max-new-tokens is reduced to it with a note."""
  image = _png(tmp_path / "a.png")
  args = ["chat", "--checkpoint", str(release[2]), "--image", str(image), "--prompt", "What?"]
  assert main(args) == 0
  assert capsys.readouterr().err == ""
  assert main(args + ["--max-new-tokens", "100000"]) == 0
  err = capsys.readouterr().err
  assert "note: --max-new-tokens 100000 reduced to " in err and err.count("\n") == 1


@pytest.mark.parametrize("budget", ["0", "-3"])
def test_chat_max_new_tokens_below_one_is_one_line(release, capsys, budget):
  assert main(["chat", "--checkpoint", str(release[2]), "--prompt", "hi", "--max-new-tokens",
               budget]) == 1
  err = capsys.readouterr().err
  assert f"--max-new-tokens {budget}: must be at least 1" in err and err.count("\n") == 1


def test_one_shot_chat_with_a_prompt_too_long_is_one_line(release, capsys):
  assert main(["chat", "--checkpoint", str(release[2]), "--prompt", "red " * 600]) == 1
  err = capsys.readouterr().err
  assert "leaves no room for an answer in max_seq_len 512" in err and err.count("\n") == 1


def test_interactive_chat_reports_a_turn_too_long_and_goes_on(release, tmp_path, capsys,
                                                              monkeypatch):
  lines = iter(["What is it?", "red " * 600, "/reset", "And now?", ""])
  monkeypatch.setattr("builtins.input", lambda prompt="": next(lines))
  assert main(["chat", "--checkpoint", str(release[2]), "--image", str(_png(tmp_path / "a.png")),
               "--max-new-tokens", "3"]) == 0
  captured = capsys.readouterr()
  assert "leaves no room for an answer" in captured.err and "/reset forgets" in captured.err
  assert captured.out.count("Assistant: ") == 2


def test_chat_without_config_json_is_one_line_naming_it(tmp_path, capsys):
  (tmp_path / "ckpt").mkdir()
  assert main(["chat", "--checkpoint", str(tmp_path / "ckpt"), "--prompt", "hi"]) == 1
  err = capsys.readouterr().err
  assert str(tmp_path / "ckpt" / "config.json") in err and err.count("\n") == 1


def test_inference_notebook_runs(release, tiny_sam, tmp_path, monkeypatch):
  monkeypatch.setenv("SPHINX_CHECKPOINT", str(release[2]))
  monkeypatch.setenv("SAM_CHECKPOINT", str(tiny_sam[1]))
  monkeypatch.setenv("SPHINX_IMAGE", str(_png(tmp_path / "nb.png")))
  monkeypatch.setenv("XLA_FLAGS", os.environ["XLA_FLAGS"])
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  NotebookClient(notebook, timeout=600, kernel_name="python3",
                 resources={"metadata": {"path": str(NOTEBOOK.parents[1])}}).execute()
  outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
  assert not [o for o in outputs if o.output_type == "error"]
  assert any("image tokens per image" in o.get("text", "") for o in outputs)
  drawn = [o for o in outputs if "image/png" in o.get("data", {})]
  assert len(drawn) == 2  # the boxes, then the masks
  assert any("pixels per mask" in o.get("text", "") for o in outputs)


@pytest.mark.parametrize("change", [{"source": "elsewhere"}, {"llm": 3}])
def test_chat_on_a_config_json_that_is_not_a_sphinx_config_is_one_line(release, tmp_path, capsys,
                                                                       change):
  ckpt = tmp_path / "ckpt"
  ckpt.mkdir()
  config = json.loads((release[2] / "config.json").read_text())
  (ckpt / "config.json").write_text(json.dumps({**config, **change}))
  assert main(["chat", "--checkpoint", str(ckpt), "--prompt", "hi"]) == 1
  err = capsys.readouterr().err
  assert f"{ckpt / 'config.json'}: not a SPHINX config" in err and err.count("\n") == 1
