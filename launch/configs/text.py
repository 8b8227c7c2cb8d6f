"""The LLM alone, trained on text (no towers, no images): LLaMA-2 pre-training or continued
training on a packed corpus, e.g. to adapt the LLM to a text domain before SPHINX's stages (its
export is an LLM checkpoint, `launch convert llama`'s layout). The default is MaxText's published
LLaMA-2-7B recipe (configs/tpu/v5p/llama2_7b.sh): rows of 4,096 tokens, 4 per chip of a v5p-8
(16 a step), bf16 compute on fp32 master weights, AdamW and its learning-rate schedule; so
`launch compile` sizes it next to MaxText. One difference: full remat, since saving the
projections as MaxText's `minimal` does (`dots_no_batch` here) does not fit a v5p-8 with our
dense attention (docs/architecture.md, "Ahead-of-time compile").

  python -m launch compile --config text:llama2_7b --topology v5p-8
  SPHINX_DATA=my_text python -m launch train --config text:llama2_7b \
      --config.train.init_from=ckpt/llama2_7b     # continued training of a converted LLaMA-2

Any LLM preset (`text:tinyllama_1b`, `text:tiny`); the corpus is $SPHINX_DATA/corpus.jsonl
(RefinedWeb-style `content` records).
"""
from launch.configs.recipes import DATA_ROOT
from sphinx_jax.configs import TEXT_ONLY_PREFIX
from sphinx_jax.data.pipeline import DataConfig
from sphinx_jax.data.sources import TextCorpus
from sphinx_jax.sharding import MeshConfig
from sphinx_jax.train.config import Experiment, OptimConfig, TrainConfig


def get_config(llm: str = "llama2_7b") -> Experiment:
  return Experiment(
      workdir=f"runs/text_{llm}",
      train=TrainConfig(model=TEXT_ONLY_PREFIX + llm, trainable=("llm",), steps=10_000,
                        compute_dtype="bfloat16", remat_policy="full",
                        mesh=MeshConfig(data=1, fsdp=-1, tensor=1),
                        optim=OptimConfig(lr=3e-5, min_lr=3e-6, warmup_ratio=0.1),
                        checkpoint_every=1000, log_every=10),
      data=DataConfig(tokenizer=str(DATA_ROOT / "tokenizer.model"),
                      corpus=TextCorpus(str(DATA_ROOT / "corpus.jsonl")), text_rows=16,
                      batch_size=0, seq_len=4096))
