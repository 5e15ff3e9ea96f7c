"""Reading an official (microsoft/GLIP) or mmdetection GLIP `.pth` file as a flat state dict, safely.

The file is opened with `torch.load(..., weights_only=True)` only: an untrusted pickle can never run code here.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch

from .key_tables import strip_module_prefix

__all__ = ["load_original_state_dict"]

logger = logging.getLogger(__name__)


def load_original_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read an official GLIP or mmdetection GLIP checkpoint as a flat state dict (keys without `module.`).

    Accepted files (`torch.load(path, map_location="cpu", weights_only=True)`):

    * official (`utils/checkpoint.py::Checkpointer.save`): `{"model": state_dict, "optimizer": ..., ...}`; only
      `model` is used (`model_ema`, `optimizer`, `scheduler`, `iteration` are ignored);
    * mmdetection / mmengine: `{"meta": ..., "state_dict": state_dict, ...}`;
    * a bare state dict of either layout.

    The layout is not converted here; see `to_original_layout` (applied by `convert_state_dict`).

    Raises:
        ValueError: naming the file when it does not exist, is empty, is truncated or is no `torch.save` file, holds
            pickled Python objects that `weights_only=True` refuses, or holds no dict of tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"Checkpoint {path} does not exist (or is not a file); pass the official .pth file.")
    if path.stat().st_size == 0:
        raise ValueError(
            f"Checkpoint {path} is empty (0 bytes): the download or copy was interrupted; fetch the .pth file again."
        )
    logger.info("Reading %s", path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:  # weights_only refused an object: re-raised with a hint
        raise ValueError(
            f"Could not read {path} with torch.load(weights_only=True): {error}. Checkpoints holding pickled "
            "Python objects besides tensors (e.g. mmengine's `message_hub`) must first be reduced to their "
            "weights, e.g. with mmdetection's tools/model_converters/publish_model.py."
        ) from error
    except Exception as error:  # a cut-off or foreign file: EOFError, RuntimeError, KeyError, IndexError, ...
        raise ValueError(
            f"Checkpoint {path} ({path.stat().st_size} bytes) could not be read: it is truncated or not a file "
            f"written by torch.save ({type(error).__name__}: {error}). Fetch the .pth file again."
        ) from error
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"{path} does not hold a dict (got {type(checkpoint).__name__}).")
    if "model" in checkpoint and isinstance(checkpoint["model"], Mapping):
        state_dict = checkpoint["model"]
        ignored = sorted(key for key in checkpoint if key != "model")
    elif "state_dict" in checkpoint and isinstance(checkpoint["state_dict"], Mapping):
        state_dict = checkpoint["state_dict"]
        ignored = sorted(key for key in checkpoint if key != "state_dict")
    else:
        state_dict = checkpoint
        ignored = []
    if ignored:
        logger.info("Ignoring checkpoint entries %s", ignored)
    non_tensors = sorted(str(key) for key, value in state_dict.items() if not isinstance(value, torch.Tensor))
    if non_tensors:
        raise ValueError(f"{path}: state dict entries that are not tensors: {non_tensors[:10]}")
    if not state_dict:
        raise ValueError(f"{path} holds an empty state dict: no weights to convert.")
    return strip_module_prefix(dict(state_dict))
