"""Stage 2: multi-task fine-tuning of SPHINX-1k; see configs/recipes.py."""
from configs.recipes import stage2


def get_config():
  return stage2("sphinx_1k")
