"""Stage 1 on the synthetic caption domain (plus text-only rows); see recipes.py."""
from launch.configs.recipes import stage1


def get_config():
  return stage1("synthetic")
