"""End-to-end conversion (`convert_checkpoint`) and its command line (`main`), the pieces that touch the file system.

```
python -m transformers_glip.convert_glip_original_checkpoint --checkpoint glip_tiny_model_o365_goldg.pth \
    --original-config configs/pretrain/glip_Swin_T_O365_GoldG.yaml --text-model bert-base-uncased --output glip-t
```

`--checkpoint` may name a file of a Hub repository, `REPO_ID:FILENAME` (or `REPO_ID@REVISION:FILENAME`), e.g.
`GLIPModel/GLIP:glip_tiny_model_o365_goldg.pth`: it is downloaded once with `huggingface_hub.hf_hub_download` into
the Hub cache (an existing local path always wins). The command line also writes the model card (`README.md`,
[`model_card_glip.save_model_card`]) into the output folder, and with `--push_to_hub REPO_ID` (`--private`,
`--revision`, `--commit_message`) uploads the folder in one commit ([`model_card_glip.publish_folder`]).

The output folder is written as a whole: the files go into a temporary sibling folder that then replaces the output
folder, so no file of an earlier conversion survives (old weight shards, a stale `model.safetensors`) and a failed
conversion leaves nothing behind. A non-empty output folder that is not the output of an earlier conversion is
refused unless `overwrite=True` (`--overwrite`), which replaces it with everything in it.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

from ..image_processing_glip import GLIPImageProcessor
from ..model_card_glip import load_evaluation_summary, publish_folder, save_model_card
from ..modeling_glip import GLIPForGrounding
from ..processing_glip import GLIPProcessor
from .key_tables import convert_state_dict, to_original_layout
from .original_checkpoint import load_original_state_dict
from .original_config import (
    IMAGE_PROCESSOR_SETTING_YAML_KEYS,
    VARIANTS,
    check_config_matches_state_dict,
    config_from_original_yaml,
    config_from_variant,
    image_processor_settings_from_original_yaml,
    image_processor_settings_from_variant,
    load_original_yaml,
)
from .text_model import load_text_tokenizer, text_config_from_pretrained
from .verification import verify_against_reference

__all__ = [
    "CONVERSION_OUTPUT_FILE_PATTERNS",
    "HUB_FILE_PATTERN",
    "OFFICIAL_WEIGHTS_REPO_ID",
    "check_output_folder",
    "convert_checkpoint",
    "is_conversion_output",
    "main",
    "parse_arguments",
    "resolve_hub_file",
    "run_command_line",
]

logger = logging.getLogger(__name__)

# Names of the files a conversion writes (the weights may be sharded); a folder holding only these, with a GLIP
# config.json, is the output of an earlier conversion and is replaced without `--overwrite`.
CONVERSION_OUTPUT_FILE_PATTERNS: tuple[str, ...] = (
    r"config\.json",
    r"model\.safetensors",
    r"model-\d+-of-\d+\.safetensors",
    r"model\.safetensors\.index\.json",
    r"tokenizer\.json",
    r"tokenizer_config\.json",
    r"special_tokens_map\.json",
    r"added_tokens\.json",
    r"vocab\.txt",
    r"processor_config\.json",
    r"preprocessor_config\.json",
    r"glip_shim\.py",
    r"[a-z_]*glip[a-z_]*\.py",  # the remote-code copies of the package modules (hub_glip.add_remote_code_files)
    r"README\.md",  # the model card
)


# `owner/name:path/in/repo` or `owner/name@revision:path/in/repo` (a Hub file; see `resolve_hub_file`).
HUB_FILE_PATTERN = re.compile(r"(?P<repo_id>[\w.-]+/[\w.-]+)(?:@(?P<revision>[^:@]+))?:(?P<filename>[^:]+)")
# Where microsoft/GLIP's released checkpoints are hosted (the default `base_model` of their cards).
OFFICIAL_WEIGHTS_REPO_ID = "GLIPModel/GLIP"


def resolve_hub_file(reference: str | Path, name: str = "checkpoint") -> tuple[Path, str | None]:
    """A local path, or a Hub file `REPO_ID[@REVISION]:FILENAME` downloaded (once, into the Hub cache) with
    `huggingface_hub.hf_hub_download`.

    A path that exists locally is used as it is, even if it looks like a Hub reference; anything else that is not a
    Hub reference is returned unchanged (the reader then reports a missing file).

    Returns:
        `(path, repo_id)`: the local file and the Hub repository it came from (None for a local path).

    Raises:
        `ValueError` naming `name` and the reference when the download fails (unknown repository or file, no
        network and not in the cache).
    """
    reference = str(reference)
    match = HUB_FILE_PATTERN.fullmatch(reference)
    if Path(reference).exists() or match is None:
        return Path(reference), None
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, HFValidationError

    try:
        path = huggingface_hub.hf_hub_download(
            repo_id=match["repo_id"], filename=match["filename"], revision=match["revision"]
        )
    except (EntryNotFoundError, HfHubHTTPError, HFValidationError, OSError, ValueError) as error:
        raise ValueError(
            f"`{name}` = {reference!r}: could not download {match['filename']!r} from the Hub repository "
            f"{match['repo_id']!r} ({type(error).__name__}: {error}). Check the repository id and file name "
            "(REPO_ID:FILENAME), or pass a local path."
        ) from error
    return Path(path), match["repo_id"]


def is_conversion_output(folder: str | Path) -> bool:
    """Whether `folder` holds only files a conversion writes (`CONVERSION_OUTPUT_FILE_PATTERNS`) and a GLIP
    `config.json`."""
    folder = Path(folder)
    entries = list(folder.iterdir())
    if not all(
        entry.is_file() and any(re.fullmatch(pattern, entry.name) for pattern in CONVERSION_OUTPUT_FILE_PATTERNS)
        for entry in entries
    ):
        return False
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get("model_type") == "glip"


def check_output_folder(output_dir: str | Path, overwrite: bool = False) -> None:
    """Raise `ValueError` unless `output_dir` may receive a conversion.

    Accepted: a folder that does not exist yet, an empty folder, the output of an earlier conversion
    (`is_conversion_output`), or with `overwrite=True` any folder (replaced with all its content). Refused: a path
    that is a file, and (without `overwrite`) a folder holding other files.
    """
    output_dir = Path(output_dir)
    if not output_dir.exists():
        return
    if not output_dir.is_dir():
        raise ValueError(f"Output {output_dir} is a file, not a folder; choose another --output.")
    entries = sorted(entry.name for entry in output_dir.iterdir())
    if not entries or is_conversion_output(output_dir):
        return
    if overwrite:
        logger.warning("--overwrite: replacing %s and everything in it (%d entries)", output_dir, len(entries))
        return
    shown = ", ".join(entries[:10]) + (f", ... ({len(entries)} entries)" if len(entries) > 10 else "")
    raise ValueError(
        f"Output folder {output_dir} is not empty and is not the output of an earlier conversion (it holds {shown}). "
        "Writing into it would mix the converted model with these files. Choose a new or empty folder, or pass "
        "--overwrite (overwrite=True) to replace the folder and everything in it."
    )


def _write_folder(output_dir: Path, write: Callable[[Path], None]) -> None:
    """Run `write(staging)` on a new sibling folder of `output_dir`, then make it `output_dir` (replacing the old).

    The swap is two renames inside the same parent (old folder aside, new folder in place), so the output folder
    is never a mix of old and new files; the old folder is then deleted. An existing empty `output_dir` is kept and
    receives the files. On failure the staging folder is removed and `output_dir` is left as it was.
    """
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:8]
    staging = output_dir.parent / f".{output_dir.name}.converting-{token}"
    staging.mkdir()
    try:
        write(staging)
        if not output_dir.exists():
            staging.rename(output_dir)
            return
        if not any(output_dir.iterdir()):  # keep an empty folder itself (a mount point, a caller's temp folder)
            for entry in staging.iterdir():
                entry.rename(output_dir / entry.name)
            staging.rmdir()
            return
        previous = output_dir.parent / f".{output_dir.name}.replaced-{token}"
        output_dir.rename(previous)
        try:
            staging.rename(output_dir)
        except OSError:
            previous.rename(output_dir)
            raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(previous, ignore_errors=True)


def _build_processor(
    image_processor_settings: dict, tokenizer, max_text_length: int, settings_source: str
) -> GLIPProcessor | GLIPImageProcessor:
    """`GLIPProcessor` of the settings and the tokenizer, or only the `GLIPImageProcessor` without a tokenizer.

    `max_text_length` is the prompt padding length (`MODEL.LANGUAGE_BACKBONE.MAX_QUERY_LEN`).
    """
    try:
        image_processor = GLIPImageProcessor(**image_processor_settings)
    except (ValueError, TypeError) as error:
        keys = ", ".join(
            f"{name} <- {IMAGE_PROCESSOR_SETTING_YAML_KEYS[name]} = {value!r}"
            for name, value in image_processor_settings.items()
            if re.search(rf"\b{re.escape(name)}\b", str(error))
        )
        raise ValueError(
            f"Invalid image settings in {settings_source}: {error}" + (f"; yaml keys: {keys}" if keys else "")
        ) from error
    if tokenizer is None:
        return image_processor
    return GLIPProcessor(image_processor=image_processor, tokenizer=tokenizer, max_text_length=max_text_length)


def convert_checkpoint(
    checkpoint_path: str | Path,
    output_dir: str | Path,
    original_config: str | Path | None = None,
    variant: str | None = None,
    text_model: str | Path | None = None,
    verify_against: str | Path | None = None,
    verify_inputs: str | Path | None = None,
    verify_tolerance: float = 1e-3,
    overwrite: bool = False,
) -> GLIPForGrounding:
    """Convert an official (or mmdetection) GLIP checkpoint into a `save_pretrained` folder.

    Args:
        checkpoint_path: the `.pth` file (read with `torch.load(weights_only=True)`).
        output_dir: folder that receives config.json, model.safetensors, the tokenizer files, the processor
            config and `glip_shim.py` with `auto_map` entries (see `hub_glip.add_remote_code_files`). It must not
            exist, be empty or hold an earlier conversion, unless `overwrite`; it is replaced as a whole (see the
            module docstring).
        original_config: official yaml (configs/pretrain/*.yaml or a full `cfg.dump()`); exclusive with `variant`.
        variant: `"glip-t"`, `"glip-t-a"` or `"glip-l"` when no yaml is given.
        text_model: local folder or Hub id of the BERT (config.json for the sizes, tokenizer files); defaults to
            bert-base-uncased sizes and the yaml's `TOKENIZER_TYPE` (no tokenizer is saved if that cannot be
            loaded, with a warning).
        verify_against: optional reference outputs to compare the converted model with (`verify_against_reference`).
        verify_inputs: reference inputs for `verify_against` (default: inputs.safetensors next to it).
        verify_tolerance: maximum absolute difference accepted by the verification.
        overwrite: replace a non-empty output folder that is not an earlier conversion (all its files are deleted).

    Returns:
        The converted `GLIPForGrounding` (eval mode).

    Raises:
        ValueError: for every bad input, naming it: a missing, empty, truncated or unsafe checkpoint, tensors
            holding NaN / Inf, unknown or mistyped yaml keys, a missing or corrupt `text_model` folder, a
            disagreement between the configuration and the weights, a refused output folder, a failed verification.
    """
    if (original_config is None) == (variant is None):
        raise ValueError("Pass exactly one of `original_config` (an official yaml) and `variant`.")
    output_dir = Path(output_dir)
    check_output_folder(output_dir, overwrite=overwrite)
    text_config = text_config_from_pretrained(text_model)  # the small inputs first: fail before reading the weights
    if original_config is not None:
        config = config_from_original_yaml(original_config, text_config=text_config)
        processor_settings = image_processor_settings_from_original_yaml(original_config)
        settings_source = f"the official config {original_config}"
        tokenizer_name = (
            text_model or load_original_yaml(original_config)["MODEL"]["LANGUAGE_BACKBONE"]["TOKENIZER_TYPE"]
        )
    else:
        config = config_from_variant(variant, text_config=text_config)
        processor_settings = image_processor_settings_from_variant(variant)
        settings_source = f"variant {variant}"
        tokenizer_name = text_model or "bert-base-uncased"
    tokenizer = load_text_tokenizer(tokenizer_name, required=text_model is not None)
    processor = _build_processor(processor_settings, tokenizer, config.max_text_length, settings_source)
    state_dict = to_original_layout(load_original_state_dict(checkpoint_path))
    prompt_offsets = state_dict.get("rpn.tunable_linear.weight")
    if prompt_offsets is not None:
        # A prompt-tuned checkpoint (`tools/finetune.py` language_prompt_v2/v4): the yaml it was tuned from usually
        # leaves ADD_LINEAR_LAYER off (the override sets it), so the rows come from the weight itself.
        config.prompt_tuning_length = int(prompt_offsets.shape[0])
    check_config_matches_state_dict(config, state_dict)

    model = GLIPForGrounding(config)
    converted = convert_state_dict(
        state_dict, config, expected_shapes={key: tuple(value.shape) for key, value in model.state_dict().items()}
    )
    model.load_state_dict(converted, strict=True)
    model.eval()
    if verify_against is not None:
        verify_against_reference(model, verify_against, verify_inputs, tolerance=verify_tolerance)

    def write(folder: Path) -> None:
        model.save_pretrained(folder)
        processor.save_pretrained(folder)  # both saves add the remote-code shim and `auto_map` (hub_glip)

    _write_folder(output_dir, write)
    logger.info("Saved the converted model to %s", output_dir)
    return model


def parse_arguments(arguments: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line of `python -m transformers_glip.convert_glip_original_checkpoint`."""
    parser = argparse.ArgumentParser(
        prog="python -m transformers_glip.convert_glip_original_checkpoint",
        description="Convert an official GLIP (or mmdetection GLIP) checkpoint to a transformers_glip folder.",
    )
    parser.add_argument("--checkpoint", required=True, help="official .pth (microsoft/GLIP or mmdetection layout)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--original-config", help="official yaml (configs/pretrain/*.yaml or a full cfg.dump())")
    source.add_argument("--variant", choices=sorted(VARIANTS), help="preset instead of a yaml")
    parser.add_argument(
        "--text-model",
        help="local BERT folder (config.json + tokenizer files) or Hub id, for the sizes and the tokenizer; "
        "default: bert-base-uncased sizes and the yaml's TOKENIZER_TYPE",
    )
    parser.add_argument("--output", required=True, help="output folder (new, empty, or an earlier conversion)")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a non-empty --output folder that is not an earlier conversion (deletes everything in it)",
    )
    parser.add_argument("--verify-against", help="reference outputs.safetensors of the official model (optional)")
    parser.add_argument("--verify-inputs", help="reference inputs.safetensors (default: next to --verify-against)")
    parser.add_argument("--verify-tolerance", type=float, default=1e-3, help="max |difference| (default 1e-3)")
    card = parser.add_argument_group("model card (README.md of the output folder)")
    card.add_argument(
        "--base-model",
        "--base_model",
        nargs="+",
        help=f"Hub id(s) of the model converted from (default: the repository of a Hub --checkpoint, e.g. "
        f"{OFFICIAL_WEIGHTS_REPO_ID})",
    )
    card.add_argument("--datasets", nargs="+", help="pre-training datasets (Hub dataset ids or names)")
    card.add_argument(
        "--evaluation-summary",
        "--evaluation_summary",
        help="json for the model-index: examples/evaluate.py's summary.json or the card's summary format",
    )
    card.add_argument("--model-name", "--model_name", help="card title (default: the variant, e.g. GLIP-T)")
    card.add_argument("--license", default="mit", help="Hub license id (default: mit, the official license)")
    hub = parser.add_argument_group("upload")
    hub.add_argument("--push-to-hub", "--push_to_hub", metavar="REPO_ID", help="upload the output folder to REPO_ID")
    hub.add_argument("--private", action="store_true", help="create the repository as private")
    hub.add_argument("--revision", help="branch to commit to (created when missing; default main)")
    hub.add_argument("--commit-message", "--commit_message", help="commit message (default: one naming the source)")
    return parser.parse_args(arguments)


def main(arguments: list[str] | None = None) -> None:
    """Command-line entry point; raises `ValueError` for bad input (see `run_command_line`)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parsed = parse_arguments(arguments)
    evaluation_summary = (
        load_evaluation_summary(parsed.evaluation_summary) if parsed.evaluation_summary is not None else None
    )
    checkpoint_path, checkpoint_repo_id = resolve_hub_file(parsed.checkpoint, "--checkpoint")
    model = convert_checkpoint(
        checkpoint_path=checkpoint_path,
        output_dir=parsed.output,
        original_config=parsed.original_config,
        variant=parsed.variant,
        text_model=parsed.text_model,
        verify_against=parsed.verify_against,
        verify_inputs=parsed.verify_inputs,
        verify_tolerance=parsed.verify_tolerance,
        overwrite=parsed.overwrite,
    )
    base_model = parsed.base_model or checkpoint_repo_id
    card_arguments = {
        "base_model": base_model[0] if isinstance(base_model, list) and len(base_model) == 1 else base_model,
        "datasets": parsed.datasets,
        "evaluation_summary": evaluation_summary,
        "license": parsed.license,
        "model_name": parsed.model_name,
    }
    if parsed.push_to_hub is None:
        save_model_card(parsed.output, config=model.config, **card_arguments)
        return
    url = publish_folder(
        parsed.output,
        parsed.push_to_hub,
        commit_message=parsed.commit_message or f"Convert {parsed.checkpoint} with transformers-glip",
        private=parsed.private or None,
        revision=parsed.revision,
        config=model.config,
        **card_arguments,
    )
    logger.info("Uploaded %s to %s", parsed.output, url)


def run_command_line(arguments: list[str] | None = None) -> int:
    """`main`, with a failed check printed as an error message instead of a traceback; returns the exit status."""
    try:
        main(arguments)
    except ValueError as error:
        logger.error("%s", error)
        return 1
    return 0
