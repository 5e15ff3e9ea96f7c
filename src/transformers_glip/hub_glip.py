"""Saved GLIP folders: the code they carry for `trust_remote_code=True`, and uploading them to the Hub.

`GLIPPreTrainedModel.save_pretrained` and `GLIPProcessor.save_pretrained` call [`add_remote_code_files`] after the
standard save, and upload (with `push_to_hub=True`) only afterwards, through [`push_folder_to_hub`], so the Hub copy
holds the same files as the local folder. The converter's output is such a folder too.

The folder carries its code the way custom models on the Hub do: the package's modeling, configuration, processing
and pipeline modules are copied next to the weights (with every module they import relatively, found with
transformers' own `dynamic_module_utils.get_relative_import_files`, the function that copies them back at load
time), `auto_map` entries point the Auto classes at them, and `custom_pipelines` makes
`pipeline("zero-shot-object-detection", model=folder, trust_remote_code=True)` build GLIP's one-prompt pipeline,
not the stock one-forward-per-label loop. A process with transformers and torchvision, and without this package,
loads model, processor and pipeline from the folder.

Every `auto_map` entry and the pipeline go through one entry module, `glip_shim.py` (relative imports only): for
a local folder transformers names the dynamic module package after a hash of the entry file and its relative
imports, so entries in different files (`configuration_glip.GLIPConfig`, `modeling_glip.GLIPForGrounding`, what
`register_for_auto_class` writes) would load two copies of `configuration_glip` with two distinct `GLIPConfig`
classes. One entry file gives one copy, so the pipeline's `isinstance` checks hold.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "CUSTOM_PIPELINES",
    "REMOTE_CODE_ENTRY_MODULES",
    "REMOTE_CODE_SHIM_NAME",
    "add_remote_code_files",
    "looks_like_hub_id",
    "pop_hub_arguments",
    "push_folder_to_hub",
    "remote_code_source_files",
    "update_json_file",
]

REMOTE_CODE_SHIM_NAME = "glip_shim"

# The modules the shim imports; the folder receives them and (recursively) every module they import relatively.
REMOTE_CODE_ENTRY_MODULES = (
    "configuration_glip",
    "image_processing_glip",
    "modeling_glip",
    "pipeline_glip",
    "processing_glip",
)

SHIM_SOURCE = '''"""Remote-code entry point of a transformers-glip model folder (`trust_remote_code=True`).

The modules next to this file are copies of the `transformers-glip` package's modules (written by
`save_pretrained`); this file gathers the classes that `auto_map` and `custom_pipelines` in the folder's configs
name, so that all of them come from one copy of the code. Importing it has no side effect.
"""

from .configuration_glip import GLIPConfig
from .image_processing_glip import GLIPImageProcessor
from .modeling_glip import GLIPForGrounding, GLIPModel
from .pipeline_glip import GLIPZeroShotObjectDetectionPipeline
from .processing_glip import GLIPProcessor

__all__ = [
    "GLIPConfig",
    "GLIPForGrounding",
    "GLIPImageProcessor",
    "GLIPModel",
    "GLIPProcessor",
    "GLIPZeroShotObjectDetectionPipeline",
]
'''

MODEL_AUTO_MAP = {
    "AutoConfig": "GLIPConfig",
    "AutoModel": "GLIPModel",
    "AutoModelForZeroShotObjectDetection": "GLIPForGrounding",
}

# `config.json`'s `custom_pipelines`: what `transformers.pipeline` reads to build a pipeline class from remote code
# (`impl` is resolved with `get_class_from_dynamic_module`, `pt` are the Auto classes that load the model).
CUSTOM_PIPELINES = {
    "zero-shot-object-detection": {
        "impl": f"{REMOTE_CODE_SHIM_NAME}.GLIPZeroShotObjectDetectionPipeline",
        "pt": ["AutoModelForZeroShotObjectDetection"],
        "type": "multimodal",
    }
}


def update_json_file(path: Path, update: Callable[[dict], None]) -> bool:
    """Apply `update` to the json object in `path` and write it back; False when the file does not exist."""
    if not path.is_file():
        return False
    content = json.loads(path.read_text(encoding="utf-8"))
    update(content)
    path.write_text(json.dumps(content, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return True


def remote_code_source_files() -> list[Path]:
    """The module files a saved folder carries: [`REMOTE_CODE_ENTRY_MODULES`] and, recursively, every module they
    import relatively (`from .box_geometry_glip import ...`), in name order.

    They are read next to this file, so a model that was itself loaded as remote code (from the dynamic-module
    cache, where the same files lie side by side) saves the same code again.
    """
    from transformers.dynamic_module_utils import get_relative_import_files

    directory = Path(__file__).resolve().parent
    files = set()
    for name in REMOTE_CODE_ENTRY_MODULES:
        entry = directory / f"{name}.py"
        files.add(entry)
        files.update(Path(path) for path in get_relative_import_files(str(entry)))
    return sorted(files, key=lambda path: path.name)


def add_remote_code_files(save_directory: str | Path) -> None:
    """Make a folder saved with `save_pretrained` load with `trust_remote_code=True` where this package is not
    installed: `AutoConfig`, `AutoModel`, `AutoModelForZeroShotObjectDetection`, `AutoProcessor`,
    `AutoImageProcessor` and `pipeline("zero-shot-object-detection", model=folder, trust_remote_code=True)` (GLIP's
    one-prompt pipeline).

    Copies [`remote_code_source_files`] into the folder, writes `glip_shim.py` (the one entry module, see the module
    docstring) and points every `auto_map` entry at it: `config.json` (`AutoConfig`, `AutoModel`,
    `AutoModelForZeroShotObjectDetection`, plus [`CUSTOM_PIPELINES`]), `processor_config.json` (`AutoProcessor`,
    and `AutoImageProcessor` in its nested `image_processor`) and a legacy `preprocessor_config.json` if present.
    Where the package is imported, its registered classes take precedence over `auto_map` (transformers prefers
    explicitly registered local code) and its `GLIPConfig` ignores `custom_pipelines`, so the folder also loads the
    ordinary way, without `trust_remote_code`.

    Raises:
        `FileNotFoundError` if the folder holds neither `config.json` nor a processor config.
    """
    directory = Path(save_directory)

    def model_entries(content: dict) -> None:
        auto_map = content.setdefault("auto_map", {})
        auto_map.update({key: f"{REMOTE_CODE_SHIM_NAME}.{name}" for key, name in MODEL_AUTO_MAP.items()})
        content["custom_pipelines"] = json.loads(json.dumps(CUSTOM_PIPELINES))  # a fresh copy of the nested dicts

    def image_processor_entries(content: dict) -> None:
        content.setdefault("auto_map", {})["AutoImageProcessor"] = f"{REMOTE_CODE_SHIM_NAME}.GLIPImageProcessor"

    def processor_entries(content: dict) -> None:
        content.setdefault("auto_map", {})["AutoProcessor"] = f"{REMOTE_CODE_SHIM_NAME}.GLIPProcessor"
        if isinstance(content.get("image_processor"), dict):
            image_processor_entries(content["image_processor"])

    found = [
        update_json_file(directory / "config.json", model_entries),
        update_json_file(directory / "processor_config.json", processor_entries),
        update_json_file(directory / "preprocessor_config.json", image_processor_entries),
    ]
    if not any(found):
        raise FileNotFoundError(
            f"{directory} holds no config.json / processor_config.json; call save_pretrained into it first."
        )
    for source in remote_code_source_files():
        target = directory / source.name
        if target.resolve() != source:  # saving into the folder the code was loaded from: already there
            shutil.copyfile(source, target)
    (directory / f"{REMOTE_CODE_SHIM_NAME}.py").write_text(SHIM_SOURCE, encoding="utf-8")


def push_folder_to_hub(
    folder: str | Path,
    repo_id: str,
    commit_message: str | None = None,
    token: str | bool | None = None,
    private: bool | None = None,
    create_pr: bool = False,
    revision: str | None = None,
    api: Any | None = None,
    ignore_patterns: list[str] | None = None,
) -> str:
    """Create `repo_id` on the Hub if needed and upload every file of `folder` in one commit.

    Args:
        folder: the saved folder (weights, configs, tokenizer, remote-code files, `README.md` card).
        repo_id: `"namespace/name"` (a bare name goes under the token's user, as on the Hub).
        commit_message: defaults to `"Upload GLIP"`.
        token: Hub token (default: the logged-in one).
        private: visibility of a repository that is created (an existing one keeps its own).
        create_pr: open a pull request instead of committing to the branch.
        revision: the branch to commit to (created from `main` when missing); default `main`.
        api: an `huggingface_hub.HfApi` (or an object with its `create_repo`, `create_branch`, `upload_folder`);
            default `HfApi(token=token)`. Tests pass a stand-in that records the upload.
        ignore_patterns: glob patterns of files not to upload (e.g. `["checkpoints/*"]` for training states).

    Returns:
        `str`: the URL of the commit (or of the pull request with `create_pr=True`).
    """
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model").repo_id
    if revision is not None and revision != "main":
        api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
    commit = api.upload_folder(
        repo_id=repo_id,
        folder_path=str(folder),
        commit_message=commit_message or "Upload GLIP",
        create_pr=create_pr,
        revision=revision,
        repo_type="model",
        **({"ignore_patterns": ignore_patterns} if ignore_patterns else {}),
    )
    return str(getattr(commit, "pr_url", None) or commit)


def pop_hub_arguments(save_directory: str | Path, kwargs: dict) -> dict | None:
    """Remove `push_to_hub` and its options (`repo_id`, `commit_message`, `token`, `private`, `create_pr`,
    `revision`) from `save_pretrained` keyword arguments; returns them for [`push_folder_to_hub`], or None when
    nothing is to be pushed. The repository name defaults to the folder name, as in transformers."""
    if not kwargs.pop("push_to_hub", False):
        return None
    return {
        "repo_id": kwargs.pop("repo_id", Path(save_directory).name),
        "commit_message": kwargs.pop("commit_message", None),
        "token": kwargs.pop("token", None),
        "private": kwargs.pop("private", None),
        "create_pr": kwargs.pop("create_pr", False),
        "revision": kwargs.pop("revision", None),
    }


def looks_like_hub_id(name: str) -> bool:
    """Whether `name` (not an existing local folder) reads as a Hub model id rather than a mistyped local path."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if name.startswith((".", "/", "~")) or "\\" in name:
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True
