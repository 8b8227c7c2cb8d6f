"""sphinx-jax: SPHINX multi-modal LLMs in JAX/Flax."""
from sphinx_jax.inference.language_model import LanguageModel

__all__ = ["LanguageModel"]
