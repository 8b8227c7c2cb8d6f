"""Stage 2: multi-task fine-tuning of SPHINX-1k; see recipes.py."""
from launch.configs.recipes import stage2


def get_config():
  return stage2("sphinx_1k")
