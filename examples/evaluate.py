#!/usr/bin/env python
"""Evaluate a GLIP model with 🤗 Accelerate: COCO / LVIS box AP, Flickr30K Recall@k, or an ODinW-style suite.

    python examples/evaluate.py --model out/demo/model --coco instances_val.json images/ --output_dir out/eval
    python examples/evaluate.py --model DIR --lvis lvis_v1_minival.json images/ --output_dir out/lvis
    python examples/evaluate.py --model DIR --flickr final_flickr_separateGT_val.json flickr30k/images --output_dir ..
    python examples/evaluate.py --model DIR --suite odinw.yaml --output_dir out/odinw
    ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no \
        --dynamo_backend no examples/evaluate.py --model DIR --coco instances_val.json images/ --output_dir out/eval2

Every image goes through the inference path (`transformers_glip.detect` with `threshold=None`, or the processor's
grounded post-processing for captions); each process predicts its share of the images (streamed, one batch decoded
at a time), the predictions are gathered with `accelerate.utils.gather_object` and the main process computes the
metrics with pycocotools and writes `summary.json`, `summary.md` and `per_category_ap.png` into `--output_dir`.
The suite yaml lists COCO datasets with optional per-category prompts (see
`transformers_glip.evaluation.suite.read_suite_config`); the report then holds the per-dataset AP and the average.
"""

import argparse
import sys

from accelerate import Accelerator
from accelerate.utils import gather_object
from tqdm.auto import tqdm

from transformers_glip import GLIPForGrounding, GLIPImageProcessor, GLIPProcessor
from transformers_glip.evaluation.suite import (
    compute_dataset_metrics,
    load_evaluation_dataset,
    merge_process_predictions,
    model_predictor,
    predict_samples,
    read_suite_config,
    split_for_process,
    suite_summary,
    write_evaluation_report,
)
from transformers_glip.launch_glip import check_distributed_launch


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="folder of a saved GLIPForGrounding + GLIPProcessor")
    data = parser.add_mutually_exclusive_group(required=True)
    data.add_argument("--coco", nargs=2, metavar=("ANNOTATIONS", "IMAGE_DIR"), help="COCO json + image folder")
    data.add_argument("--lvis", nargs=2, metavar=("ANNOTATIONS", "IMAGE_DIR"), help="LVIS json + image folder")
    data.add_argument("--flickr", nargs=2, metavar=("MDETR_JSON", "IMAGE_DIR"), help="MDETR Flickr30K json + images")
    data.add_argument("--suite", metavar="SUITE_YAML", help="ODinW-style list of COCO datasets")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--batch_size", type=int, default=1, help="images per forward (same padded size only)")
    parser.add_argument("--max_images", type=int, default=None, help="only the first N images of each dataset")
    parser.add_argument("--min_size", type=int, default=None, help="override the image processor's short side")
    parser.add_argument("--max_size", type=int, default=None, help="override the image processor's long side")
    parser.add_argument("--lvis_standard_ap", action="store_true", help="LVIS: top 300 per image, not FixedAP")
    parser.add_argument("--cpu", action="store_true", help="run on CPU even when an accelerator is present")
    arguments = parser.parse_args(argv)
    for name in ("batch_size", "max_images", "min_size", "max_size"):
        value = getattr(arguments, name)
        if value is not None and value < 1:
            parser.error(f"--{name} must be a positive integer, got {value}")
    return arguments


def load_model(arguments, device):
    model = GLIPForGrounding.from_pretrained(arguments.model).eval().to(device)
    processor = GLIPProcessor.from_pretrained(arguments.model)
    if arguments.min_size is not None or arguments.max_size is not None:
        saved = processor.image_processor
        image_processor = GLIPImageProcessor(
            min_size=arguments.min_size or saved.min_size,
            max_size=arguments.max_size or saved.max_size,
            size_divisibility=saved.size_divisibility,
            image_mean=saved.image_mean,
            image_std=saved.image_std,
        )
        processor = GLIPProcessor(
            image_processor, processor.tokenizer, max_text_length=processor.max_length, chunk_size=processor.chunk_size
        )
    return model, processor


def datasets_to_evaluate(arguments):
    if arguments.suite:
        return [
            load_evaluation_dataset(
                "coco",
                entry.annotation_file,
                entry.image_dir,
                name=entry.name,
                prompt_overrides=entry.prompts,
                max_images=arguments.max_images,
            )
            for entry in read_suite_config(arguments.suite)
        ]
    task = next(name for name in ("coco", "lvis", "flickr") if getattr(arguments, name))
    annotation_file, image_dir = getattr(arguments, task)
    return [load_evaluation_dataset(task, annotation_file, image_dir, max_images=arguments.max_images)]


def main(argv=None) -> dict | None:
    arguments = parse_arguments(argv)
    accelerator = Accelerator(cpu=arguments.cpu)
    check_distributed_launch(accelerator.num_processes, accelerator.distributed_type)
    try:
        datasets = datasets_to_evaluate(arguments)
        model, processor = load_model(arguments, accelerator.device)
    except (ValueError, OSError) as error:
        sys.exit(f"evaluate.py: error: {error}")
    predictor = model_predictor(model, processor, batch_size=arguments.batch_size)
    results = {}
    for dataset in datasets:
        share = split_for_process(dataset.samples, accelerator.process_index, accelerator.num_processes)
        # Quiet when stderr is not a terminal (logs, CI); one bar, on the main process.
        with tqdm(total=len(share), desc=dataset.name, disable=not accelerator.is_local_main_process or None) as bar:
            predictions = predict_samples(predictor, dataset, share, arguments.batch_size, progress=bar.update)
        gathered = gather_object(predictions)
        if accelerator.is_main_process:
            ordered = merge_process_predictions(gathered, dataset.samples)
            metrics = compute_dataset_metrics(dataset, ordered, lvis_fixed_ap=not arguments.lvis_standard_ap)
            results[dataset.name] = {"task": dataset.task, "num_samples": len(ordered), "metrics": metrics}
    summary = None
    if accelerator.is_main_process:
        summary = {"model": arguments.model, "num_processes": accelerator.num_processes, "datasets": results}
        if arguments.suite:
            summary["suite"] = suite_summary({name: entry["metrics"] for name, entry in results.items()})
        paths = write_evaluation_report(arguments.output_dir, summary)
        accelerator.print(open(paths["markdown"], encoding="utf-8").read())
    # Every process ends here together and tears the process group down: a gloo group left to the interpreter's
    # exit was seen to abort a process ("terminate called without an active exception") on a loaded machine.
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary


if __name__ == "__main__":
    main()
