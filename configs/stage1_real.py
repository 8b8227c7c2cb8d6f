"""Stage 1 on the real caption domain (plus text-only rows); see configs/recipes.py."""
from configs.recipes import stage1


def get_config():
  return stage1("real")
