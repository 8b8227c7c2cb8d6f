"""`launch compile`: a config's train step compiled for a TPU slice by the real TPU compiler on
this CPU host (the libtpu wheel of requirements-compile.txt), and slice names."""
import json
import subprocess
import sys

import pytest

from sphinx_jax.aot.topology import parse
from sphinx_jax.util.errors import UserError


def test_slice_names_count_chips_as_google_cloud_does():
  assert parse("v5e-8").chips == 8 and parse("v5e-8").topology == "v5e:2x4"
  assert parse("v5p-128").chips == 64 and parse("v5p-128").topology == "v5p:4x4x4"
  assert parse("v4-32").chips == 16
  assert parse("v6e-16").topology == "v6e:4x4"
  assert parse("v5p:2x2x2", num_slices=2).chips == 16
  for bad in ("v5p-63", "v7-8", "v5e:2x2x2", "tpu"):
    with pytest.raises(UserError):
      parse(bad)


def _compile(tmp_path, *args: str, config: str = "tiny") -> tuple[dict, str]:
  out = tmp_path / "report.json"
  proc = subprocess.run([sys.executable, "-m", "launch", "compile", "--config", config,
                         "--json", str(out), *args], capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(out.read_text()), proc.stdout


def test_tiny_train_step_compiles_for_a_v5e_slice(tmp_path):
  pytest.importorskip("libtpu")
  report, printed = _compile(tmp_path, "--topology", "v5e-4")
  assert report["topology"] == "v5e-4" and report["chips"] == 4 and report["fits"] is True
  mesh = report["mesh"]
  assert mesh["data"] * mesh["fsdp"] * mesh["tensor"] == 4
  used = report["bytes_per_chip"]
  assert set(used) == {"arguments", "outputs", "aliases", "temp", "code", "total"}
  assert used["arguments"] > 0 and used["aliases"] > 0  # the state is donated
  assert used["total"] == (used["arguments"] + used["outputs"] - used["aliases"] + used["temp"]
                           + used["code"]) <= report["hbm_bytes_per_chip"]
  assert report["model_flops_per_step"] > 0 and report["tokens_per_step"] > 0
  fast, slow = (report["tokens_per_s_per_chip"][k] for k in ("mfu_0.6", "mfu_0.4"))
  assert fast == pytest.approx(1.5 * slow)
  assert "fits" in printed


def test_a_step_that_cannot_fit_is_reported_not_raised(tmp_path):
  pytest.importorskip("libtpu")
  report, printed = _compile(tmp_path, "--topology", "v5e-4", "--config.data.batch_size=65536")
  assert report["fits"] is False and report["bytes_per_chip"] is None
  assert "memory" in report["reason"].lower() or "hbm" in report["reason"].lower()
  assert "does NOT fit" in printed


def test_a_text_only_llm_step_compiles_with_either_attention_kernel(tmp_path):
  """XLA's dense attention, and the Pallas splash kernel (Mosaic, not interpret mode) inside the
  sharded step: the 4096-token rows then keep no [rows, heads, T, T] scores, so the
  temporaries shrink."""
  pytest.importorskip("libtpu")
  dense, _ = _compile(tmp_path, "--topology", "v5e-4", config="text:tiny")
  assert dense["fits"] is True and dense["tokens_per_step"] == 16 * 4096
  splash, _ = _compile(tmp_path, "--topology", "v5e-4", "--config.train.attention=splash",
                       config="text:tiny")
  assert splash["fits"] and splash["bytes_per_chip"]["temp"] < 0.5 * dense["bytes_per_chip"]["temp"]
  # the LLM alone: 6 x params (all but the embedding lookup) x tokens + attention, no towers
  dim, layers, ffn, vocab, tokens = 64, 2, 192, 512, 16 * 4096
  per_layer = dim * dim + 2 * dim * dim // 2 + dim * dim + 3 * dim * ffn + 2 * dim  # + norms
  matmul = layers * per_layer + dim + vocab * dim  # final norm, output head
  attention = 12 * layers * dim * 4096 ** 2 * 16
  assert dense["model_flops_per_step"] == pytest.approx(6 * matmul * tokens + attention)


def test_a_quantized_decode_step_compiles_with_smaller_weights(tmp_path):
  pytest.importorskip("libtpu")
  args = ("--topology", "v5e-1", "--mode", "decode", "--max-len", "256")
  plain, _ = _compile(tmp_path, *args)
  int8, printed = _compile(tmp_path, *args, "--quantize", "int8")
  saved = plain["bytes_per_chip"]["arguments"] - int8["bytes_per_chip"]["arguments"]
  print(f"tiny decode on v5e-1: arguments {plain['bytes_per_chip']['arguments']} -> "
        f"{int8['bytes_per_chip']['arguments']} bytes with an int8 LLM")
  # the tiny LLM's matmul weights (2 layers x 49,152 + the 32,768 head) at 1 byte, not 4 (fp32);
  # TPU layouts pad small arrays to tiles, so the saving is at least that, not exactly that
  assert saved >= 3 * (2 * 49152 + 32768)
  assert "(int8 LLM)" in printed

