"""The embedded default, what `python -m launch train` runs with no config: SPHINX's whole method
at laptop scale, on the synthetic world (data.synthetic) written into the workdir, no downloads.

  stage1_real       the `mini` SPHINX from scratch on short "real" captions + text-only rows
  stage1_synthetic  continued from stage1_real on dense "synthetic" captions
  mixed             0.5 * stage1_real + 0.5 * stage1_synthetic, every weight (Eq. 1)
  stage2            multi-task from the mix: VQA, OCR, REC, detection, grounded captions,
                    2-image differences, in-context examples, 4-frame videos
  report            held-out VQA / REC / OCR, caption losses of the three stage-1 models,
                    loss.png, one chat answer with its boxes drawn (chat.png)

The towers are random and frozen (there are no pretrained towers at this size): as in SPHINX only
the LLM and the projections learn. The argument, as in big_vision, is a comma list: `fast` (the
same recipe in a few steps each; the test suite runs it) and `workdir=PATH` (default
runs/default; the world is written inside it):

  python -m launch train --config configs/default.py:fast,workdir=/tmp/default
"""
from sphinx_jax.configs import SPHINX_PRESETS
from sphinx_jax.data import synthetic
from sphinx_jax.data.pipeline import DataConfig
from sphinx_jax.recipe import Recipe, Report, World
from sphinx_jax.sharding import MeshConfig
from sphinx_jax.train.config import Experiment, OptimConfig, TrainConfig

MODEL = "mini"
# Stage 2's sources and their mixture weights: most steps go to what the report scores.
STAGE2 = {"vqa": 4.0, "rec": 2.0, "ocr": 1.0, "detection": 1.0, "grounded": 1.0,
          "difference": 0.5, "in_context": 0.5, "video": 0.5}
# Steps per stage, world size and evaluation samples: the default and the `fast` variant.
SIZES = {"": dict(stage1_real=400, stage1_synthetic=400, stage2=800, n_train=4000, n_eval=150,
                  limit=None),
         "fast": dict(stage1_real=3, stage1_synthetic=3, stage2=3, n_train=32, n_eval=8, limit=8)}


def get_config(arg: str = "") -> Recipe:
  args = dict(item.partition("=")[::2] for item in arg.split(",") if item)
  size = SIZES["fast" if "fast" in args else ""]
  workdir = args.get("workdir") or "runs/default"
  world = World(root=f"{workdir}/world", n_train=size["n_train"], n_eval=size["n_eval"], seed=0)
  specs = synthetic.sources(world.root, "train")
  model = SPHINX_PRESETS[MODEL]

  def stage(steps: int, lr: float, sources: dict[str, float], seq_len: int, max_images: int = 1,
            text_rows: int = 0) -> Experiment:
    return Experiment(
        workdir="",  # the recipe gives each stage workdir/<stage>
        train=TrainConfig(model=MODEL, steps=steps, log_every=10, checkpoint_every=100,
                          mesh=MeshConfig(data=1, fsdp=-1, tensor=1),
                          optim=OptimConfig(lr=lr, min_lr=lr / 10, warmup_steps=min(20, steps),
                                            weight_decay=0.0)),
        data=DataConfig(tokenizer=f"{world.root}/tokenizer.model",
                        sources=tuple(specs[s] for s in sources),
                        weights=tuple(sources.values()) if len(sources) > 1 else None,
                        corpus=specs["corpus"] if text_rows else None, text_rows=text_rows,
                        view_plan=model.view_plan, tokens_per_image=model.image_tokens,
                        seq_len=seq_len, max_images=max_images, batch_size=16 - text_rows,
                        threads=2))

  return Recipe(
      workdir=workdir, world=world,
      stage1_real=stage(size["stage1_real"], 3e-3, {"captions_real": 1}, 96, text_rows=2),
      stage1_synthetic=stage(size["stage1_synthetic"], 3e-3, {"captions_synthetic": 1}, 128),
      stage2=stage(size["stage2"], 3e-3, STAGE2, 192, max_images=synthetic.FRAMES),
      beta=0.5, report=Report(limit=size["limit"]))
