"""The recipe's report (recipe.py): what each stage achieved, on the world's held-out scenes.

- Stage 0: each tower's zero-shot accuracy (recipe/tower_eval.py, computed when stage 0 ends), and a
  linear probe on the image tokens of the stage-0 checkpoint (recipe/probe.py): what the LLM could
  read before it is trained.
- The final (stage 2) model: VQA accuracy per question type, REC Acc@0.5, OCR exact match and
  detection F1@0.5 (the synthetic_* benchmarks; predictions under `workdir/eval/`), each next to
  the best constant answer's score on the same questions (the majority baseline, chosen on the
  training split), and the fraction of VQA answers that change when the image is swapped for
  another scene's.
- Held-out loss of the starting (stage-0) and the stage-1 models: captions of each domain (the
  test of weight mixing: the mix should be no worse on each domain than the worse parent) and
  text-only documents (what stage 1's text rows protect).
- `loss.png`: every stage's training loss against the global step; `chat.png`: the chat
  example's image, upscaled, with the answer's boxes.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from collections import Counter
from pathlib import Path


from sphinx_jax.data import synthetic, synthetic_scenes, tasks
from sphinx_jax.data.pipeline import DataConfig
from sphinx_jax.data.records import read_image_file
from sphinx_jax.data.tokenizer import Tokenizer
from sphinx_jax.eval import detection, rec
from sphinx_jax.eval.runner import evaluate
from sphinx_jax.eval.samples import read_jsonl
from sphinx_jax.inference import grounding
from sphinx_jax.inference.sphinx_model import Sphinx
from sphinx_jax.recipe import synthetic_benchmarks
from sphinx_jax.recipe.heldout_loss import mean_loss
from sphinx_jax.recipe.probe import probe
from sphinx_jax.util import plots

log = logging.getLogger(__name__)
VERSION = 2  # bump when the report's contents change: a finished report is then redone
RESULTS = "results.json"
DOMAINS = ("real", "synthetic")
STAGE1 = ("start", "real", "synthetic", "mixed")
VQA_TYPES = ("colour", "shape", "count", "yesno")
# One budget for every synthetic benchmark (decoding stops when every row is done), so they
# share one compiled generate: the longest answer, a 4-object detection, fits.
MAX_NEW_TOKENS = 128


def make(world: Path, checkpoints: dict[str, Path], metrics: dict[str, Path], zero_shot: Path,
         data: DataConfig, report, workdir: Path) -> dict:
  """Scores, losses, plot and chat (see the module doc); returns them all. `checkpoints` maps
  start / real / synthetic / mixed / stage2 to params directories; `data` gives the stage-1
  layout the held-out losses are measured in; `report` is a recipe.Report."""
  results = {"towers": json.loads(Path(zero_shot).read_text())}
  log.info("report: linear probe on the stage-0 image tokens")
  results["probe"] = probe(Sphinx.from_pretrained(checkpoints["start"]), world, report.limit)
  final = Sphinx.from_pretrained(checkpoints["stage2"])
  scores, records = {}, {}
  synthetic_benchmarks.register()
  for name in ("vqa", "vqa_swapped", "rec", "ocr", "detection"):
    log.info("report: synthetic_%s", name)
    out = workdir / "eval" / name
    scores[name] = evaluate(final, f"synthetic_{name}", world, out, limit=report.limit,
                            batch_size=report.batch_size, max_new_tokens=MAX_NEW_TOKENS,
                            checkpoint=str(checkpoints["stage2"]))
    records[name] = read_jsonl(out / "predictions.jsonl")
  base = baselines(world, records)
  results["vqa"] = {k: scores["vqa"]["per_answer_type"].get(k, 0.0) / 100 for k in VQA_TYPES}
  results.update({
      "vqa_samples": scores["vqa"]["samples"], "baseline": base,
      "rec_acc@0.5": scores["rec"]["acc@0.5"] / 100, "rec_samples": scores["rec"]["samples"],
      "ocr_exact_match": scores["ocr"]["accuracy"] / 100, "ocr_samples": scores["ocr"]["samples"],
      "detection_f1@0.5": scores["detection"]["f1@0.5"] / 100,
      "detection_samples": scores["detection"]["samples"],
      "answers_change_with_image": changed(records["vqa"], records["vqa_swapped"])})
  log.info("report: held-out losses of the stage-1 models")
  results["caption_loss"], results["text_loss"] = held_out_losses(
      world, {k: checkpoints[k] for k in STAGE1}, data, report.limit)
  plots.loss_curves(metrics, workdir / "loss.png")
  results["chat"] = chat_example(final, world / "eval" / report.chat_image, report.chat_prompt,
                                 workdir / "chat.png")
  return results


def baselines(world: Path, records: dict[str, list[dict]]) -> dict:
  """The best constant answer of the training split, scored on the held-out records: VQA per
  type, OCR, REC (the training boxes' median box) and detection (the commonest answer)."""
  train = {name: read_jsonl(Path(world) / "train" / f"{name}.jsonl")
           for name in ("vqa", "ocr", "rec", "detection")}
  out = {}
  for kind in VQA_TYPES:
    answers = Counter(r["answer"] for r in train["vqa"] if r["type"] == kind)
    held = [r for r in records["vqa"] if r["answer_type"] == kind]
    top = answers.most_common(1)[0][0] if answers else ""
    out[kind] = sum(r["reference"] == top for r in held) / max(len(held), 1)
  word = Counter(r["answer"] for r in train["ocr"]).most_common(1)[0][0]
  out["ocr"] = sum(r["reference"] == word for r in records["ocr"]) / max(len(records["ocr"]), 1)
  median = [sorted(r["box"][i] for r in train["rec"])[len(train["rec"]) // 2] for i in range(4)]
  held = records["rec"]
  out["rec"] = sum(rec.box_iou(median, r["reference"]) >= 0.5 for r in held) / max(len(held), 1)
  size = synthetic_scenes.IMAGE_SIZE
  common = Counter(tasks.detection(r, size)[0][1] for r in train["detection"]).most_common(1)[0][0]
  out["detection"] = detection.f1([dict(r, prediction=common)
                                   for r in records["detection"]])["f1@0.5"] / 100
  return out


def changed(asked: list[dict], swapped: list[dict]) -> float:
  """The fraction of questions answered differently about another scene's image."""
  other = {r["id"]: r["prediction"] for r in swapped}
  both = [r for r in asked if r["id"] in other]
  return sum(r["prediction"] != other[r["id"]] for r in both) / max(len(both), 1)


def held_out_losses(world: Path, checkpoints: dict[str, Path], data: DataConfig,
                    limit: int | None) -> tuple[dict, dict]:
  """({model: {domain: held-out caption loss}}, {model: held-out text-only loss}), each over
  whole records (rows as long as the model's context: nothing is cut)."""
  specs = synthetic.sources(world, "eval")
  tokenizer = Tokenizer(data.tokenizer)
  captions, text = {}, {}
  for name, path in checkpoints.items():
    model = Sphinx.from_pretrained(path)
    layout = data.for_model(model.config).layout
    layout = dataclasses.replace(layout, seq_len=model.config.llm.max_seq_len)
    captions[name] = {d: mean_loss(model, specs[f"captions_{d}"], layout, tokenizer,
                                   limit=limit)["loss"] for d in DOMAINS}
    text[name] = mean_loss(model, specs["corpus"], layout, tokenizer, limit=limit)["loss"]
  return captions, text


def chat_example(model: Sphinx, image_path: Path, prompt: str, out: Path) -> dict:
  """The greedy answer to `prompt` about the image, with its boxes drawn into `out`."""
  image = read_image_file(image_path)
  answer = model.chat(image, prompt, temperature=0.0, max_new_tokens=128)
  found = grounding.parse(answer)
  grounding.draw(grounding.upscaled(image), found).save(out)
  return {"image": str(image_path), "prompt": prompt, "answer": answer,
          "boxes": sum(len(g.coords) for g in found), "drawn": str(out)}


def _row(label: str, value: float, baseline: float, note: str = "") -> str:
  return f"  {label:<24}{value:>8.3f}{baseline:>10.3f}   {note}".rstrip()


def table(r: dict) -> str:
  """The report as text (the README shows it)."""
  t = r["towers"]
  kinds = list(t["chance"])
  lines = ["Stage 0, the towers' own pre-training (stands for CLIP / DINOv2 / BLIP-2), held out:",
           f"  {'zero-shot retrieval':<24}" + "".join(f"{k:>10}" for k in kinds)]
  for name in [n for n in t if n not in ("chance", "scenes", "knn")] + ["chance"]:
    lines.append(f"  {name:<24}" + "".join(f"{t[name][k]:>10.3f}" for k in kinds))
  knn = t["knn"]
  lines.append(f"  {'dinov2 10-NN':<24}" + "  ".join(
      f"{k} {v:.3f} (majority {knn['chance'][k]:.3f})" for k, v in knn["dinov2"].items()))
  lines += ["Linear probe on the stage-0 image tokens (before any LLM training), held-out VQA:",
            "  " + "  ".join(f"{k} {v:.3f}" for k, v in r["probe"].items()),
            f"Final (stage 2) model on held-out scenes:{'model':>8}{'majority':>10}"]
  b = r["baseline"]
  for kind in VQA_TYPES:
    lines.append(_row(f"VQA {kind}", r["vqa"][kind], b[kind]))
  lines += [_row("REC Acc@0.5", r["rec_acc@0.5"], b["rec"], f"({r['rec_samples']} phrases)"),
            _row("OCR exact match", r["ocr_exact_match"], b["ocr"], f"({r['ocr_samples']} words)"),
            _row("detection F1@0.5", r["detection_f1@0.5"], b["detection"],
                 f"({r['detection_samples']} images)"),
            f"  answers that change when the image is swapped for another scene's: "
            f"{r['answers_change_with_image']:.3f} of {r['vqa_samples']} questions",
            "Held-out loss (nats/token) of the starting and stage-1 models:",
            f"  {'model':<24}" + "".join(f"{d + ' captions':>20}" for d in DOMAINS)
            + f"{'text only':>12}"]
  labels = {"start": "start (stage 0)", "real": "stage 1 real", "synthetic": "stage 1 synthetic",
            "mixed": "mixed (weights)"}
  for name, losses in r["caption_loss"].items():
    lines.append(f"  {labels[name]:<24}" + "".join(f"{losses[d]:>20.4f}" for d in DOMAINS)
                 + f"{r['text_loss'][name]:>12.4f}")
  chat = r["chat"]
  lines += ["Chat example:", f"  Human: {chat['prompt']}", f"  Assistant: {chat['answer']}",
            f"  ({chat['boxes']} boxes drawn in {chat['drawn']})"]
  if "wall_seconds" in r:
    minutes, seconds = divmod(round(r["wall_seconds"]), 60)
    lines.append(f"Wall time of the steps: {minutes} min {seconds:02d} s")
  return "\n".join(lines)


def next_steps(workdir: Path, final: Path, world: Path) -> str:
  """Where the outputs are and the commands that use the final model."""
  image = world / "eval" / "images" / "00001.png"
  return "\n".join([
      f"Outputs: {workdir}/results.json, loss.png, chat.png; TensorBoard: tensorboard --logdir "
      f"{workdir}; the final model: {final}",
      "Next:",
      f"  python -m launch chat --checkpoint {final} --image {image} "
      f"--prompt 'What colour is the circle?' --boxes-out boxes.png",
      f"  python -m launch eval --checkpoint {final} --benchmark synthetic_vqa --data {world} "
      f"--out {workdir}/eval_again",
      "  jupyter notebook notebooks/inference.ipynb   (reads this model by default)"])
