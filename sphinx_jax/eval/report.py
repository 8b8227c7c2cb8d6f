"""The recipe's report (recipe.py): held-out scores of the final model, caption losses of the
stage-1 models and their mix, the loss curves and one chat answer with its boxes drawn.

- VQA accuracy per question type, REC Acc@0.5 and OCR exact match of the stage-2 model on the
  world's eval split (the synthetic_* benchmarks; predictions kept under `workdir/eval/`).
- Caption loss (mean next-token loss on held-out captions) of the real, synthetic and mixed
  models on each caption domain: the test of weight mixing (the mix should be no worse on each
  domain than the worse of its parents).
- `loss.png`: every stage's training loss against the global step; `chat.png`: the chat
  example's image with the answer's boxes.
"""
from __future__ import annotations

import logging
from pathlib import Path

from PIL import Image

from sphinx_jax.data import synthetic
from sphinx_jax.data.pipeline import DataConfig
from sphinx_jax.data.tokenizer import Tokenizer
from sphinx_jax.eval.loss import mean_loss
from sphinx_jax.eval.runner import evaluate
from sphinx_jax.inference import grounding
from sphinx_jax.inference.sphinx_model import Sphinx
from sphinx_jax.train import plots

log = logging.getLogger(__name__)
DOMAINS = ("real", "synthetic")
PARENTS = ("real", "synthetic", "mixed")


def make(world: Path, checkpoints: dict[str, Path], metrics: dict[str, Path], data: DataConfig,
         report, workdir: Path) -> dict:
  """Scores, losses, plot and chat (see the module doc); prints the table and returns it all.
  `checkpoints` maps real / synthetic / mixed / stage2 to params directories; `data` gives the
  stage-1 layout the caption losses are measured in; `report` is a recipe.Report."""
  final = Sphinx.from_pretrained(checkpoints["stage2"])
  scores = {}
  for name in ("vqa", "rec", "ocr"):
    scores[name] = evaluate(final, f"synthetic_{name}", world, workdir / "eval" / name,
                            limit=report.limit, batch_size=report.batch_size, progress=False,
                            checkpoint=str(checkpoints["stage2"]))
  results = {"vqa": {k: v / 100 for k, v in scores["vqa"]["per_answer_type"].items()},
             "vqa_samples": scores["vqa"]["samples"],
             "rec_acc@0.5": scores["rec"]["acc@0.5"] / 100, "rec_samples": scores["rec"]["samples"],
             "ocr_exact_match": scores["ocr"]["accuracy"] / 100,
             "ocr_samples": scores["ocr"]["samples"]}
  results["caption_loss"] = caption_losses(world, {k: checkpoints[k] for k in PARENTS}, data,
                                           report.limit)
  plots.loss_curves(metrics, workdir / "loss.png")
  results["chat"] = chat_example(final, world / "eval" / report.chat_image, report.chat_prompt,
                                 workdir / "chat.png")
  print(table(results))
  return results


def caption_losses(world: Path, checkpoints: dict[str, Path], data: DataConfig,
                   limit: int | None) -> dict:
  """{model: {domain: held-out caption loss}}."""
  specs = synthetic.sources(world, "eval")
  tokenizer = Tokenizer(data.tokenizer)
  out = {}
  for model_name, path in checkpoints.items():
    model = Sphinx.from_pretrained(path)
    out[model_name] = {d: mean_loss(model, specs[f"captions_{d}"], data.layout, tokenizer,
                                    limit=limit)["loss"] for d in DOMAINS}
  return out


def chat_example(model: Sphinx, image_path: Path, prompt: str, out: Path) -> dict:
  """The greedy answer to `prompt` about the image, with its boxes drawn into `out`."""
  with Image.open(image_path) as image:
    image = image.convert("RGB")
  answer = model.chat(image, prompt, temperature=0.0, max_new_tokens=128)
  found = grounding.parse(answer)
  grounding.draw(image.resize((image.width * 4, image.height * 4), Image.NEAREST),
                 found).save(out)
  return {"image": str(image_path), "prompt": prompt, "answer": answer,
          "boxes": sum(len(g.coords) for g in found), "drawn": str(out)}


def table(r: dict) -> str:
  """The report as text (the README shows it)."""
  lines = ["Held-out synthetic data, final (stage 2) model:",
           f"  {'VQA accuracy':<26}" + "  ".join(f"{k} {v:.3f}" for k, v in r["vqa"].items())
           + f"   ({r['vqa_samples']} questions)",
           f"  {'REC Acc@0.5':<26}{r['rec_acc@0.5']:.3f}   ({r['rec_samples']} phrases)",
           f"  {'OCR exact match':<26}{r['ocr_exact_match']:.3f}   ({r['ocr_samples']} words)",
           "Held-out caption loss (stage 1 models):",
           f"  {'model':<26}" + "".join(f"{d + ' captions':>20}" for d in DOMAINS)]
  for name, losses in r["caption_loss"].items():
    label = {"real": "stage 1 real", "synthetic": "stage 1 synthetic",
             "mixed": "mixed (weights)"}[name]
    lines.append(f"  {label:<26}" + "".join(f"{losses[d]:>20.4f}" for d in DOMAINS))
  chat = r["chat"]
  lines += ["Chat example:", f"  Human: {chat['prompt']}", f"  Assistant: {chat['answer']}",
            f"  ({chat['boxes']} boxes drawn in {chat['drawn']})"]
  return "\n".join(lines)
