"""sphinx-jax: SPHINX multi-modal LLMs in JAX/Flax.

`from sphinx_jax import Sphinx, LanguageModel, SegmentAnything` are the user-facing classes; they load on first
use, so importing a light submodule (a config, a benchmark's reader) does not import JAX.
"""
import importlib

_PUBLIC = {"LanguageModel": "sphinx_jax.inference.language_model",
           "SegmentAnything": "sphinx_jax.inference.segment",
           "Sphinx": "sphinx_jax.inference.sphinx_model"}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
  if name not in _PUBLIC:
    raise AttributeError(f"module 'sphinx_jax' has no attribute {name!r}")
  return getattr(importlib.import_module(_PUBLIC[name]), name)
