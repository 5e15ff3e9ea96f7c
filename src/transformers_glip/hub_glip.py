"""Saved GLIP folders: the files that let them load with `trust_remote_code=True`, and uploading them to the Hub.

`GLIPPreTrainedModel.save_pretrained` and `GLIPProcessor.save_pretrained` call [`add_remote_code_files`] after the
standard save, and upload (with `push_to_hub=True`) only afterwards, through [`push_folder_to_hub`], so the Hub copy
holds the same files as the local folder. The converter's output is such a folder too.

The shim re-exports the package's classes (the package must be installed where the folder is loaded);
`register_for_auto_class` would instead copy the module files into the folder, but a folder loaded that way would
run the stock one-forward-per-label pipeline, so the shim, which also registers GLIP's one-prompt pipeline, stays.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "REMOTE_CODE_SHIM_NAME",
    "add_remote_code_files",
    "pop_hub_arguments",
    "push_folder_to_hub",
    "update_json_file",
]

REMOTE_CODE_SHIM_NAME = "glip_shim"

SHIM_SOURCE = '''"""Remote-code entry point of a transformers-glip model folder (`trust_remote_code=True`).

The code lives in the `transformers-glip` package (`pip install transformers-glip`); this file only re-exports its
classes. Importing it also registers GLIP with the transformers Auto classes and the zero-shot-object-detection
pipeline.
"""

from transformers_glip import GLIPConfig, GLIPForGrounding, GLIPImageProcessor, GLIPModel, GLIPProcessor

__all__ = ["GLIPConfig", "GLIPForGrounding", "GLIPImageProcessor", "GLIPModel", "GLIPProcessor"]
'''

MODEL_AUTO_MAP = {
    "AutoConfig": "GLIPConfig",
    "AutoModel": "GLIPModel",
    "AutoModelForZeroShotObjectDetection": "GLIPForGrounding",
}


def update_json_file(path: Path, update: Callable[[dict], None]) -> bool:
    """Apply `update` to the json object in `path` and write it back; False when the file does not exist."""
    if not path.is_file():
        return False
    content = json.loads(path.read_text(encoding="utf-8"))
    update(content)
    path.write_text(json.dumps(content, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return True


def add_remote_code_files(save_directory: str | Path) -> None:
    """Add `auto_map` entries and a one-file shim to a folder saved with `save_pretrained`, so that
    `AutoModelForZeroShotObjectDetection.from_pretrained(folder, trust_remote_code=True)`, `AutoProcessor`,
    `AutoImageProcessor` and `pipeline("zero-shot-object-detection", model=folder, trust_remote_code=True)` work in a
    process that never imported `transformers_glip` (the package must be installed: the shim imports it).

    Writes `glip_shim.py` (re-exports the package classes) and points every `auto_map` entry at it: `config.json`
    (`AutoConfig`, `AutoModel`, `AutoModelForZeroShotObjectDetection`), `processor_config.json` (`AutoProcessor`,
    and `AutoImageProcessor` in its nested `image_processor`) and a legacy `preprocessor_config.json` if present.
    Once the package is imported, its registered classes take precedence over `auto_map` (transformers prefers
    explicitly registered local code), so the folder also loads the ordinary way.

    Raises:
        `FileNotFoundError` if the folder holds neither `config.json` nor a processor config.
    """
    directory = Path(save_directory)

    def model_entries(content: dict) -> None:
        auto_map = content.setdefault("auto_map", {})
        auto_map.update({key: f"{REMOTE_CODE_SHIM_NAME}.{name}" for key, name in MODEL_AUTO_MAP.items()})

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
    (directory / f"{REMOTE_CODE_SHIM_NAME}.py").write_text(SHIM_SOURCE, encoding="utf-8")


def push_folder_to_hub(
    folder: str | Path,
    repo_id: str,
    commit_message: str | None = None,
    token: str | bool | None = None,
    private: bool | None = None,
    create_pr: bool = False,
    revision: str | None = None,
) -> str:
    """Create `repo_id` on the Hub if needed and upload every file of `folder` in one commit.

    Returns:
        `str`: the URL of the commit (or of the pull request with `create_pr=True`).
    """
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    commit = api.upload_folder(
        repo_id=repo_id,
        folder_path=str(folder),
        commit_message=commit_message or "Upload GLIP",
        create_pr=create_pr,
        revision=revision,
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
