"""transformers_glip: GLIP for Hugging Face transformers."""

from .configuration_glip import GLIPConfig
from .modeling_glip import (
    GLIPForGrounding,
    GLIPGroundingOutput,
    GLIPModel,
    GLIPModelOutput,
    GLIPPreTrainedModel,
)

__all__ = [
    "GLIPConfig",
    "GLIPForGrounding",
    "GLIPGroundingOutput",
    "GLIPModel",
    "GLIPModelOutput",
    "GLIPPreTrainedModel",
]
