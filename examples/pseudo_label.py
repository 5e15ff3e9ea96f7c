#!/usr/bin/env python
"""Pseudo-label image-caption pairs with a teacher GLIP (GLIP self-training), on one or many processes.

The captions' noun phrases are grounded by the teacher and written as GLIP pseudo-label jsonl shards (plus the
images of parquet / tar data, a sidecar json per shard with the teacher and the thresholds, and
`pseudo_label_run.json`); see `transformers_glip/data/pseudo_labeling.py`. The data can be parquet shards,
webdataset tars (img2dataset layout), json lines or a Hub dataset id, streamed with 🤗 datasets:

    python examples/pseudo_label.py --teacher out/teacher --data captions/ --output_dir out/pseudo
    python examples/pseudo_label.py --teacher out/teacher --data "cc3m/{00000..00099}.tar" ...   # a glob / folder
    python examples/pseudo_label.py --teacher out/teacher --data someone/cc3m-wds --split train ...  # Hub id
    ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no \
        --dynamo_backend no examples/pseudo_label.py --teacher out/teacher --data captions/ --output_dir out/pseudo

Every process labels its own input shards (or chunks) and writes its own output shards. Interrupt and rerun the same
command (with any number of processes) to continue: complete shards are skipped, nothing is labelled twice or
missed. Train a student on gold + pseudo labels with `examples/pretrain.py` (`--dataset pseudo_label SHARD.jsonl
OUTPUT_DIR`; the library's `pseudo_label_output_source(output_dir)` reads all shards of a run).
"""

import argparse
import json
import logging
import os

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object

from transformers_glip import GLIPForGrounding, GLIPProcessor
from transformers_glip.data.pseudo_labeling import (
    NOUN_PHRASE_EXTRACTORS,
    PseudoLabelFilters,
    pseudo_label_shard_files,
    pseudo_label_stream,
)
from transformers_glip.data.streaming import image_caption_source
from transformers_glip.image_processing_glip import GLIPImageProcessor
from transformers_glip.launch_glip import check_distributed_launch

logger = logging.getLogger(__name__)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", required=True, help="Teacher GLIP: a saved folder or a Hub model id.")
    parser.add_argument("--data", required=True, help="Caption data: file, folder, glob or Hub dataset id.")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--builder", help="🤗 datasets builder for local files (default: from the file endings).")
    parser.add_argument("--split", default="train")
    parser.add_argument("--image_column", help="Default: image / jpg / png / ... whichever exists.")
    parser.add_argument("--caption_column", help="Default: caption / txt / text / ... whichever exists.")
    parser.add_argument("--id_column", help="Unique id per image (default: image_id / id / key, else positions).")
    parser.add_argument("--image_dir", help="Folder that relative image paths are relative to.")
    parser.add_argument("--name", default="captions", help="Source name (prefix of the sample ids).")
    parser.add_argument(
        "--noun_phrases",
        choices=NOUN_PHRASE_EXTRACTORS,
        default="offline",
        help="'offline' (no dependencies) or 'nltk' (the official chunker; pip install nltk + data).",
    )
    parser.add_argument("--score_threshold", type=float, default=0.5, help="Official CAPTION_CONF (GLIP-L: 0.5).")
    parser.add_argument("--nms_threshold", type=float, help="Class-agnostic NMS IoU (official CAPTION_NMS; off).")
    parser.add_argument("--min_box_size", type=float, default=0.0, help="Minimum box side in pixels.")
    parser.add_argument("--max_boxes", type=int, help="At most this many boxes per image.")
    parser.add_argument("--min_boxes", type=int, default=1, help="Official CAPTION_MIN_BOX: fewer -> not written.")
    parser.add_argument("--batch_size", type=int, default=8, help="Images per detect call.")
    parser.add_argument("--shard_size", type=int, default=1000, help="Images per output shard.")
    parser.add_argument("--min_size", type=int, help="Override the teacher's inference short side (800).")
    parser.add_argument("--max_size", type=int, help="Override the teacher's inference long-side cap (1333).")
    parser.add_argument("--cpu", action="store_true", help="Run on CPU even when an accelerator is available.")
    parser.add_argument("--no_progress", action="store_true", help="Hide the progress bar.")
    return parser.parse_args(argv)  # fmt: skip


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    accelerator = Accelerator(cpu=args.cpu)
    check_distributed_launch(accelerator.num_processes, accelerator.distributed_type)
    filters = PseudoLabelFilters(
        score_threshold=args.score_threshold,
        nms_threshold=args.nms_threshold,
        min_box_size=args.min_box_size,
        max_boxes=args.max_boxes,
        min_boxes=args.min_boxes,
    )
    model = GLIPForGrounding.from_pretrained(args.teacher).to(accelerator.device).eval()
    processor = GLIPProcessor.from_pretrained(args.teacher)
    if args.min_size is not None or args.max_size is not None:
        overrides = {key: value for key in ("min_size", "max_size") if (value := getattr(args, key)) is not None}
        image_processor = GLIPImageProcessor.from_dict(processor.image_processor.to_dict(), **overrides)
        processor = GLIPProcessor(image_processor, processor.tokenizer, processor.max_length, processor.chunk_size)
    source = image_caption_source(
        args.data,
        name=args.name,
        builder=args.builder,
        split=args.split,
        image_column=args.image_column,
        caption_column=args.caption_column,
        id_column=args.id_column,
        image_dir=args.image_dir,
    )
    # Processes split the stream themselves (whole input shards), so nothing goes through accelerator.prepare.
    with torch.inference_mode():
        summary = pseudo_label_stream(
            model,
            processor,
            source,
            args.output_dir,
            filters=filters,
            noun_phrase_extractor=args.noun_phrases,
            batch_size=args.batch_size,
            shard_size=args.shard_size,
            process_index=accelerator.process_index,
            num_processes=accelerator.num_processes,
            teacher_name=args.teacher,
            progress=not args.no_progress,
        )
    summaries = gather_object([summary])
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        total = {key: sum(item[key] for item in summaries) for key in summary if key not in ("skipped", "seconds")}
        total["skipped"] = {}
        for item in summaries:
            for reason, count in item["skipped"].items():
                total["skipped"][reason] = total["skipped"].get(reason, 0) + count
        seconds = max(item["seconds"] for item in summaries)
        total["images_per_second"] = round(total["images_labelled"] / seconds, 2) if seconds > 0 else None
        total["shards"] = len(pseudo_label_shard_files(args.output_dir))
        total["processes"] = accelerator.num_processes
        with open(os.path.join(args.output_dir, "pseudo_label_summary.json"), "w") as handle:
            json.dump(total, handle, indent=2)
        logger.info(f"Pseudo-labelling done: {json.dumps(total)}")
    accelerator.end_training()


if __name__ == "__main__":
    main()
