"""transformers_glip: GLIP for Hugging Face transformers.

Importing the package registers GLIP with the transformers Auto classes (`AutoConfig`, `AutoModel`,
`AutoModelForZeroShotObjectDetection`, `AutoImageProcessor`, `AutoProcessor`) and makes
[`GLIPZeroShotObjectDetectionPipeline`] the class of `pipeline("zero-shot-object-detection")` (stock behaviour for
every non-GLIP model).
"""

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForZeroShotObjectDetection,
    AutoProcessor,
)

from .configuration_glip import GLIPConfig
from .hub_glip import add_remote_code_files
from .image_processing_glip import GLIPImageProcessor
from .inference_glip import detect
from .modeling_glip import (
    GLIPForGrounding,
    GLIPGroundingOutput,
    GLIPModel,
    GLIPModelOutput,
    GLIPPreTrainedModel,
)
from .pipeline_glip import GLIPZeroShotObjectDetectionPipeline, register_glip_pipeline
from .postprocessing_glip import find_non_finite_parameters
from .processing_glip import GLIPProcessor
from .visualization_glip import draw_detections

__all__ = [
    "GLIPConfig",
    "GLIPForGrounding",
    "GLIPGroundingOutput",
    "GLIPImageProcessor",
    "GLIPModel",
    "GLIPModelOutput",
    "GLIPPreTrainedModel",
    "GLIPProcessor",
    "GLIPZeroShotObjectDetectionPipeline",
    "add_remote_code_files",
    "detect",
    "draw_detections",
    "find_non_finite_parameters",
]

AutoConfig.register("glip", GLIPConfig, exist_ok=True)
AutoModel.register(GLIPConfig, GLIPModel, exist_ok=True)
AutoModelForZeroShotObjectDetection.register(GLIPConfig, GLIPForGrounding, exist_ok=True)
AutoImageProcessor.register(GLIPConfig, image_processor_classes={"pil": GLIPImageProcessor}, exist_ok=True)
AutoProcessor.register(GLIPConfig, GLIPProcessor, exist_ok=True)
register_glip_pipeline()
