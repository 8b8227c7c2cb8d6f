"""sphinx-jax: SPHINX multi-modal LLMs in JAX/Flax."""
from sphinx_jax.inference.language_model import LanguageModel
from sphinx_jax.inference.sphinx_model import Sphinx

__all__ = ["LanguageModel", "Sphinx"]
