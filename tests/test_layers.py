"""The import rule (docs/architecture.md, Layers): a module imports its own package and what
lies below it, never a package above or beside it:

  util <- (configs | sharding) <- models <- data <- checkpoints <- (train | inference)
  <- (eval | aot | serve); eval <- recipe

`launch`, `configs/`, `bench/` and the tests sit above everything and are not checked."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "sphinx_jax"
# Each package and the packages right below it; it may import those and all below them.
BELOW = {"util": (), "configs": ("util",), "sharding": ("util",), "models": ("configs", "sharding"),
         "data": ("models",), "checkpoints": ("data",), "train": ("checkpoints",),
         "inference": ("checkpoints",), "eval": ("inference",), "aot": ("train", "inference"),
         "recipe": ("train", "eval"), "serve": ("inference",)}
PUBLIC = "sphinx_jax"  # the package's own __init__ (the public surface): above every package


def allowed(package: str) -> set[str]:
  return {package}.union(*(allowed(p) for p in BELOW[package]))


def imported(tree: ast.AST, top_level: set[str]) -> list[tuple[int, str]]:
  """(line, first-level name under sphinx_jax) of every sphinx_jax import, function-local ones
  included; `from sphinx_jax import Sphinx` counts as the public surface."""
  found = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      found += [(node.lineno, a.name.split(".")[1] if "." in a.name else PUBLIC)
                for a in node.names if a.name.split(".")[0] == "sphinx_jax"]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      parts = node.module.split(".")
      if parts[0] != "sphinx_jax":
        continue
      if len(parts) > 1:
        found.append((node.lineno, parts[1]))
      else:
        found += [(node.lineno, a.name if a.name in top_level else PUBLIC) for a in node.names]
  return found


def violations(sources: dict[str, str]) -> list[str]:
  """`sources`: path under sphinx_jax/ (e.g. 'eval/runner.py') -> text. One line per import
  that breaks the rule."""
  top_level = {path.split("/")[0].removesuffix(".py") for path in sources}
  out = []
  for path, text in sorted(sources.items()):
    own = path.split("/")[0].removesuffix(".py")
    if own == "__init__":
      continue
    if own not in BELOW:
      out.append(f"{path}: package {own!r} has no place in BELOW")
      continue
    for line, target in imported(ast.parse(text, path), top_level):
      if target not in allowed(own):
        out.append(f"sphinx_jax/{path}:{line}: {own} imports {target}")
  return out


def package_sources() -> dict[str, str]:
  return {p.relative_to(PACKAGE).as_posix(): p.read_text() for p in PACKAGE.rglob("*.py")}


def test_no_module_imports_above_or_beside_its_layer():
  assert violations(package_sources()) == []


def test_the_rule_catches_forbidden_imports():
  sources = package_sources()
  bad = {"eval/leak.py": "def f():\n  from sphinx_jax.train import loop\n",
         "models/leak.py": "import sphinx_jax.data.tokenizer\n",
         "train/leak.py": "from sphinx_jax import Sphinx\n",
         "inference/leak.py": "from sphinx_jax.train.config import Experiment\n",
         "data/fine.py": "from sphinx_jax import sharding\nfrom sphinx_jax.models import llama\n"}
  found = violations({**sources, **bad})
  assert found == ["sphinx_jax/eval/leak.py:2: eval imports train",
                   "sphinx_jax/inference/leak.py:1: inference imports train",
                   "sphinx_jax/models/leak.py:1: models imports data",
                   "sphinx_jax/train/leak.py:1: train imports sphinx_jax"]
  assert violations({**sources, "serving/app.py": ""}) == [
      "serving/app.py: package 'serving' has no place in BELOW"]
