#!/usr/bin/env python
"""Fine-tune a GLIP on a COCO detection dataset in one of the paper's transfer modes, with 🤗 Accelerate.

    python examples/finetune.py --model_name_or_path out/demo --mode prompt_tuning --shots 3 --shot_seed 3 \\
        --train_annotation_file train.json --train_image_dir images/ \\
        --eval_annotation_file val.json --eval_image_dir images/ --output_dir out/ft

Modes (`transformers_glip.finetuning_glip.apply_tuning_mode`, official `tools/finetune.py::tuning_highlevel_override`):
`full`, `linear_probe` (official `linear_prob`) and `prompt_tuning` (official `language_prompt_v2`: zero-initialised
prompt offsets, LR 0.05 and weight decay 0.25 by default). Frozen modules stay in eval mode. Few-shot data
(`--shots K --shot_seed S`, 0 shots = all data) is the official `--custom_shot_and_epoch_and_general_copy` sampling
(`sample_few_shot_coco`), written to `train_few_shot.json` in the output folder; without `--max_train_steps` the run
lasts the official schedule (`OFFICIAL_FEW_SHOT_SCHEDULES`: e.g. 3 shots = 200 epochs of 4 copies). Optimizer
groups are the official `make_optimizer` ones (`tuning_parameter_groups`), the LR schedule the warmup multi-step
schedule of `examples/pretrain.py`. The model, processor, `loss_history.json` and `summary.json` (with COCO AP when
an evaluation json is given) are saved in `--output_dir`.
"""

import argparse
import importlib.util
import json
import logging
import math
import os

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from transformers_glip import GLIPForGrounding  # (the import registers GLIP)
from transformers_glip.data import (
    GLIPTrainingCollator,
    GLIPTrainingStream,
    GLIPTrainingTransform,
    coco_detection_source,
)
from transformers_glip.evaluation.coco import evaluate_coco
from transformers_glip.finetuning_glip import (
    OFFICIAL_FEW_SHOT_SCHEDULES,
    TUNING_DEFAULTS,
    apply_tuning_mode,
    normalize_tuning_mode,
    sample_few_shot_coco,
    tuning_parameter_groups,
)
from transformers_glip.launch_glip import check_distributed_launch
from transformers_glip.model_card_glip import evaluation_summary_from_training, publish_folder
from transformers_glip.processing_glip import GLIPProcessor

logger = get_logger(__name__)


def load_pretrain_example():
    """`examples/pretrain.py` as a module (its LR schedule and Hub-argument checks are reused)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pretrain.py")
    specification = importlib.util.spec_from_file_location("pretrain_example", path)
    module = importlib.util.module_from_spec(specification)
    specification.loader.exec_module(module)
    return module


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_name_or_path", required=True, help="Saved GLIPForGrounding + GLIPProcessor folder.")
    parser.add_argument("--mode", default="full", help="full | linear_probe | prompt_tuning (or official names).")
    parser.add_argument("--train_annotation_file", required=True, help="COCO detection json of the training set.")
    parser.add_argument("--train_image_dir", required=True)
    parser.add_argument("--eval_annotation_file", help="COCO json for AP evaluation after training.")
    parser.add_argument("--eval_image_dir")
    parser.add_argument("--shots", type=int, default=0, help="Images per category (official few-shot); 0 = all.")
    parser.add_argument("--shot_seed", type=int, default=3, help="Official DATASETS.SHUFFLE_SEED (README: 3).")
    parser.add_argument("--output_dir", default="out/finetune")
    parser.add_argument("--max_train_steps", type=int, help="Default: the official epochs x copies for --shots.")
    parser.add_argument("--per_device_train_batch_size", type=int, default=4)
    parser.add_argument("--learning_rate", type=float, help="Default per mode (TUNING_DEFAULTS).")
    parser.add_argument("--text_learning_rate", type=float)
    parser.add_argument("--weight_decay", type=float)
    parser.add_argument("--bias_lr_factor", type=float)
    parser.add_argument("--prompt_tuning_length", type=int, help="Rows of new prompt offsets (official 1000).")
    parser.add_argument("--warmup_steps", type=int, default=0)
    parser.add_argument("--warmup_factor", type=float, default=0.001)
    parser.add_argument("--lr_milestones", type=float, nargs="*", default=[0.67, 0.89])
    parser.add_argument("--lr_gamma", type=float, default=0.1)
    parser.add_argument("--max_grad_norm", type=float, default=1.0)
    parser.add_argument("--shuffle_buffer_size", type=int, default=100)
    parser.add_argument("--mixed_precision", choices=["no", "fp16", "bf16"], default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--push_to_hub", action="store_true", help="Upload the final --output_dir to the Hub.")
    parser.add_argument("--hub_model_id", help="Hub repository for --push_to_hub (default: the --output_dir name).")
    parser.add_argument("--hub_token", help="Hub token for --push_to_hub (default: the logged-in one).")
    args = parser.parse_args(argv)
    load_pretrain_example().check_hub_arguments(parser, args)  # the same Hub options and checks
    try:
        args.mode = normalize_tuning_mode(args.mode)
    except ValueError as error:
        parser.error(f"--mode: {error}")
    for name in ("train_annotation_file", "eval_annotation_file"):
        path = getattr(args, name)
        if path is not None and not os.path.isfile(path):
            parser.error(f"--{name} {path}: no such file.")
    if (args.eval_annotation_file is None) != (args.eval_image_dir is None):
        parser.error("--eval_annotation_file and --eval_image_dir go together.")
    if args.shots < 0:
        parser.error(f"--shots must be >= 0 (0 = all data), got {args.shots}.")
    if args.max_train_steps is not None and args.max_train_steps < 1:
        parser.error(f"--max_train_steps must be >= 1, got {args.max_train_steps}.")
    if args.prompt_tuning_length is not None and args.mode != "prompt_tuning":
        parser.error("--prompt_tuning_length only applies to --mode prompt_tuning.")
    for key, value in TUNING_DEFAULTS[args.mode].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def push_output_to_hub(args, summary: dict) -> None:
    """Upload `--output_dir` (model, processor, remote code, metrics; a model card as README.md) in one commit."""
    hub_model_id = args.hub_model_id or os.path.basename(os.path.normpath(args.output_dir))
    base_model = args.model_name_or_path
    url = publish_folder(
        args.output_dir,
        hub_model_id,
        token=args.hub_token,
        commit_message="End of training",
        base_model=base_model if base_model and not os.path.isdir(base_model) else None,
        description=f"This model was fine-tuned (`--mode {args.mode}`) with `examples/finetune.py` of "
        f"transformers-glip ({summary['steps']} steps).",
        evaluation_summary=evaluation_summary_from_training(
            summary, os.path.basename(args.eval_annotation_file or "evaluation")
        ),
    )
    logger.info(f"Uploaded {args.output_dir} to {url}")


def main(argv=None):
    args = parse_args(argv)
    accelerator = Accelerator(mixed_precision=args.mixed_precision)
    check_distributed_launch(accelerator.num_processes, accelerator.distributed_type)
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    set_seed(args.seed)
    train_file = args.train_annotation_file
    if args.shots > 0:
        train_file = os.path.join(args.output_dir, "train_few_shot.json")
        if accelerator.is_main_process:
            os.makedirs(args.output_dir, exist_ok=True)
            subset = sample_few_shot_coco(args.train_annotation_file, args.shots, args.shot_seed, train_file)
            logger.info(f"{args.shots}-shot subset (seed {args.shot_seed}): {len(subset['images'])} images")
    accelerator.wait_for_everyone()
    with open(train_file, encoding="utf-8") as handle:
        num_images = len(json.load(handle)["images"])
    if args.max_train_steps is None:
        epochs, copies = OFFICIAL_FEW_SHOT_SCHEDULES.get(args.shots, OFFICIAL_FEW_SHOT_SCHEDULES[0])
        images_per_step = args.per_device_train_batch_size * accelerator.num_processes
        args.max_train_steps = max(1, math.ceil(epochs * copies * num_images / images_per_step))

    model = GLIPForGrounding.from_pretrained(args.model_name_or_path)
    processor = GLIPProcessor.from_pretrained(args.model_name_or_path)
    trainable = apply_tuning_mode(model, args.mode, prompt_tuning_length=args.prompt_tuning_length)
    logger.info(f"mode {args.mode}: {len(trainable)} trainable tensors, {args.max_train_steps} steps")

    max_length = processor.max_text_length
    transform = GLIPTrainingTransform(processor.tokenizer, processor.image_processor, max_length=max_length)
    stream = GLIPTrainingStream(
        [coco_detection_source(train_file, args.train_image_dir)],
        transform,
        seed=args.seed,
        shuffle_buffer_size=args.shuffle_buffer_size,
        rank=accelerator.process_index,
        world_size=accelerator.num_processes,
    )
    train_dataloader = torch.utils.data.DataLoader(
        stream,
        batch_size=args.per_device_train_batch_size,
        collate_fn=GLIPTrainingCollator(size_divisibility=processor.image_processor.size_divisibility),
        generator=torch.Generator().manual_seed(args.seed),
    )
    groups = tuning_parameter_groups(
        model, args.learning_rate, args.weight_decay, args.text_learning_rate, args.bias_lr_factor
    )
    optimizer = torch.optim.AdamW([{key: value for key, value in group.items() if key != "name"} for group in groups])
    model, optimizer = accelerator.prepare(model, optimizer)
    lr_scheduler = load_pretrain_example().build_lr_scheduler(optimizer, args)

    model.train()  # frozen modules stay in eval mode (apply_tuning_mode)
    history = []
    batches = iter(train_dataloader)
    for step in tqdm(range(1, args.max_train_steps + 1), disable=not accelerator.is_local_main_process):
        batch = next(batches)
        outputs = model(
            pixel_values=batch["pixel_values"].to(accelerator.device),
            input_ids=batch["input_ids"].to(accelerator.device),
            attention_mask=batch["attention_mask"].to(accelerator.device),
            labels=[{key: value.to(accelerator.device) for key, value in label.items()} for label in batch["labels"]],
        )
        accelerator.backward(outputs.loss)
        accelerator.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], args.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad()
        lr_scheduler.step()
        history.append({"step": step, "loss": float(outputs.loss.detach())})

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        final_model = accelerator.unwrap_model(model)
        final_model.eval()
        os.makedirs(args.output_dir, exist_ok=True)
        final_model.save_pretrained(args.output_dir)
        processor.save_pretrained(args.output_dir)
        with open(os.path.join(args.output_dir, "loss_history.json"), "w") as handle:
            json.dump(history, handle)
        summary = {
            "mode": args.mode,
            "shots": args.shots,
            "shot_seed": args.shot_seed,
            "train_images": num_images,
            "steps": args.max_train_steps,
            "trainable_parameters": trainable,
        }
        if args.eval_annotation_file:
            metrics = evaluate_coco(final_model, processor, args.eval_annotation_file, args.eval_image_dir)
            summary.update({key: value for key, value in metrics.items() if isinstance(value, (int, float))})
            logger.info(f"AP50 = {metrics['ap50']:.3f} (AP = {metrics['ap']:.3f})")
        with open(os.path.join(args.output_dir, "summary.json"), "w") as handle:
            json.dump(summary, handle, indent=2)
        print(json.dumps({key: value for key, value in summary.items() if key != "trainable_parameters"}))

        if args.push_to_hub:  # as transformers' example scripts do: the final output folder, with a model card
            push_output_to_hub(args, summary)


if __name__ == "__main__":
    main()
