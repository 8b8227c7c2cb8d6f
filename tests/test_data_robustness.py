"""The data side under bad input: any failure of one record is a skip counted with file, record id
and reason (strict mode raises it); `<image>` markers without an image are counted; image errors
name the image; oversized images are refused from their header; image paths stay in their root.
Then a seeded fuzz over every file-backed source kind (types swapped, fields deleted, bytes
flipped in JSON lines and image files, truncated lines, files and base64): nothing raises out of
the pipeline, and every record is skipped or reads as a valid sample (the clean one when the
mutation did not touch it)."""
import base64
import copy
import functools
import json
import logging
import random
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from launch.__main__ import main
from sphinx_jax.data import example as ex
from sphinx_jax.data import mimic_it, pipeline, records, sources
from sphinx_jax.data.pairs import Pairs
from sphinx_jax.data.sample import make_sample
from sphinx_jax.data.skips import BadRecord, SkipLog, Skipped
from sphinx_jax.data.tokenizer import Tokenizer
from sphinx_jax.recipe import synthetic_benchmarks
from sphinx_jax.eval.samples import Inline, benchmark_image
from tests import data_fixtures as fx


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
  return fx.tokenizer(tmp_path_factory.mktemp("tok"))


def config(tok, specs, **kw) -> pipeline.DataConfig:
  base = dict(tokenizer=str(tok), sources=tuple(specs), view_plan="tiny", tokens_per_image=fx.K,
              seq_len=256, max_images=2, batch_size=2, threads=2)
  return pipeline.DataConfig(**{**base, **kw})


def dialog(image, question, answer="It is."):
  record = {"conversations": [{"from": "human", "value": question},
                              {"from": "gpt", "value": answer}]}
  return {"image": image, **record} if image else record


def test_any_exception_of_one_record_is_a_skip_and_strict_raises_it(tmp_path, caplog):
  path = fx.write_jsonl(tmp_path / "docs.jsonl", [{"text": f"doc {i}"} for i in range(4)])

  def to_example(record, file, rid):
    if record["text"] in ("doc 1", "doc 3"):
      return 1 / 0  # a bug, not bad data: skipped all the same, and its traceback shown once
    return ex.document(record["text"], file, rid)

  opened = sources.open_file("docs", path, to_example)
  assert opened.record_id(1) == "line 2"
  guarded = pipeline.Guarded(opened, lambda example: example, strict=False)
  with caplog.at_level(logging.WARNING, logger="sphinx_jax.data.pipeline"):
    items = [guarded[i] for i in range(4)]
  assert items[1] == Skipped(str(path), "line 2", "ZeroDivisionError: division by zero")
  assert items[3] == Skipped(str(path), "line 4", "ZeroDivisionError: division by zero")
  assert [type(item) for item in items[::2]] == [ex.Example, ex.Example]
  (warning,) = [r for r in caplog.records if r.name == "sphinx_jax.data.pipeline"]
  assert warning.levelno == logging.WARNING and warning.exc_info[0] is ZeroDivisionError
  assert "docs.jsonl [line 2]" in warning.getMessage() and "strict=True" in warning.getMessage()

  strict = pipeline.Guarded(opened, lambda example: example, strict=True)
  with pytest.raises(BadRecord, match=r"docs.jsonl \[line 2\]: ZeroDivisionError") as raised:
    strict[1]
  assert isinstance(raised.value.__cause__, ZeroDivisionError)


def test_launch_data_check_skips_a_number_turn_and_counts_markers_without_image(tmp_path, tok,
                                                                                capsys):
  (tmp_path / "a.png").write_bytes(fx.png((9, 9, 9)))
  path = fx.write_jsonl(tmp_path / "dialogs.jsonl", [
      dialog("a.png", "<image>\nWhat is it?"),
      dialog("a.png", 5),  # a number where text belongs: an AttributeError deep inside, once
      dialog(None, "<image>\nWhat is this?"),  # trains, its marker dropped: counted
      dialog("a.png", "<image>\nAnd now?")])
  cfg = config(tok, [sources.Conversations(str(path), str(tmp_path))], max_images=1)
  cfg_file = tmp_path / "cfg.py"
  cfg_file.write_text("from sphinx_jax.data.pipeline import DataConfig\n"
                      "from sphinx_jax.data.sources import Conversations\n"
                      f"DATA = {cfg!r}\n")
  assert main(["data", "--config", str(cfg_file), "--show", "2", "--check"]) == 0
  out = capsys.readouterr().out
  assert "read every record: 3 good, 1 skipped" in out
  assert "dialogs.jsonl [line 2]: a turn's value is int, not text" in out
  assert f"1 records had <image> markers without an image: {path} [line 3]" in out

  skips = SkipLog()  # what training writes as skipped_records: distinct records, every epoch
  stream = iter(pipeline.batches(cfg, skips))
  for _ in range(6):
    next(stream)
  assert len(skips) == 1 and skips.noted(ex.MARKER_WITHOUT_IMAGE) == 1
  assert skips.summary().splitlines() == [
      f"skipped records: 1 (1 in {path})",
      f"  {path} [line 2]: a turn's value is int, not text",
      f"1 records had <image> markers without an image: {path} [line 3]"]


def test_image_errors_name_the_image(tmp_path):
  corrupt = tmp_path / "corrupt.png"
  corrupt.write_bytes(fx.png((1, 2, 3))[:40])
  with pytest.raises(BadRecord) as raised:
    records.record_image(corrupt, "dialogs.jsonl", "line 1")
  assert str(raised.value) == (f"dialogs.jsonl [line 1]: {corrupt}: unreadable image "
                               "(not an image format PIL knows)")
  with pytest.raises(BadRecord, match=r"LA.json \[LA_IMG_0\]: base64 image: unreadable") as raised:
    records.base64_image(base64.b64encode(b"not an image").decode(), "LA.json", "LA_IMG_0")
  assert "BytesIO" not in str(raised.value)
  with pytest.raises(ValueError, match=f"^{corrupt}: unreadable image"):
    records.read_image_file(corrupt)
  with pytest.raises(FileNotFoundError, match="nothing.png: no such image file"):
    records.read_image_file(tmp_path / "nothing.png")
  with pytest.raises(ValueError, match=r"^bench.tsv \[index 0\]: unreadable image"):
    benchmark_image(Inline(base64.b64encode(b"not an image").decode(), "bench.tsv [index 0]"))


def png_claiming(width: int, height: int) -> bytes:
  """A tiny PNG whose header says width x height: decoding it fails (its data is 8x6), so an
  error about its size proves the size was checked first, from the header alone."""
  data = bytearray(fx.png((1, 2, 3)))
  data[16:24] = struct.pack(">II", width, height)  # IHDR data starts after signature, length, type
  data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
  return bytes(data)


def test_images_over_the_pixel_limit_are_refused_before_decoding(tmp_path, monkeypatch):
  monkeypatch.delenv(records.PIXEL_LIMIT_VAR, raising=False)
  assert records.pixel_limit() == 2 ** 26 == 8192 * 8192
  big = tmp_path / "big.png"
  big.write_bytes(png_claiming(9000, 8000))  # over 2**26, under PIL's own bomb warning
  with pytest.raises(BadRecord, match=r"^f.jsonl \[line 1\]: \S+big.png: 9000x8000 image, "
                                      r"72000000 pixels, over the limit of 67108864 "
                                      r"\(\$SPHINX_MAX_IMAGE_PIXELS\)$"):
    records.record_image(big, "f.jsonl", "line 1")

  small = tmp_path / "small.png"
  small.write_bytes(fx.png((1, 2, 3)))  # 8x6
  monkeypatch.setenv(records.PIXEL_LIMIT_VAR, "48")
  assert records.read_image_file(small).size == (8, 6)
  monkeypatch.setenv(records.PIXEL_LIMIT_VAR, "47")
  for read in (records.read_image_file, benchmark_image):
    with pytest.raises(ValueError, match=f"^{small}: 8x6 image, 48 pixels, over the limit of 47"):
      read(small)
  with pytest.raises(ValueError, match=r"^bench.tsv \[index 0\]: 8x6 image"):
    benchmark_image(Inline(base64.b64encode(fx.png((1, 2, 3))).decode(), "bench.tsv [index 0]"))
  monkeypatch.setenv(records.PIXEL_LIMIT_VAR, "lots")
  with pytest.raises(ValueError, match="SPHINX_MAX_IMAGE_PIXELS='lots': expected a positive"):
    records.pixel_limit()

  monkeypatch.setenv(records.PIXEL_LIMIT_VAR, str(10 ** 12))  # PIL's own bomb check still holds
  bomb = tmp_path / "bomb.png"
  bomb.write_bytes(png_claiming(20000, 20000))
  with pytest.raises(ValueError, match=f"^{bomb}: unreadable image \\(Image size"):
    records.read_image_file(bomb)


def test_image_paths_stay_inside_their_root(tmp_path):
  root = tmp_path / "images"
  root.mkdir()
  (root / "inside.png").write_bytes(fx.png((1, 1, 1)))
  outside = tmp_path / "outside.png"
  outside.write_bytes(fx.png((2, 2, 2)))
  (root / "link.png").symlink_to(outside)  # symlinks are not followed: a linked data set reads
  paths = ["inside.png", "sub/../inside.png", str(root / "inside.png"), "link.png",
           "../outside.png", str(outside), "../images/../outside.png"]
  captions = fx.write_jsonl(tmp_path / "captions.jsonl",
                            [{"image": p, "caption": "A dot."} for p in paths])
  confined = sources.Captions(str(captions), str(root)).open()
  for i in range(4):
    assert confined[i].media[0][0].size == (8, 6)
  for i in range(4, 7):
    with pytest.raises(BadRecord, match=f"image path '{paths[i]}' is outside the image root "
                                        f"{root} \\(allow_outside_root=True reads it\\)"):
      confined[i]
  free = sources.Captions(str(captions), str(root), allow_outside_root=True).open()
  assert [free[i].media[0][0].getpixel((0, 0)) for i in range(4, 7)] == [(2, 2, 2)] * 3

  for spec in (sources.Conversations(str(fx.write_jsonl(tmp_path / "d.jsonl", [
                   dialog(["inside.png", "../outside.png"], "<image> <image> Same?")])), str(root)),
               sources.Task(str(fx.write_jsonl(tmp_path / "t.jsonl", [
                   {"image": "../outside.png", "question": "What?", "answer": "A dot."}])), "vqa",
                   str(root)),
               Pairs(str(fx.write_jsonl(tmp_path / "p.jsonl", [
                   {"image": "../outside.png", "caption": "A dot."}])), str(root))):
    with pytest.raises(BadRecord, match="'../outside.png' is outside the image root"):
      spec.open()[0]

  split = tmp_path / "world" / "eval"  # an eval adapter joining the benchmark's folder too
  split.mkdir(parents=True)
  fx.write_jsonl(split / "vqa.jsonl", [{"image": "../../outside.png", "question": "What?",
                                        "answer": "A dot."}])
  with pytest.raises(ValueError, match=r"vqa.jsonl:1: image path '../../outside.png' is outside"):
    synthetic_benchmarks.read_vqa(tmp_path / "world", "eval")


def test_a_corpus_with_one_good_record_streams(tmp_path, tok):
  """Reshuffled epochs put bad records back to back across the epoch boundary: up to twice the
  records in a row, which is not yet "every record bad"."""
  docs = [{"text": "the red circle is in the image"}] + [{"text": " "}] * 7  # empty: skipped
  corpus = sources.TextCorpus(str(fx.write_jsonl(tmp_path / "corpus.jsonl", docs)))
  cfg = config(tok, [corpus], corpus=corpus, text_rows=1, seq_len=16)
  skips = SkipLog()
  rows = iter(pipeline.text_rows(cfg, skips, Tokenizer(str(tok))))
  for _ in range(40):  # ~ 25 epochs
    assert len(next(rows).tokens) == 16
  assert len(skips) == 7


# --- the fuzz ---

TYPE_SWAPS = (0, 7, -1, 2.5, None, True, "", "x", [], ["a", 1], {}, {"k": "v"})


def _nodes(value, path=()):
  """(path, value) of every node inside a JSON value (the value itself excluded)."""
  items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(
      value, list) else ()
  for key, child in items:
    yield path + (key,), child
    yield from _nodes(child, path + (key,))


def swap_or_delete(record, rng: random.Random):
  """A copy of `record` with one node deleted or replaced by a value of another type."""
  record = copy.deepcopy(record)
  path, old = rng.choice(list(_nodes(record)))
  parent = record
  for key in path[:-1]:
    parent = parent[key]
  if rng.random() < 0.3:
    del parent[path[-1]]
  else:
    parent[path[-1]] = rng.choice([v for v in TYPE_SWAPS if type(v) is not type(old)])
  return record


def flip_bytes(data: bytes, rng: random.Random) -> bytes:
  """`data` with 1-3 bytes XOR-ed, never into a newline (that would renumber the lines after)."""
  data = bytearray(data)
  for _ in range(rng.randint(1, 3)):
    i = rng.randrange(len(data))
    flipped = data[i] ^ rng.randrange(1, 256)
    data[i] = flipped if flipped != ord("\n") else data[i]
  return bytes(data)


def truncate(data: bytes, rng: random.Random) -> bytes:
  return data[:rng.randrange(1, len(data))]


def bad_image(folder, base: bytes, name: str, rng: random.Random) -> str:
  (folder / name).write_bytes((flip_bytes if rng.random() < 0.6 else truncate)(base, rng))
  return name


def write_lines(path, records_, rng: random.Random, folder, images, image_key) -> dict:
  """`records_` as JSONL, most of them mutated; returns {line index: mutation} (no entry: the
  line is clean). The last line is cut short, and the file with it."""
  lines, mutated = [], {}
  for i, record in enumerate(records_):
    kinds = ["clean", "clean", "swap", "swap", "flip", "cut"] + ["image", "escape"] * bool(
        image_key)
    kind = "cut" if i == len(records_) - 1 else rng.choice(kinds)
    if kind == "swap":
      record = swap_or_delete(record, rng)
    elif kind == "image":
      record = {**record, image_key: bad_image(folder, rng.choice(images), f"bad_{i}.png", rng)}
    elif kind == "escape":
      outside = folder.parent / "outside.png"  # a real image: only the root refuses it
      record = {**record, image_key: rng.choice(["../outside.png", str(outside)])}
    line = json.dumps(record).encode()
    if kind in ("flip", "cut"):
      line = (flip_bytes if kind == "flip" else truncate)(line, rng)
    lines.append(line)
    if kind != "clean":
      mutated[i] = kind
  path.write_bytes(b"\n".join(lines))
  return mutated


def clean_records(i: int, images):
  """Valid records of each file-backed kind, the i-th (Task records by task)."""
  image = images[i % len(images)]
  return {
      "dialogs": dialog(image, f"<image>\nWhat is {i}?", f"It is {i}.") if i % 4 else
                 dialog(None, f"Hello {i}?", "Hi."),
      "captions": {"image": image, "caption": f"The red circle {i}." if i % 3 else
                   [f"A shape {i}.", f"The shape {i}."]},
      "vqa": {"image": image, "question": f"How many {i}?", "answer": str(i)},
      "rec": {"image": image, "phrase": f"the circle {i}", "box": [1, 1, 4, 4]},
      "detection": {"image": image, "objects": [{"label": "circle", "box": [0, 0, 3, 3]},
                                                {"label": "square", "box": [2, 1, 5, 4]}]},
      "multiple_choice": {"image": image, "question": "Which?", "choices": ["red", "blue"],
                          "answer": i % 2},
      "corpus": {"text": f"the blue square {i} is left of the circle"},
  }


def specs(folder, names):
  for name in names:
    path = str(folder / f"{name}.jsonl")
    if name == "dialogs":
      yield sources.Conversations(path, str(folder))
    elif name == "captions":
      yield sources.Captions(path, str(folder))
    elif name == "corpus":
      yield sources.TextCorpus(path)
    else:
      yield sources.Task(path, name, str(folder))


def write_mimic(folder, rng: random.Random, images, mutate: bool, n: int = 10):
  """A MIMIC-IT in-context set (each instruction its own image, the next one as context):
  (spec, {instruction id: mutation} for those a mutation touched, directly or as context)."""
  data = {f"IC_INS_{i}": {"instruction": f"What is {i}?", "answer": f"It is {i}.",
                          "image_ids": [f"IC_IMG_{i}"], "rel_ins_ids": [f"IC_INS_{(i + 1) % n}"]}
          for i in range(n)}
  store = {f"IC_IMG_{i}": base64.b64encode(images[i % len(images)]).decode() for i in range(n)}
  mutated = {}
  for i in range(n) if mutate else ():
    kind = rng.choice(["clean", "clean", "swap", "image", "base64"])
    if kind == "swap":
      data[f"IC_INS_{i}"] = swap_or_delete(data[f"IC_INS_{i}"], rng)
    elif kind == "image":
      store[f"IC_IMG_{i}"] = base64.b64encode(flip_bytes(images[0], rng)).decode()
    elif kind == "base64":
      text = store[f"IC_IMG_{i}"]
      store[f"IC_IMG_{i}"] = rng.choice([text[:rng.randrange(len(text))], text[:8] + "*" + text,
                                         None, 7, ["x"]])
    if kind != "clean":  # this instruction, and the one whose context it is
      mutated.update({f"IC_INS_{i}": kind, f"IC_INS_{(i - 1) % n}": "context"})
  (folder / "IC_instructions.json").write_text(json.dumps({"meta": {}, "data": data}))
  (folder / "IC.json").write_text(json.dumps(store))
  spec = mimic_it.MimicIt(str(folder / "IC_instructions.json"), str(folder / "IC.json"),
                          kind="in_context")
  return spec, mutated


def image_files(folder) -> list[bytes]:
  """A PNG, a JPEG and a 16-bit gray PNG, written into `folder` (and a PNG beside it); their
  bytes."""
  out = {}
  for name, image in (("rgb.png", Image.new("RGB", (8, 6), (200, 30, 40))),
                      ("photo.jpg", Image.new("RGB", (7, 9), (20, 130, 240))),
                      ("gray16.png", Image.fromarray(np.full((5, 6), 40000, np.uint16)))):
    image.save(folder / name)
    out[name] = (folder / name).read_bytes()
  (folder.parent / "outside.png").write_bytes(out["rgb.png"])
  return out


# What str() makes of the swapped-in values: text that must never reach a sample.
REPRS = ("None", "True", "False", "{'k': 'v'}", "['a', 1]")


def assert_valid(sample, layout, tok: Tokenizer):
  n = len(sample.tokens)
  assert sample.tokens.dtype == np.int32 and 2 <= n <= layout.seq_len
  assert sample.image_mask.shape == sample.loss_mask.shape == (n,)
  assert sample.tokens[0] == tok.bos_id and sample.loss_mask.any()
  assert ((sample.tokens >= 0) & (sample.tokens < tok.vocab_size)).all()
  assert not (sample.loss_mask & sample.image_mask).any()
  assert (sample.tokens[sample.image_mask] == 0).all()
  count = len(sample.images["vit"]) if sample.images else 0
  assert count <= layout.max_images and sample.image_mask.sum() == layout.tokens_per_image * count
  assert all(np.isfinite(v).all() for v in sample.images.values())


def assert_same(a, b):
  for key in ("tokens", "image_mask", "loss_mask"):
    np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
  assert a.images.keys() == b.images.keys() and a.notes == b.notes
  for key in a.images:
    np.testing.assert_array_equal(a.images[key], b.images[key])


NAMES = ("dialogs", "captions", "vqa", "rec", "detection", "multiple_choice", "corpus")
TASKS = ("vqa", "rec", "detection", "multiple_choice")


def write_fuzzed(folder, seed: int, mutate: bool, n: int = 16):
  """Every source kind in `folder`, mutated (seeded) unless `mutate` is False: (specs, per spec
  {record index, or MIMIC-IT instruction id: the mutation that touched it})."""
  rng = random.Random(seed)
  folder.mkdir()
  images = image_files(folder)
  mutated = []
  for name in NAMES:
    rows = [clean_records(i, list(images))[name] for i in range(n)]
    if mutate:
      mutated.append(write_lines(folder / f"{name}.jsonl", rows, rng, folder,
                                 list(images.values()), None if name == "corpus" else "image"))
    else:
      fx.write_jsonl(folder / f"{name}.jsonl", rows)
      mutated.append({})
  mimic, mimic_mutated = write_mimic(folder, rng, list(images.values()), mutate)
  return list(specs(folder, NAMES)) + [mimic], mutated + [mimic_mutated]


def check_record(item, kind, clean, task: bool, layout, tok: Tokenizer) -> bool:
  """One fuzzed record's outcome against its mutation; whether it was skipped."""
  if isinstance(item, Skipped):
    assert item.file and item.record and item.reason and "\n" not in item.reason
    assert kind != "escape" or "outside the image root" in item.reason
    return True
  assert kind not in ("cut", "escape"), kind  # a truncated line never parses; escapes are refused
  assert_valid(item, layout, tok)
  if kind is None:
    assert_same(item, clean)
  elif not task:  # Task formatters interpolate whatever a field holds (tasks.py)
    text = tok.decode([int(t) for t in item.tokens[~item.image_mask]])
    assert not any(r in text for r in REPRS), text
  return False


@pytest.mark.parametrize("seed", range(4))
def test_fuzzed_records_are_skipped_or_read(tmp_path, tok, seed):
  clean_specs, _ = write_fuzzed(tmp_path / "clean", seed, mutate=False)
  fuzzed_specs, mutated = write_fuzzed(tmp_path / "fuzzed", seed, mutate=True)
  cfg = config(tok, fuzzed_specs[:-2] + fuzzed_specs[-1:], corpus=fuzzed_specs[-2])
  tokenizer, layout = Tokenizer(str(tok)), cfg.layout
  skips = SkipLog()
  good = pipeline.check(cfg, skips)  # never raises: every record read once

  direct_skips, outcomes = set(), []
  for i, (clean, fuzzed) in enumerate(zip(clean_specs, fuzzed_specs)):
    fn = functools.partial(make_sample, tok=tokenizer, layout=layout, source_id=i)
    clean_source = pipeline.Guarded(clean.open(), fn, strict=False)
    source = pipeline.Guarded(fuzzed.open(), fn, strict=False)
    assert len(source) == len(clean_source)
    for j in range(len(source)):
      item = source[j]
      key = source.opened.record_id(j) if isinstance(fuzzed, mimic_it.MimicIt) else j
      outcomes.append(check_record(item, mutated[i].get(key), clean_source[j],
                                   getattr(fuzzed, "task", None) in TASKS, layout, tokenizer))
      if isinstance(item, Skipped):
        direct_skips.add((item.file, item.record))
  assert (good, set(skips.records)) == (outcomes.count(False), direct_skips)
  assert any(outcomes) and not all(outcomes)  # the fuzz both broke and kept records

  batches = iter(pipeline.batches(config(tok, fuzzed_specs[:-2] + fuzzed_specs[-1:],
                                         corpus=fuzzed_specs[-2], text_rows=1), SkipLog()))
  for _ in range(3):
    batch = next(batches)
    assert batch["tokens"].shape == (3, 256) and batch["valid"][:, 0].all()

  with pytest.raises(BadRecord):  # strict raises the first bad record, always as a BadRecord
    pipeline.check(config(tok, fuzzed_specs[:-2], strict=True), SkipLog())
