"""The training stream: mixing, shuffling, splitting across processes, exact resume, and the skip counts.

[`GLIPTrainingStream`] mixes sources with ratios (`datasets.interleave_datasets`, seeded), shuffles with a buffer,
splits the stream across processes with `datasets.distributed.split_dataset_by_node` (so the DataLoader must NOT
also be sharded by Accelerate: don't pass it to `accelerator.prepare`, or use `dispatch_batches=False` without
`split_dataset_by_node` -- never both), and applies the training transform
(`transformers_glip.data.transform.GLIPTrainingTransform`) to every record.

Exact resume: the stream position is `(epoch, records consumed in that epoch)` on each process. Every sample
carries the position right after it, so a training loop stores the `stream_state` of the last batch it trained on
and a new stream restores it with `load_state_dict`; iteration then re-opens the same deterministic stream (fixed
seeds) and skips the consumed records without decoding them. Per-sample randomness (scale, flip, negatives)
comes from a generator seeded by `(seed, epoch, position, sample_id)`, so a resumed run sees exactly the samples,
prompts and augmentations of an uninterrupted one. (`datasets`' own `state_dict()` is not used: it loses the
shuffle buffer on resume.) Exactness holds for `DataLoader(num_workers=0 or 1)`; with more workers each worker
would own part of the stream, which the single position cannot describe, so the stream refuses to run there.

No silent endless loop: a full pass over this process's part of the stream (an epoch, started from its beginning)
that yields no sample at all -- every record was skipped -- raises a `RuntimeError` with the skip counts and example
records. A stream with some valid records always yields one per epoch, so this cannot trigger on usable data (an
epoch resumed in its middle is not checked: its first part was consumed before the resume). A source of which a
full epoch yielded nothing, while others did, gets a warning with the same counts.
"""

from __future__ import annotations

import copy
import itertools
import random
from collections.abc import Callable, Iterator, Sequence

import torch
from transformers.utils import logging

from .records import GroundingSource

logger = logging.get_logger(__name__)

__all__ = ["STOPPING_STRATEGIES", "GLIPTrainingStream", "SkippedRecordCounter"]

# `datasets.interleave_datasets` strategies.
STOPPING_STRATEGIES = ("first_exhausted", "all_exhausted", "all_exhausted_without_replacement")


class SkippedRecordCounter:
    """Counts records skipped as corrupt/unusable and boxes dropped by filters, with a few examples per reason
    (`"<sample id> (<what was wrong>)"`).

    The counts travel inside every sample's `stream_state`, so they survive resumes and are available in the main
    process even when a DataLoader worker runs the stream. `summary()` gives a one-line report for logs.
    """

    max_examples = 5
    max_detail_length = 200  # a record's detail quotes the bad value; a long one is cut

    def __init__(self):
        self.records_seen = 0
        self.skipped: dict[str, int] = {}
        self.dropped_boxes: dict[str, int] = {}
        self.examples: dict[str, list[str]] = {}

    def skip(self, reason: str, sample_id: str, detail: str = "") -> None:
        """Count one skipped record (`detail`, e.g. `"HTTP Error 404: Not Found"`, is kept with the first examples)."""
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        examples = self.examples.setdefault(reason, [])
        if len(examples) < self.max_examples:
            detail = detail if len(detail) <= self.max_detail_length else detail[: self.max_detail_length] + "..."
            examples.append(f"{sample_id} ({detail})" if detail else sample_id)

    def drop_boxes(self, reason: str, count: int) -> None:
        """Count `count` boxes dropped from a kept record."""
        if count > 0:
            self.dropped_boxes[reason] = self.dropped_boxes.get(reason, 0) + count

    @property
    def num_skipped(self) -> int:
        return sum(self.skipped.values())

    def state_dict(self) -> dict:
        return copy.deepcopy(
            {
                "records_seen": self.records_seen,
                "skipped": self.skipped,
                "dropped_boxes": self.dropped_boxes,
                "examples": self.examples,
            }
        )

    def load_state_dict(self, state: dict) -> None:
        state = copy.deepcopy(state)
        self.records_seen = int(state["records_seen"])
        self.skipped = dict(state["skipped"])
        self.dropped_boxes = dict(state["dropped_boxes"])
        self.examples = {reason: list(ids) for reason, ids in state.get("examples", {}).items()}

    @classmethod
    def from_state_dict(cls, state: dict) -> SkippedRecordCounter:
        counter = cls()
        counter.load_state_dict(state)
        return counter

    def summary(self) -> str:
        skipped = ", ".join(f"{reason}={count}" for reason, count in sorted(self.skipped.items())) or "none"
        dropped = ", ".join(f"{reason}={count}" for reason, count in sorted(self.dropped_boxes.items())) or "none"
        return f"records seen {self.records_seen}, skipped {self.num_skipped} ({skipped}); boxes dropped: {dropped}"

    def example_report(self) -> str:
        """The kept examples, one reason per line (`  reason: id (detail); id (detail)`)."""
        return "\n".join(f"  {reason}: {'; '.join(ids)}" for reason, ids in sorted(self.examples.items()))


# (record, source, generator, counter) -> sample, or None when the record is skipped (and counted).
TransformFunction = Callable[[dict, GroundingSource, random.Random, SkippedRecordCounter], "dict | None"]


class GLIPTrainingStream(torch.utils.data.IterableDataset):
    """An endless (or `max_epochs`-long) stream of training samples from one or more sources.

    Args:
        sources: The [`GroundingSource`]s to mix.
        transform: The `GLIPTrainingTransform` (any callable `(record, source, rng, counter) -> sample | None`).
        probabilities: Mixing ratios (one per source, normalised); `None` alternates sources.
        seed: Seeds the source choice, the shuffle and every sample's augmentation/negative sampling.
        shuffle_buffer_size: Size of the 🤗 datasets shuffle buffer (0 disables shuffling, also of shard order).
        rank / world_size: This process and the number of processes; the stream is split with
            `datasets.distributed.split_dataset_by_node` (whole shards per process when the shard count divides
            `world_size`, otherwise every `world_size`-th record).
        max_epochs: Stop after this many passes (`None`: endless, epochs advance automatically).
        stopping_strategy: `interleave_datasets` strategy; `"all_exhausted"` ends an epoch once every source has
            been seen completely (smaller sources are oversampled).

    Raises:
        ValueError / TypeError: an argument of the wrong type or out of range (checked once, here).
        RuntimeError (while iterating): the stream is empty, or a whole epoch yielded no sample (every record was
            skipped; the message lists the skip counts and examples), or `DataLoader(num_workers > 1)`.
    """

    def __init__(
        self,
        sources: Sequence[GroundingSource],
        transform: TransformFunction,
        probabilities: Sequence[float] | None = None,
        seed: int = 0,
        shuffle_buffer_size: int = 1000,
        rank: int = 0,
        world_size: int = 1,
        max_epochs: int | None = None,
        stopping_strategy: str = "all_exhausted",
    ):
        from datasets import interleave_datasets
        from datasets.distributed import split_dataset_by_node

        super().__init__()
        _check_arguments(
            sources, transform, seed, shuffle_buffer_size, rank, world_size, max_epochs, stopping_strategy
        )
        names = [source.name for source in sources]
        if probabilities is not None:
            probabilities = [float(value) for value in probabilities]
            if len(probabilities) != len(sources) or not all(0 <= value < float("inf") for value in probabilities):
                raise ValueError(f"Need one non-negative ratio per source, got {probabilities} for {names}.")
            total = sum(probabilities)
            if total <= 0:
                raise ValueError(f"The mixing ratios {probabilities} of {names} sum to 0; give a source a ratio > 0.")
            probabilities = [value / total for value in probabilities]
        self.sources = {source.name: source for source in sources}
        self.transform = transform
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.max_epochs = max_epochs
        datasets = [source.dataset for source in sources]
        if len(datasets) == 1:
            dataset = datasets[0]
        else:
            dataset = interleave_datasets(
                datasets, probabilities=probabilities, seed=seed, stopping_strategy=stopping_strategy
            )
        if shuffle_buffer_size > 0:
            dataset = dataset.shuffle(seed=seed, buffer_size=shuffle_buffer_size)
        if world_size > 1:
            dataset = split_dataset_by_node(dataset, rank=rank, world_size=world_size)
        self.dataset = dataset
        self.epoch = 0
        self.records_consumed = 0
        self.counter = SkippedRecordCounter()

    def set_epoch(self, epoch: int) -> None:
        """Start (the next iteration) at the beginning of `epoch`; the shuffle order depends on the epoch."""
        self.epoch = epoch
        self.records_consumed = 0

    def state_dict(self) -> dict:
        """Position of this process: `{"epoch", "records_consumed", "counter", "seed", "rank", "world_size"}`."""
        return {
            "epoch": self.epoch,
            "records_consumed": self.records_consumed,
            "counter": self.counter.state_dict(),
            "seed": self.seed,
            "rank": self.rank,
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue right after the position in `state` (usually the `stream_state` of the last trained batch)."""
        for key in ("seed", "rank", "world_size"):
            if state.get(key, getattr(self, key)) != getattr(self, key):
                raise ValueError(
                    f"Cannot resume a stream with {key}={state[key]} as {key}={getattr(self, key)}: the record order "
                    "would differ."
                )
        self.epoch = int(state["epoch"])
        self.records_consumed = int(state["records_consumed"])
        self.counter.load_state_dict(state["counter"])

    def __iter__(self) -> Iterator[dict]:
        worker = torch.utils.data.get_worker_info()
        if worker is not None and worker.num_workers > 1:
            raise RuntimeError(
                "GLIPTrainingStream keeps one exact stream position, so it runs in the main process or in a single "
                f"DataLoader worker (num_workers <= 1); got num_workers={worker.num_workers}."
            )
        epoch, skip = self.epoch, self.records_consumed
        while self.max_epochs is None or epoch < self.max_epochs:
            self.dataset.set_epoch(epoch)
            position = skip
            records_per_source: dict[str, int] = {}
            samples_per_source: dict[str, int] = {}
            for record in itertools.islice(iter(self.dataset), skip, None):
                position += 1
                rng = random.Random(f"{self.seed}:{self.rank}:{epoch}:{position}:{record['sample_id']}")
                name = record["source"]
                sample = self.transform(record, self.sources[name], rng, self.counter)
                self.epoch, self.records_consumed = epoch, position
                records_per_source[name] = records_per_source.get(name, 0) + 1
                if sample is not None:
                    samples_per_source[name] = samples_per_source.get(name, 0) + 1
                    sample["stream_state"] = self.state_dict()
                    yield sample
            if position == 0:
                raise RuntimeError(f"The training stream is empty on process {self.rank} (epoch {epoch}).")
            if skip == 0:  # a full epoch: check that it trained on something
                self._check_epoch(epoch, position, records_per_source, samples_per_source)
            epoch, skip = epoch + 1, 0
            self.epoch, self.records_consumed = epoch, 0

    def _check_epoch(self, epoch: int, num_records: int, records_per_source: dict, samples_per_source: dict) -> None:
        if not samples_per_source:
            raise RuntimeError(
                f"Every one of the {num_records} records of epoch {epoch} on process {self.rank} was skipped, so "
                f"training would wait forever for a sample. Counts so far: {self.counter.summary()}. Examples:\n"
                f"{self.counter.example_report()}\nFix the data or the paths (see the reasons above; e.g. the image "
                "folder of the annotation file), or remove the source."
            )
        for name, count in records_per_source.items():
            if not samples_per_source.get(name):
                logger.warning(
                    f"Source {name!r}: all {count} of its records in epoch {epoch} on process {self.rank} were "
                    f"skipped; it contributes nothing. Counts (all sources): {self.counter.summary()}. Examples:\n"
                    f"{self.counter.example_report()}"
                )


def _check_arguments(sources, transform, seed, shuffle_buffer_size, rank, world_size, max_epochs, stopping_strategy):
    """The constructor's argument checks (a clear error naming the argument and the expected value)."""
    if not isinstance(sources, Sequence) or not sources:
        raise ValueError(f"Need at least one source (a list of GroundingSource), got {sources!r}.")
    for index, source in enumerate(sources):
        if not isinstance(source, GroundingSource):
            raise TypeError(
                f"sources[{index}] must be a GroundingSource (from a reader), got {type(source).__name__}."
            )
    names = [source.name for source in sources]
    if len(set(names)) != len(names):
        raise ValueError(f"Source names must be unique, got {names}.")
    if not callable(transform):
        raise TypeError(f"transform must be a GLIPTrainingTransform (callable), got {type(transform).__name__}.")
    integers = (
        ("seed", seed, 0),
        ("shuffle_buffer_size", shuffle_buffer_size, 0),
        ("rank", rank, 0),
        ("world_size", world_size, 1),
    )
    for name, value, minimum in integers:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    if rank >= world_size:
        raise ValueError(f"rank must be < world_size, got rank={rank}, world_size={world_size}.")
    if max_epochs is not None and (isinstance(max_epochs, bool) or not isinstance(max_epochs, int) or max_epochs < 1):
        raise ValueError(f"max_epochs must be None (endless) or an integer >= 1, got {max_epochs!r}.")
    if stopping_strategy not in STOPPING_STRATEGIES:
        raise ValueError(f"stopping_strategy must be one of {STOPPING_STRATEGIES}, got {stopping_strategy!r}.")
