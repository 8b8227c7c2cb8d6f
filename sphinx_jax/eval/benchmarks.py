"""The benchmark table: name -> adapter, metric, generation budget, default split, exports.

Budgets (max new tokens) are LLaMA2-Accessory's (annotation_config.json): 10 for short answers,
multiple choice and yes/no, 20 for OCR-VQA, 30 for REC; 20 for captions (the few-shot
harness's); 512 for free-form answers (Accessory's MM-Vet script).
"""
from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import Callable

from sphinx_jax.eval import (choice, cider, formats_choice, formats_other, formats_vqa, rec, vqa,
                             yesno)
from sphinx_jax.util.errors import UserError


@dataclasses.dataclass(frozen=True)
class Benchmark:
  """`read(root, split, shots=, seed=)` -> samples; `score(records)` -> summary metrics, or
  {name: score} where the field uses several scorers (the first is the default);
  `export(records, out_dir)` writes files for an external judge or server."""

  read: Callable
  score: Callable[[list[dict]], dict] | dict[str, Callable[[list[dict]], dict]]
  max_new_tokens: int
  split: str | None = None
  export: Callable[[list[dict], Path], None] | None = None
  in_context: bool = False

  def scorer(self, name: str | None = None) -> tuple[str | None, Callable[[list[dict]], dict]]:
    """(name, score function) for `--scorer name` (None: the default)."""
    if not isinstance(self.score, dict):
      if name is not None:
        raise UserError(f"--scorer {name}: this benchmark has one scorer")
      return None, self.score
    name = name or next(iter(self.score))
    if name not in self.score:
      raise UserError(f"--scorer {name}: expected one of {list(self.score)}")
    return name, self.score[name]


def _free_form(records: list[dict]) -> dict:
  return {"samples": len(records),
          "note": "free-form answers: judge them externally (see the exported file)"}


def _export_llava_bench(records: list[dict], out: Path) -> None:
  """LLaVA's answer-file format, for its GPT-4 review script."""
  with open(out / "answers.jsonl", "w") as f:
    for r in records:
      f.write(json.dumps({"question_id": int(r["id"]) if r["id"].isdigit() else r["id"],
                          "prompt": r["question"], "text": r["prediction"],
                          "model_id": "sphinx-jax", "metadata": {}}) + "\n")


def _export_mmvet(records: list[dict], out: Path) -> None:
  """MM-Vet's results format {id: answer}, for its GPT-4 grader."""
  (out / "results.json").write_text(json.dumps({r["id"]: r["prediction"] for r in records},
                                               indent=1))


def _rec(name: str) -> Benchmark:
  return Benchmark(functools.partial(formats_other.read_rec, dataset=name), rec.accuracy, 30,
                   "val")


# VQA accuracy by the scorer of each source (see eval/vqa.py); the official script first.
VQA_ACCURACY = {"vqa": functools.partial(vqa.summarize, score=vqa.vqa_accuracy),
                "accessory": functools.partial(vqa.summarize, score=vqa.vqa_accuracy_accessory),
                "m4c": functools.partial(vqa.summarize, score=vqa.textvqa_accuracy)}
EXACT_MATCH = functools.partial(vqa.summarize, score=vqa.exact_match)

BENCHMARKS: dict[str, Benchmark] = {
    "vqav2": Benchmark(formats_vqa.read_vqa, VQA_ACCURACY, 10, "val2014"),
    "okvqa": Benchmark(formats_vqa.read_vqa, VQA_ACCURACY, 10, "val2014"),
    "gqa": Benchmark(formats_vqa.read_gqa, EXACT_MATCH, 10, "testdev_balanced"),
    "vizwiz": Benchmark(formats_vqa.read_vizwiz, VQA_ACCURACY, 10, "val"),
    "textvqa": Benchmark(formats_vqa.read_textvqa, VQA_ACCURACY, 10, "val"),
    "textvqa_ocr": Benchmark(functools.partial(formats_vqa.read_textvqa, ocr=True), VQA_ACCURACY,
                             10, "val"),
    "ocrvqa": Benchmark(formats_vqa.read_ocrvqa, EXACT_MATCH, 20, "test"),
    "scienceqa": Benchmark(formats_choice.read_scienceqa,
                           functools.partial(choice.accuracy, by="subject"), 10, "test"),
    "seed": Benchmark(formats_choice.read_seed,
                      functools.partial(choice.accuracy, by="question_type"), 10),
    "mmbench": Benchmark(formats_choice.read_mmbench, choice.circular, 10),
    "pope": Benchmark(formats_other.read_pope, yesno.pope, 10),
    "mme": Benchmark(formats_other.read_mme, yesno.mme, 10),
    "refcoco": _rec("refcoco"),
    "refcoco+": _rec("refcoco+"),
    "refcocog": _rec("refcocog"),
    "coco_captions": Benchmark(formats_other.read_coco,
                               {"cider": cider.coco_cider,
                                "pycocoevalcap": cider.coco_cider_pycocoevalcap}, 20, "test",
                               in_context=True),
    "llava_bench": Benchmark(formats_other.read_llava_bench, _free_form, 512,
                             export=_export_llava_bench),
    "mmvet": Benchmark(formats_other.read_mmvet, _free_form, 512, export=_export_mmvet),
}


def register(name: str, benchmark: Benchmark) -> None:
  """Add a benchmark beside the published ones (the recipe's synthetic_*: recipe.synthetic_
  benchmarks); a name stands for one benchmark."""
  if BENCHMARKS.get(name, benchmark) != benchmark:
    raise UserError(f"benchmark {name!r} is already registered")
  BENCHMARKS[name] = benchmark
