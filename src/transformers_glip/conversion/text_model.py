"""The BERT of a conversion (`--text-model`): its sizes (`BertConfig`) and its tokenizer, read from a local folder or a
Hugging Face Hub id, with a clear error naming the folder or the file that is wrong.

The converted folder carries the tokenizer files, so a converted model never downloads anything at run time.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from huggingface_hub.utils import HFValidationError, validate_repo_id
from transformers import AutoTokenizer, BertConfig

from ..configuration_glip import GLIPConfig

__all__ = ["TEXT_MODEL_JSON_FILES", "load_text_tokenizer", "resolve_text_model", "text_config_from_pretrained"]

logger = logging.getLogger(__name__)

# JSON files of a BERT folder that `BertConfig` / `AutoTokenizer.from_pretrained` read when present.
TEXT_MODEL_JSON_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")
_LOCAL_FOLDER_HINT = (
    "Pass a local folder holding BERT's config.json and tokenizer files (tokenizer.json or vocab.txt), e.g. a "
    "`save_pretrained` copy of bert-base-uncased; the converted folder then carries the tokenizer, so nothing is "
    "downloaded at run time."
)


def resolve_text_model(text_model: str | Path) -> Path | str:
    """Return the local folder (a `Path`) or the Hub id (a `str`) that `text_model` names.

    An existing path must be a folder with a readable `config.json` and valid JSON in every file of
    `TEXT_MODEL_JSON_FILES` it holds. A path that does not exist is an error unless it is a valid Hub repository id
    (`bert-base-uncased`, `google-bert/bert-base-uncased`); paths that cannot be repository ids (absolute, starting
    with `.` or `~`, more than one `/`) are reported as missing folders.

    Raises:
        ValueError: naming the folder or the file that is missing or malformed.
    """
    path = Path(text_model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"--text-model {text_model} is a file, not a folder. {_LOCAL_FOLDER_HINT}")
        if not (path / "config.json").is_file():
            raise ValueError(f"--text-model folder {path} holds no config.json. {_LOCAL_FOLDER_HINT}")
        for name in TEXT_MODEL_JSON_FILES:
            file = path / name
            if not file.is_file():
                continue
            try:
                json.loads(file.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                raise ValueError(
                    f"{file} is not valid JSON ({error}): the file is corrupt or truncated; replace it with an intact "
                    "copy (e.g. from `save_pretrained` of the BERT model)."
                ) from error
        return path
    try:
        validate_repo_id(str(text_model))
    except HFValidationError:
        raise ValueError(f"--text-model folder {text_model} does not exist. {_LOCAL_FOLDER_HINT}") from None
    return str(text_model)


def text_config_from_pretrained(text_model: str | Path | None) -> BertConfig:
    """BertConfig of `text_model` (a local folder with config.json, or a Hub id; local files are preferred).

    `None` gives the sizes of bert-base-uncased without any download.

    Raises:
        ValueError: when the folder is missing or malformed (`resolve_text_model`), a Hub id cannot be loaded, or the
            model is not a BERT.
    """
    if text_model is None:
        return GLIPConfig().text_config
    source = resolve_text_model(text_model)
    try:
        config = BertConfig.from_pretrained(str(source))
    except (OSError, ValueError) as error:
        raise ValueError(
            f"--text-model {text_model!r} is not a local folder and could not be loaded from the Hugging Face Hub "
            f"or its cache ({error}). {_LOCAL_FOLDER_HINT}"
        ) from error
    if config.model_type != "bert":
        raise ValueError(f"--text-model {text_model} is a {config.model_type!r} model; GLIP uses BERT.")
    return config


def load_text_tokenizer(name: str | Path, required: bool):
    """The tokenizer of a local BERT folder or Hub id, or `None` (with a warning) when it is not `required`.

    Args:
        name: folder or Hub id.
        required: `True` when the user named the source (`--text-model`): every failure is then an error. `False`
            for the fallback to the yaml's `TOKENIZER_TYPE` / bert-base-uncased, which may be unavailable offline:
            the conversion then saves no tokenizer and says so.

    Raises:
        ValueError: when `required` and the folder holds no tokenizer files, a tokenizer file is corrupt, or the
            tokenizer cannot be loaded; the message names the folder or the file.
    """
    try:
        source = resolve_text_model(name)
        if isinstance(source, Path) and not any((source / file).is_file() for file in _TOKENIZER_FILES):
            raise ValueError(
                f"--text-model folder {source} holds no tokenizer files ({' or '.join(_TOKENIZER_FILES)}). "
                f"{_LOCAL_FOLDER_HINT}"
            )
        try:
            return AutoTokenizer.from_pretrained(str(source))
        except Exception as error:  # the Rust tokenizers library raises plain `Exception` for a malformed file
            files = (
                [str(source / file) for file in (*TEXT_MODEL_JSON_FILES[1:], "vocab.txt") if (source / file).is_file()]
                if isinstance(source, Path)
                else []
            )
            raise ValueError(
                f"Could not load the tokenizer of {source} ({type(error).__name__}: {error})"
                + (f"; one of these files is malformed: {', '.join(files)}" if files else "")
                + f". {_LOCAL_FOLDER_HINT}"
            ) from error
    except ValueError as error:
        if required:
            raise
        logger.warning(
            "Could not load the tokenizer %r (%s); the output folder will hold NO tokenizer files (only the image "
            "processor). Pass --text-model with a local BERT folder to include them.",
            str(name),
            error,
        )
        return None
