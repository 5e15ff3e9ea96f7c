"""transformers_glip: GLIP for Hugging Face transformers."""

from .configuration_glip import GLIPConfig

__all__ = ["GLIPConfig"]
