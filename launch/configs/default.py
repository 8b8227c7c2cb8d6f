"""The embedded default, what `python -m launch train` runs with no config: SPHINX's whole method
at laptop scale on the synthetic world (data.synthetic) written into the workdir, no downloads.

  stage0            the towers' own pre-training (it stands for the CLIP / DINOv2 / BLIP-2
                    pre-training SPHINX inherits; not part of SPHINX's recipe): CLIP-style
                    contrast for the CLIP ViT, the ConvNeXt and the Q-Former, self-supervised
                    view contrast for DINOv2; then the towers are frozen for good
  stage1_real       a fresh LLM on short "real" captions + text-only rows, one global view
  stage1_synthetic  continued from stage1_real on dense "synthetic" captions, one global view
  mixed             0.5 * stage1_real + 0.5 * stage1_synthetic, every weight (Eq. 1)
  stage2            multi-task from the mix on five views per image (a global view and 2x2
                    sub-images, SPHINX-1k's scheme): VQA, OCR, REC, detection, grounded
                    captions, 2-image differences, in-context examples, 2-frame videos
  report            held-out scores next to the majority baseline, the towers' zero-shot
                    accuracy, a linear probe, held-out losses, loss.png, chat.png

The argument, as in big_vision, is a comma list: `fast` (the same recipe in a few steps each on
a tiny world; the test suite runs it; its own default workdir), `workdir=PATH` (default
runs/default; the world is written inside it) and `seed=N` (the world, the initialisations and
the data order; default 0):

  python -m launch train --config default:fast,workdir=/tmp/default
"""
from sphinx_jax.data import synthetic
from sphinx_jax.data.pairs import PairsConfig
from sphinx_jax.data.pipeline import DataConfig
from sphinx_jax.recipe.chain import Recipe, Report, World
from sphinx_jax.sharding import MeshConfig
from sphinx_jax.train.config import Experiment, OptimConfig, TrainConfig
from sphinx_jax.train.towers import TowersConfig

MODEL = "mini"
SUB_IMAGES = "mini_1k"  # stage 2's view plan: the global view + 2x2 crops of a 2x resize
# Stage 2's sources and their mixture weights: most steps go to what the report scores. VQA and
# REC come as dialogs of several turns about one scene (synthetic_text.vqa_dialog / rec_dialog):
# a row pays for its 115 image tokens once, and is padded to the longest task anyway.
STAGE2 = {"vqa_dialogs": 4.0, "rec_dialogs": 2.0, "ocr": 0.5, "detection": 1.0, "grounded": 1.0,
          "difference": 0.5, "in_context": 0.5, "video": 0.5}
VIDEO_FRAMES = 2  # frames a video gives stage 2 (MIMIC-IT's linspace sampling of the 4 drawn)
# Steps per stage, world size and evaluation samples: the default and the `fast` variant.
SIZES = {"": dict(stage0=120, stage1_real=400, stage1_synthetic=500, stage2=300, n_train=4000,
                  n_eval=150, limit=None, stage0_batch=64, workdir="runs/default"),
         "fast": dict(stage0=3, stage1_real=3, stage1_synthetic=3, stage2=3, n_train=32, n_eval=8,
                      limit=8, stage0_batch=16, workdir="runs/default_fast")}


def get_config(arg: str = "") -> Recipe:
  args = dict(item.partition("=")[::2] for item in arg.split(",") if item)
  size = SIZES["fast" if "fast" in args else ""]
  workdir = args.get("workdir") or size["workdir"]
  seed = int(args.get("seed", 0))
  world = World(root=f"{workdir}/world", n_train=size["n_train"], n_eval=size["n_eval"],
                seed=seed)
  specs = synthetic.sources(world.root, "train", frames=VIDEO_FRAMES)
  tokenizer = f"{world.root}/tokenizer.model"

  def stage(steps: int, lr: float, sources: dict[str, float], seq_len: int, views: str = MODEL,
            max_images: int = 1, text_rows: int = 0) -> Experiment:
    return Experiment(
        workdir="",  # the recipe gives each stage workdir/<stage>
        train=TrainConfig(model=MODEL, view_plan=views, steps=steps, log_every=10,
                          checkpoint_every=100, seed=seed,
                          mesh=MeshConfig(data=1, fsdp=-1, tensor=1),
                          optim=OptimConfig(lr=lr, min_lr=lr / 10, warmup_steps=min(20, steps),
                                            weight_decay=0.0)),
        data=DataConfig(tokenizer=tokenizer, sources=tuple(specs[s] for s in sources),
                        weights=tuple(sources.values()) if len(sources) > 1 else None,
                        corpus=specs["corpus"] if text_rows else None, text_rows=text_rows,
                        seq_len=seq_len, max_images=max_images, batch_size=16 - text_rows,
                        seed=seed, threads=2))

  towers = TowersConfig(
      workdir="", model=MODEL, steps=size["stage0"], seed=seed,
      optim=OptimConfig(lr=2e-3, min_lr=2e-4, warmup_steps=min(20, size["stage0"]),
                        weight_decay=0.05),
      data=PairsConfig(tokenizer=tokenizer, sources=(specs["towers"],), view_plan=SUB_IMAGES,
                       text_len=56, negatives=2, batch_size=size["stage0_batch"], seed=seed))
  return Recipe(
      workdir=workdir, world=world, stage0=towers,
      stage1_real=stage(size["stage1_real"], 3e-3, {"captions_real": 1}, 56, text_rows=2),
      stage1_synthetic=stage(size["stage1_synthetic"], 3e-3, {"captions_synthetic": 1}, 160),
      stage2=stage(size["stage2"], 3e-3, STAGE2, 400, views=SUB_IMAGES, max_images=2),
      beta=0.5, report=Report(limit=size["limit"]))
