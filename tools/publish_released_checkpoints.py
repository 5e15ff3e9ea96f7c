#!/usr/bin/env python
"""Convert every released GLIP checkpoint and publish it to the Hub with its model card, in one command.

    python tools/publish_released_checkpoints.py --glip_repo path/to/microsoft-GLIP --namespace my-org \\
        [--variants glip-t-a glip-t] [--work_dir out/released] [--private] [--revision v1]

For each released variant (GLIP-T (A), (B), (C), GLIP-T, GLIP-L; `RELEASED_CHECKPOINTS`) the script downloads the
official weights from the Hub repository `GLIPModel/GLIP` (`huggingface_hub.hf_hub_download`, cached), converts them
with the variant's official yaml (`--glip_repo`: a checkout of github.com/microsoft/GLIP, whose `configs/pretrain/`
holds them), checks the converted weights and config agree, and uploads the folder to `NAMESPACE/REPO_NAME` in one
commit: safetensors, config, processor, tokenizer, the remote-code files and a model card whose `model-index`
holds the variant's published zero-shot COCO / LVIS figures.

The figures are the official ones, with their source in the card: the GLIP paper (Li et al., CVPR 2022,
arXiv 2112.03857; COCO val2017 zero-shot AP in its Table 2, LVIS MiniVal / Val v1.0 zero-shot AP in its Table 3) for
GLIP-T (A), (B), (C) and GLIP-L's LVIS figures, and the official README's model zoo for the released GLIP-T
checkpoint (O365, GoldG, CC3M, SBU) and GLIP-L's COCO figure (the released checkpoints differ from the paper's
rows; see `research/ANCHORS.md` §3a of the team's shared research notes, which transcribes both). `--dry_run`
converts and writes the cards without uploading.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers_glip.conversion.cli import OFFICIAL_WEIGHTS_REPO_ID, convert_checkpoint, resolve_hub_file
from transformers_glip.model_card_glip import publish_folder, save_model_card

__all__ = ["RELEASED_CHECKPOINTS", "ReleasedCheckpoint", "main", "publish_released_checkpoints"]

logger = logging.getLogger("publish_released_checkpoints")

PAPER = {"name": "GLIP paper (arXiv 2112.03857)", "url": "https://arxiv.org/abs/2112.03857"}
README = {"name": "microsoft/GLIP README, model zoo", "url": "https://github.com/microsoft/GLIP#model-zoo"}
COCO = {"name": "COCO 2017", "type": "detection-datasets/coco", "split": "val2017"}
LVIS_MINIVAL = {"name": "LVIS v1.0 MiniVal", "type": "lvis", "split": "minival"}
LVIS_VAL = {"name": "LVIS v1.0", "type": "lvis", "split": "val"}


def figures(
    coco: float, source: dict, lvis_minival: dict | None = None, lvis_val: dict | None = None, lvis_source=None
):
    """The card's evaluation summaries of one variant: zero-shot COCO AP and (when published) LVIS AP / APr."""
    summaries = [{"dataset": COCO, "metrics": {"AP": coco}, "source": source}]
    for dataset, metrics in ((LVIS_MINIVAL, lvis_minival), (LVIS_VAL, lvis_val)):
        if metrics:
            summaries.append({"dataset": dataset, "metrics": metrics, "source": lvis_source or source})
    return summaries


@dataclass(frozen=True)
class ReleasedCheckpoint:
    """One released GLIP checkpoint: where its weights and yaml are, what it was trained on, what it scores."""

    key: str  # the --variants name
    model_name: str  # the paper's name, the card title
    repo_name: str  # the Hub repository name under --namespace
    checkpoint: str  # the file in the GLIPModel/GLIP Hub repository
    original_config: str  # the official yaml, relative to the microsoft/GLIP checkout
    datasets: tuple[str, ...]
    evaluation: list[dict[str, Any]] = field(hash=False)


# Variant -> official yaml and weight file: spec/GLIP_SPEC.md (§ checkpoints). Figures: ANCHORS.md §3a, which cites
# the paper's tables and the README for each value.
RELEASED_CHECKPOINTS: tuple[ReleasedCheckpoint, ...] = (
    ReleasedCheckpoint(
        key="glip-t-a",
        model_name="GLIP-T (A)",
        repo_name="glip-tiny-a-o365",
        checkpoint="glip_a_tiny_o365.pth",
        original_config="configs/pretrain/glip_A_Swin_T_O365.yaml",
        datasets=("objects365",),
        evaluation=figures(42.9, PAPER, {"AP": 18.5, "APr": 14.2}, {"AP": 12.3, "APr": 6.0}),
    ),
    ReleasedCheckpoint(
        key="glip-t-b",
        model_name="GLIP-T (B)",
        repo_name="glip-tiny-b-o365",
        checkpoint="glip_tiny_model_o365.pth",
        original_config="configs/pretrain/glip_Swin_T_O365.yaml",
        datasets=("objects365",),
        evaluation=figures(44.9, PAPER, {"AP": 17.8, "APr": 13.5}, {"AP": 11.3, "APr": 4.2}),
    ),
    ReleasedCheckpoint(
        key="glip-t-c",
        model_name="GLIP-T (C)",
        repo_name="glip-tiny-c-o365-goldg",
        checkpoint="glip_tiny_model_o365_goldg.pth",
        original_config="configs/pretrain/glip_Swin_T_O365_GoldG.yaml",
        datasets=("objects365", "goldg"),
        evaluation=figures(46.7, PAPER, {"AP": 24.9, "APr": 17.7}, {"AP": 16.5, "APr": 7.5}),
    ),
    ReleasedCheckpoint(
        key="glip-t",
        model_name="GLIP-T",
        repo_name="glip-tiny-o365-goldg-cc-sbu",
        checkpoint="glip_tiny_model_o365_goldg_cc_sbu.pth",
        # The caption-data pre-training yaml was never released (README note 6); the architecture is C's.
        original_config="configs/pretrain/glip_Swin_T_O365_GoldG.yaml",
        datasets=("objects365", "goldg", "cc3m", "sbu"),
        evaluation=figures(46.6, README, {"AP": 25.9}),  # the README's APr differs between checkpoints: left out
    ),
    ReleasedCheckpoint(
        key="glip-l",
        model_name="GLIP-L",
        repo_name="glip-large",
        checkpoint="glip_large_model.pth",
        original_config="configs/pretrain/glip_Swin_L.yaml",
        datasets=("objects365", "openimages", "visual-genome", "imagenet-boxes", "goldg", "cap24m"),
        evaluation=figures(51.4, README, {"AP": 37.3, "APr": 28.2}, {"AP": 26.9, "APr": 17.1}, lvis_source=PAPER),
    ),
)


def publish_released_checkpoints(
    glip_repo: str | Path,
    namespace: str,
    work_dir: str | Path,
    variants: list[str] | None = None,
    text_model: str | None = None,
    private: bool | None = None,
    revision: str | None = None,
    dry_run: bool = False,
    api: Any | None = None,
) -> dict[str, str]:
    """Convert and publish the released checkpoints (all, or the `variants` keys); returns `{repo_id: commit URL}`
    (`{repo_id: folder}` with `dry_run`).

    Raises:
        `ValueError` for an unknown variant or a missing yaml (before anything is downloaded), and the converter's
        errors.
    """
    known = {checkpoint.key: checkpoint for checkpoint in RELEASED_CHECKPOINTS}
    unknown = sorted(set(variants or []) - set(known))
    if unknown:
        raise ValueError(f"Unknown --variants {unknown}; choose from {sorted(known)}.")
    selected = [known[key] for key in variants] if variants else list(RELEASED_CHECKPOINTS)
    glip_repo = Path(glip_repo)
    missing = [
        str(glip_repo / item.original_config) for item in selected if not (glip_repo / item.original_config).is_file()
    ]
    if missing:
        raise ValueError(
            f"--glip_repo {str(glip_repo)!r} lacks {missing}; pass a checkout of github.com/microsoft/GLIP."
        )
    published = {}
    for item in selected:
        repo_id = f"{namespace}/{item.repo_name}"
        reference = f"{OFFICIAL_WEIGHTS_REPO_ID}:{item.checkpoint}"
        logger.info("%s: %s + %s -> %s", item.model_name, reference, item.original_config, repo_id)
        checkpoint_path, _ = resolve_hub_file(reference, f"{item.model_name} checkpoint")
        folder = Path(work_dir) / item.repo_name
        model = convert_checkpoint(
            checkpoint_path, folder, original_config=glip_repo / item.original_config, text_model=text_model
        )
        card_arguments = {
            "config": model.config,
            "base_model": OFFICIAL_WEIGHTS_REPO_ID,
            "datasets": list(item.datasets),
            "evaluation_summary": item.evaluation,
            "model_name": item.model_name,
        }
        if dry_run:
            save_model_card(folder, repo_id=repo_id, **card_arguments)
            published[repo_id] = str(folder)
            continue
        published[repo_id] = publish_folder(
            folder,
            repo_id,
            commit_message=f"{item.model_name}: convert {item.checkpoint} ({item.original_config})",
            private=private,
            revision=revision,
            api=api,
            **card_arguments,
        )
    return published


def main(argv: list[str] | None = None, api: Any | None = None) -> dict[str, str]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--glip_repo", required=True, help="checkout of github.com/microsoft/GLIP (for the yamls)")
    parser.add_argument("--namespace", required=True, help="Hub user or organisation that receives the repositories")
    parser.add_argument("--work_dir", default="out/released", help="where the converted folders are written")
    parser.add_argument(
        "--variants", nargs="+", choices=[item.key for item in RELEASED_CHECKPOINTS], help="default: all five"
    )
    parser.add_argument("--text_model", help="BERT folder or Hub id (default: the yaml's tokenizer, bert sizes)")
    parser.add_argument("--private", action="store_true", help="create the repositories as private")
    parser.add_argument("--revision", help="branch to commit to (created when missing; default main)")
    parser.add_argument("--dry_run", action="store_true", help="convert and write the cards, upload nothing")
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        published = publish_released_checkpoints(
            arguments.glip_repo,
            arguments.namespace,
            arguments.work_dir,
            variants=arguments.variants,
            text_model=arguments.text_model,
            private=arguments.private or None,
            revision=arguments.revision,
            dry_run=arguments.dry_run,
            api=api,
        )
    except ValueError as error:
        parser.error(str(error))
    for repo_id, location in published.items():
        print(f"{repo_id}: {location}")
    return published


if __name__ == "__main__":
    main(sys.argv[1:])
