"""Training configs: frozen dataclasses; a config file (launch/configs/, launch.config_files)
returns one `Experiment`, or a recipe of several."""
from __future__ import annotations

import dataclasses

from sphinx_jax.configs import LORA_TARGETS
from sphinx_jax.data.pipeline import DataConfig
from sphinx_jax.sharding import MeshConfig


@dataclasses.dataclass(frozen=True)
class OptimConfig:
  """AdamW with a linear warmup then cosine decay from `lr` to `min_lr` (the paper's recipe)."""

  lr: float = 2e-5
  min_lr: float = 0.0
  warmup_steps: int | None = None  # None: warmup_ratio of the run
  warmup_ratio: float = 0.03
  b1: float = 0.9
  b2: float = 0.95
  weight_decay: float = 0.1  # not on norms and biases
  clip_norm: float = 1.0


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  # A SPHINX preset, or `llm:<LLM preset>` for the LLM alone on text (configs.model_preset);
  # ignored when `init_from` is given (its config.json says which).
  model: str = "tiny_1k"
  init_from: str | None = None  # a params checkpoint (convert / export) to start from
  # Train on another view plan of the same towers (SPHINX-1k is SPHINX's weights fine-tuned on
  # sub-images); None: the model's own. The data's geometry follows the model's.
  view_plan: str | None = None
  trainable: tuple[str, ...] = ("llm", "mixer")  # the towers stay frozen; 'lora': the adapters
  # LoRA (configs/finetune_lora.py): adapters of this rank on the LLM's `lora_targets`, scaled
  # by lora_alpha / lora_rank; 0: none. `trainable` then names 'lora' instead of 'llm'.
  lora_rank: int = 0
  lora_alpha: float = 16.0
  lora_targets: tuple[str, ...] = LORA_TARGETS
  # QLoRA: the frozen base's matmul weights quantized ('int8' | 'int4' | 'nf4';
  # models.quantization).
  quantize: str | None = None
  steps: int = 100
  micro_batches: int = 1  # gradient accumulation: the batch is split into this many steps
  loss_weighting: str = "token"  # 'token' (the reference) or 'sample' (models.loss)
  param_dtype: str = "float32"  # master weights
  compute_dtype: str = "float32"  # 'bfloat16' for bf16 compute (LLM, mixer and towers)
  # The frozen towers' stored dtype ('bfloat16' halves their memory: they never update); None:
  # param_dtype. A trainable tower keeps param_dtype.
  tower_param_dtype: str | None = None
  remat_policy: str = "none"
  # The LLM's attention kernel (models.attention): 'xla' (any platform), 'cudnn' (GPU; rows of
  # one sample: not with DataConfig.pack > 1), 'splash' (TPU); None: the model config's.
  attention: str | None = None
  # The loss over this many positions at a time (models.loss.chunked_loss_sums): float32 logits
  # [B, chunk, V] instead of [B, T, V]; None: the whole sequence at once.
  loss_chunk: int | None = None
  mesh: MeshConfig = MeshConfig()
  optim: OptimConfig = OptimConfig()
  seed: int = 0
  log_every: int = 10
  checkpoint_every: int = 100
  keep_checkpoints: int = 2
  peak_flops: float | None = None  # per device, for MFU; None: measured at start


@dataclasses.dataclass(frozen=True)
class Experiment:
  workdir: str
  train: TrainConfig
  data: DataConfig
