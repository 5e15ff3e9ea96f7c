"""Text side of GLIP: prompts, character spans -> token positive maps, and the `GLIPProcessor`.

Official sources (microsoft/GLIP): `maskrcnn_benchmark/data/datasets/modulated_coco.py::create_positive_map`,
`maskrcnn_benchmark/engine/inference.py::{create_queries_and_maps, create_positive_dict, clean_name, chunks}`,
`maskrcnn_benchmark/engine/predictor_glip.py::{find_noun_phrases, run_ner}`.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers.image_processing_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin
from transformers.tokenization_utils_base import PreTrainedTokenizerBase
from transformers.utils import logging

from .configuration_glip import GLIPConfig
from .hub_glip import add_remote_code_files, pop_hub_arguments, push_folder_to_hub
from .image_processing_glip import GLIPImageProcessor
from .postprocessing_glip import (
    CHUNK_MERGE_MODES,
    DEFAULT_SCORE_THRESHOLD,
    as_size_pairs,
    check_finite_outputs,
    check_score_threshold,
    merge_chunk_detections,
    output_field,
    post_process_grounded_detections,
    post_processing_arguments,
)

logger = logging.get_logger(__name__)

__all__ = [
    "DETECTION_PROMPT_SEPARATOR",
    "GLIPProcessor",
    "GLIPLabelChunk",
    "build_detection_prompt",
    "build_label_chunks",
    "clean_label_name",
    "create_positive_map",
    "find_noun_phrases",
]


def _token_at(encoding, character_index: int) -> int | None:
    """Token index covering `character_index` in the first sequence of `encoding` (None for whitespace/outside)."""
    if character_index < 0:
        return None
    return encoding.char_to_token(0, character_index)


def create_positive_map(
    encoding,
    spans_per_entity: Sequence[Sequence[tuple[int, int]]],
    max_length: int = 256,
) -> torch.FloatTensor:
    """Binary map from entities (lists of character spans) to the tokens that cover them.

    Reproduces `modulated_coco.py::create_positive_map` of the official code, without the row normalisation
    (which never reaches a computation, see the spec §3.2): for each span `(begin, end)` (end exclusive),
    `first = char_to_token(begin)`, falling back to `begin + 1` then `begin + 2`; `last = char_to_token(end - 1)`,
    falling back to `end - 2` then `end - 3`; if either is still `None` the span is skipped; otherwise tokens
    `first ... last` (inclusive) are marked. Token indices at or beyond `max_length` are dropped, as the official
    slice of a 256-wide row does.

    Args:
        encoding (`BatchEncoding`):
            Output of a *fast* tokenizer (offsets available) called on ONE string (batched or not; padding on the
            right does not change the indices). Token index 0 is `[CLS]`.
        spans_per_entity (`list[list[tuple[int, int]]]`):
            For each entity, its `[begin, end)` character spans in the tokenized string. An entity with no span
            (or with spans that all fail to map) gets an all-zero row.
        max_length (`int`, *optional*, defaults to 256):
            Width of the map (the padded token length of the model).

    Returns:
        `torch.FloatTensor` of shape `(num_entities, max_length)` with values in {0, 1}.
    """
    if not hasattr(encoding, "char_to_token"):
        raise TypeError(
            f"`encoding` must be the output of a fast tokenizer (with `char_to_token`), got {type(encoding).__name__}."
        )
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
        raise ValueError(f"`max_length` must be a positive int, got {max_length!r}.")
    if isinstance(spans_per_entity, (str, bytes)) or not isinstance(spans_per_entity, Sequence):
        raise TypeError(
            f"`spans_per_entity` must be a list (one entry per entity) of lists of (begin, end) spans, got "
            f"{type(spans_per_entity).__name__}."
        )
    positive_map = torch.zeros((len(spans_per_entity), max_length), dtype=torch.float32)
    for entity_index, spans in enumerate(spans_per_entity):
        if isinstance(spans, (str, bytes)) or not isinstance(spans, Sequence):
            raise TypeError(
                f"`spans_per_entity[{entity_index}]` must be a list of (begin, end) spans, got {type(spans).__name__}."
            )
        for span in spans:
            if (
                isinstance(span, (str, bytes))
                or not isinstance(span, Sequence)
                or len(span) != 2
                or not all(isinstance(value, numbers.Integral) and not isinstance(value, bool) for value in span)
            ):
                raise ValueError(
                    f"`spans_per_entity[{entity_index}]` holds {span!r}; every span must be a pair of ints "
                    "(begin, end) with end exclusive."
                )
            begin, end = int(span[0]), int(span[1])
            if begin < 0 or end <= begin:
                raise ValueError(
                    f"`spans_per_entity[{entity_index}]` holds the span {tuple(span)}; spans need 0 <= begin < end."
                )
            first_token = _token_at(encoding, begin)
            if first_token is None:
                first_token = _token_at(encoding, begin + 1)
                if first_token is None:
                    first_token = _token_at(encoding, begin + 2)
            last_token = _token_at(encoding, end - 1)
            if last_token is None:
                last_token = _token_at(encoding, end - 2)
                if last_token is None:
                    last_token = _token_at(encoding, end - 3)
            if first_token is None or last_token is None:
                continue
            positive_map[entity_index, first_token : last_token + 1] = 1.0
    return positive_map


# ---------------------------------------------------------------------------------------------------------------
# Detection prompts from label lists (`engine/inference.py::create_queries_and_maps`, spec §3.3)
# ---------------------------------------------------------------------------------------------------------------

# `DATASETS.SEPARATION_TOKENS` of the GLIP-T / GLIP-L configs: put BETWEEN names, never after the last one.
DETECTION_PROMPT_SEPARATOR = ". "


def clean_label_name(name: str) -> str:
    """Official `clean_name`: drop the (greedy) parenthesised part, `_` -> space, one pass of double -> single space.

    Leading/trailing spaces are kept (the positive map's character fallbacks handle them), e.g.
    `"bow_(weapon)"` -> `"bow "`.
    """
    name = re.sub(r"\(.*\)", "", name)
    name = re.sub(r"_", " ", name)
    return re.sub(r"  ", " ", name)


def _validate_label_list(labels: Any, name: str) -> list[str]:
    if isinstance(labels, (str, bytes)) or not isinstance(labels, Sequence):
        raise TypeError(f"`{name}` must be a list of label strings, got {type(labels).__name__}.")
    if len(labels) == 0:
        raise ValueError(f"`{name}` is an empty label list; pass at least one label.")
    for index, label in enumerate(labels):
        if not isinstance(label, str):
            raise TypeError(f"`{name}[{index}]` must be a string, got {type(label).__name__} ({label!r}).")
        if not clean_label_name(label).strip():
            raise ValueError(f"`{name}[{index}]` = {label!r} is empty (after removing parentheses/underscores).")
    return list(labels)


def build_detection_prompt(
    labels: Sequence[str], separator: str = DETECTION_PROMPT_SEPARATOR
) -> tuple[str, list[list[tuple[int, int]]]]:
    """The caption and per-label character spans the official detection evaluation builds from a label list.

    Every label goes through [`clean_label_name`]; the cleaned names are joined with `separator` (no trailing
    separator, no prefix, no lower-casing); label `k`'s span is exactly its cleaned name.
    Example: `["red circle", "person"]` -> `("red circle. person", [[(0, 10)], [(12, 18)]])`.
    """
    labels = _validate_label_list(labels, "labels")
    caption = ""
    spans = []
    for index, label in enumerate(labels):
        start = len(caption)
        caption += clean_label_name(label)
        spans.append([(start, len(caption))])
        if index != len(labels) - 1:
            caption += separator
    return caption, spans


@dataclass
class GLIPLabelChunk:
    """One prompt of a chunked large vocabulary.

    Attributes:
        label_indices (`list[int]`): global (0-based) indices of the labels of this chunk, in prompt order.
        labels (`list[str]`): the labels themselves (uncleaned).
        caption (`str`): the official detection prompt of these labels.
        spans (`list[list[tuple[int, int]]]`): character spans of every label in `caption`.
    """

    label_indices: list[int]
    labels: list[str]
    caption: str
    spans: list[list[tuple[int, int]]]


def _count_tokens(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> list[int]:
    """Token counts WITH the special tokens (`[CLS] ... [SEP]`), no truncation."""
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=True, truncation=False)["input_ids"]]


def build_label_chunks(
    labels: Sequence[str],
    tokenizer: PreTrainedTokenizerBase,
    chunk_size: int = 40,
    max_length: int = 256,
) -> list[GLIPLabelChunk]:
    """Split a label list into consecutive prompts of at most `chunk_size` labels that each fit `max_length` tokens.

    Follows the official LVIS evaluation (`TEST.CHUNKED_EVALUATION 40`: consecutive chunks of 40 sorted names,
    `engine/inference.py::chunks`); a chunk whose caption would exceed `max_length` tokens (special tokens
    included) is closed early, so when every 40-label chunk fits the result equals the official chunks.

    Raises:
        `ValueError` if a single label does not fit in `max_length` tokens.
    """
    labels = _validate_label_list(labels, "labels")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"`chunk_size` must be a positive int, got {chunk_size!r}.")
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 3:
        raise ValueError(f"`max_length` must be an int >= 3, got {max_length!r}.")
    # Counts with [CLS]/[SEP]; the separator ". " adds one "." token between names (BERT splits punctuation).
    label_token_counts = [
        count - 2 for count in _count_tokens(tokenizer, [clean_label_name(label) for label in labels])
    ]
    for index, count in enumerate(label_token_counts):
        if count + 2 > max_length:
            raise ValueError(
                f"`labels[{index}]` = {labels[index]!r} has {count} tokens, more than fit in max_length={max_length} "
                "(with [CLS] and [SEP])."
            )
    groups: list[list[int]] = []
    current: list[int] = []
    current_tokens = 2
    for index, count in enumerate(label_token_counts):
        separator_tokens = 1 if current else 0
        if current and (len(current) == chunk_size or current_tokens + separator_tokens + count > max_length):
            groups.append(current)
            current, current_tokens, separator_tokens = [], 2, 0
        current.append(index)
        current_tokens += separator_tokens + count
    groups.append(current)

    chunks = []
    pending = list(groups)
    while pending:
        group = pending.pop(0)
        group_labels = [labels[index] for index in group]
        caption, spans = build_detection_prompt(group_labels)
        if len(group) > 1 and _count_tokens(tokenizer, [caption])[0] > max_length:
            # The additive estimate was wrong for this tokenizer: split the group and retry both halves.
            half = len(group) // 2
            pending[:0] = [group[:half], group[half:]]
            continue
        chunks.append(GLIPLabelChunk(label_indices=list(group), labels=group_labels, caption=caption, spans=spans))
    return chunks


# ---------------------------------------------------------------------------------------------------------------
# Noun phrases of a free caption (replacement for GLIPDemo's NLTK chunker, spec §3.5)
# ---------------------------------------------------------------------------------------------------------------

_WORD_PATTERN = re.compile(r"[A-Za-z0-9]+(?:['\-][A-Za-z0-9]+)*")
_DETERMINERS = frozenset(
    "a an the this that these those some any each every another all both no either neither".split()
)
_BREAK_WORDS = frozenset(
    """
    i me my mine we us our ours you your yours he him his she her hers it its they them their theirs who whom whose
    which what myself yourself himself herself itself ourselves themselves one ones
    in on at by for with about against between among into through during before after above below to from up down
    of off over under near beside besides behind across along around inside outside onto toward towards upon within
    without next than like as via per beneath beyond throughout underneath
    and or but nor so yet if while because although though whereas where when then there here how why whether
    is are was were be been being am has have had having do does did doing can could will would shall should may
    might must not isn't aren't wasn't weren't doesn't don't didn't can't cannot won't
    very too also just only really quite almost even still again ever never always often sometimes
    """.split()
)


def find_noun_phrases(caption: str) -> list[tuple[str, tuple[int, int]]]:
    """Noun-phrase-like chunks of a caption, with their character spans, without NLTK or models.

    The official demo (`predictor_glip.py::find_noun_phrases`) POS-tags the caption with NLTK and keeps the
    grammar `<DT>?<JJ.*>*<NN.*>+`. This offline approximation splits the caption into words and cuts chunks at
    punctuation and at function words (pronouns, prepositions, conjunctions, auxiliaries, frequent adverbs); a
    determiner starts a new chunk and is kept at its front; chunks made of determiners only, and single words
    ending in "ing" without a determiner (mostly verbs: "a man riding a horse"), are dropped. Every occurrence is
    its own entity (as in the demo). Pass explicit `phrase_spans` for exact control.

    Returns:
        `list[(phrase, (begin, end))]` in caption order; `phrase = caption[begin:end]`.
    """
    phrases: list[tuple[str, tuple[int, int]]] = []
    chunk: list[tuple[str, int, int]] = []

    def close_chunk() -> None:
        content = [word for word in chunk if word[0] not in _DETERMINERS]
        has_determiner = chunk and chunk[0][0] in _DETERMINERS
        if content and not (len(content) == 1 and not has_determiner and content[0][0].endswith("ing")):
            begin, end = chunk[0][1], chunk[-1][2]
            phrases.append((caption[begin:end], (begin, end)))
        chunk.clear()

    previous_end = 0
    for match in _WORD_PATTERN.finditer(caption):
        word = match.group(0).lower()
        if caption[previous_end : match.start()].strip():
            close_chunk()  # punctuation between the words
        previous_end = match.end()
        if word in _BREAK_WORDS:
            close_chunk()
        elif word in _DETERMINERS:
            close_chunk()
            chunk.append((word, match.start(), match.end()))
        else:
            chunk.append((word, match.start(), match.end()))
    close_chunk()
    return phrases


# ---------------------------------------------------------------------------------------------------------------
# Processor
# ---------------------------------------------------------------------------------------------------------------


def _validate_spans(spans: Any, name: str, caption: str) -> list[list[tuple[int, int]]]:
    if isinstance(spans, (str, bytes)) or not isinstance(spans, Sequence) or len(spans) == 0:
        raise ValueError(f"`{name}` must be a non-empty list with, per phrase, a list of (begin, end) spans.")
    validated = []
    for phrase_index, phrase_spans in enumerate(spans):
        if isinstance(phrase_spans, (str, bytes)) or not isinstance(phrase_spans, Sequence) or len(phrase_spans) == 0:
            raise ValueError(f"`{name}[{phrase_index}]` must be a non-empty list of (begin, end) spans.")
        # Accept a bare (begin, end) pair for a single-span phrase.
        if len(phrase_spans) == 2 and all(
            isinstance(value, numbers.Integral) and not isinstance(value, bool) for value in phrase_spans
        ):
            phrase_spans = [phrase_spans]
        pairs = []
        for span in phrase_spans:
            if (
                isinstance(span, (str, bytes))
                or not isinstance(span, Sequence)
                or len(span) != 2
                or not all(isinstance(value, numbers.Integral) and not isinstance(value, bool) for value in span)
            ):
                raise ValueError(f"`{name}[{phrase_index}]` holds {span!r}; spans are (begin, end) int pairs.")
            begin, end = int(span[0]), int(span[1])
            if not 0 <= begin < end <= len(caption):
                raise ValueError(
                    f"`{name}[{phrase_index}]` holds the span {(begin, end)}, outside the caption of {len(caption)} "
                    "characters (need 0 <= begin < end <= len(caption))."
                )
            pairs.append((begin, end))
        validated.append(pairs)
    return validated


@dataclass
class _TextEntry:
    """One image's prompt: the caption, the spans of its entities and the entity names."""

    caption: str
    spans: list[list[tuple[int, int]]]
    text_labels: list[str]
    from_label_list: bool


class GLIPProcessor(ProcessorMixin):
    r"""
    Constructs a GLIP processor: a [`GLIPImageProcessor`] plus a BERT tokenizer (`bert-base-uncased`), building the
    official GLIP prompts and positive maps.

    Text inputs (`text=`):
    - a list of labels per image, `[["a cat", "a remote control"], ...]` (a flat list of strings = the labels of
      ONE image): the official detection prompt, cleaned names joined with `". "` (see [`build_detection_prompt`]);
    - a caption string (or a list of captions) with `phrase_spans=` (per phrase, its `(begin, end)` character
      spans; a list of those per caption for a batch);
    - a caption alone: entities are the noun phrases found by [`find_noun_phrases`] (to mix with explicit spans in
      a batch, give `None` for those captions in `phrase_spans`).

    Args:
        image_processor ([`GLIPImageProcessor`]): the image processor.
        tokenizer ([`BertTokenizer`]): a fast BERT tokenizer (offsets are needed for the positive maps).
        max_length (`int`, *optional*, defaults to 256): padded token length (`MODEL.LANGUAGE_BACKBONE.MAX_QUERY_LEN`).
        chunk_size (`int`, *optional*, defaults to 40): labels per prompt for large vocabularies
            (`TEST.CHUNKED_EVALUATION`).
    """

    def __init__(self, image_processor, tokenizer, max_length: int = 256, chunk_size: int = 40):
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 3:
            raise ValueError(f"`max_length` must be an int >= 3, got {max_length!r}.")
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"`chunk_size` must be a positive int, got {chunk_size!r}.")
        if not isinstance(image_processor, GLIPImageProcessor):
            raise TypeError(f"`image_processor` must be a GLIPImageProcessor, got {type(image_processor).__name__}.")
        if not getattr(tokenizer, "is_fast", False):
            raise TypeError("`tokenizer` must be a fast tokenizer (character offsets are needed for positive maps).")
        self.max_length = max_length
        self.chunk_size = chunk_size
        super().__init__(image_processor, tokenizer)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`ProcessorMixin.save_pretrained`, then the `auto_map` entries and `glip_shim.py` for `trust_remote_code`
        loading ([`add_remote_code_files`]); with `push_to_hub=True` the folder is uploaded after they are written."""
        hub_arguments = pop_hub_arguments(save_directory, kwargs)
        result = super().save_pretrained(save_directory, *args, **kwargs)
        add_remote_code_files(save_directory)
        if hub_arguments is not None:
            push_folder_to_hub(save_directory, **hub_arguments)
        return result

    @classmethod
    def _get_arguments_from_pretrained(cls, pretrained_model_name_or_path, processor_dict=None, **kwargs):
        """Load the tokenizer with `AutoTokenizer` and the image processor as a `GLIPImageProcessor` directly, so
        that loading does not depend on `AutoImageProcessor` registrations."""
        subfolder = kwargs.pop("subfolder", "")
        tokenizer = cls._load_tokenizer_from_pretrained(
            "tokenizer", pretrained_model_name_or_path, subfolder=subfolder, **kwargs
        )
        image_processor = GLIPImageProcessor.from_pretrained(
            pretrained_model_name_or_path, subfolder=subfolder, **kwargs
        )
        return [image_processor, tokenizer]

    # ------------------------------------------------------------------ text
    def _text_entries(self, text: Any, phrase_spans: Any) -> list[_TextEntry]:
        """Normalise the accepted `text` / `phrase_spans` layouts into one `_TextEntry` per image."""
        if isinstance(text, str):
            captions, spans_per_caption = [text], [phrase_spans]
        elif isinstance(text, (list, tuple)):
            if len(text) == 0:
                raise ValueError("`text` is empty; pass labels, a caption or a list of them.")
            if all(isinstance(item, str) for item in text):
                if phrase_spans is None:
                    return [self._label_entry(text, "text")]
                captions = list(text)
                if isinstance(phrase_spans, (str, bytes)) or not isinstance(phrase_spans, Sequence):
                    raise TypeError("`phrase_spans` must be a list with one entry (spans or None) per caption.")
                if len(phrase_spans) != len(captions):
                    raise ValueError(
                        f"`phrase_spans` has {len(phrase_spans)} entries for {len(captions)} captions; pass one "
                        "entry (a list of per-phrase spans, or None) per caption."
                    )
                spans_per_caption = list(phrase_spans)
            elif all(isinstance(item, (list, tuple)) for item in text):
                if phrase_spans is not None:
                    raise ValueError("`phrase_spans` only applies to captions, not to label lists.")
                return [self._label_entry(labels, f"text[{index}]") for index, labels in enumerate(text)]
            else:
                raise TypeError(
                    "`text` must be a caption string, a list of labels (strings), a list of captions with "
                    "`phrase_spans`, or a list of label lists; got a list mixing "
                    f"{sorted({type(item).__name__ for item in text})}."
                )
        else:
            raise TypeError(
                f"`text` must be a string, a list of strings or a list of lists of strings, got {type(text).__name__}."
            )
        entries = []
        for index, (caption, spans) in enumerate(zip(captions, spans_per_caption)):
            name = "text" if len(captions) == 1 and isinstance(text, str) else f"text[{index}]"
            if not caption.strip():
                raise ValueError(f"`{name}` is an empty caption.")
            if spans is None:
                phrases = find_noun_phrases(caption)
                if not phrases:
                    raise ValueError(f"`{name}` = {caption!r} has no noun phrase; pass `phrase_spans` explicitly.")
                validated = [[span] for _, span in phrases]
            else:
                spans_name = "phrase_spans" if isinstance(text, str) else f"phrase_spans[{index}]"
                validated = _validate_spans(spans, spans_name, caption)
            text_labels = [" ".join(caption[begin:end] for begin, end in phrase) for phrase in validated]
            entries.append(_TextEntry(caption, validated, text_labels, from_label_list=False))
        return entries

    def _label_entry(self, labels: Any, name: str) -> _TextEntry:
        labels = _validate_label_list(labels, name)
        caption, spans = build_detection_prompt(labels)
        return _TextEntry(caption, spans, list(labels), from_label_list=True)

    def _encode_entries(self, entries: list[_TextEntry], max_length: int) -> dict[str, Any]:
        captions = [entry.caption for entry in entries]
        unpadded = self.tokenizer(captions, add_special_tokens=True, truncation=False)
        for index, (entry, ids) in enumerate(zip(entries, unpadded["input_ids"])):
            if len(ids) <= max_length:
                continue
            if entry.from_label_list:
                label_counts = _count_tokens(self.tokenizer, [clean_label_name(label) for label in entry.text_labels])
                name = "text" if len(entries) == 1 else f"text[{index}]"
                longest = max(range(len(label_counts)), key=label_counts.__getitem__)
                if label_counts[longest] > max_length:
                    raise ValueError(
                        f"`{name}[{longest}]` = {entry.text_labels[longest]!r} has {label_counts[longest] - 2} "
                        f"tokens, more than fit in max_length={max_length}."
                    )
                raise ValueError(
                    f"The {len(entry.text_labels)} labels of `{name}` need {len(ids)} tokens, more than "
                    f"max_length={max_length}; split them with `GLIPProcessor.encode_label_chunks` (or "
                    "`build_label_chunks`) and merge the detections with `post_process_chunked_object_detection`."
                )
            logger.warning(
                f"Caption {index} has {len(ids)} tokens and is truncated to max_length={max_length}; phrases beyond "
                "the cut get no tokens."
            )
        encoding = self.tokenizer(
            captions, max_length=max_length, padding="max_length", truncation=True, return_tensors="pt"
        )
        positive_maps = []
        for index, entry in enumerate(entries):
            single = _SingleSequenceEncoding(unpadded, index)
            positive_maps.append(create_positive_map(single, entry.spans, max_length=max_length))
        max_labels = max(positive_map.shape[0] for positive_map in positive_maps)
        stacked = torch.zeros((len(entries), max_labels, max_length), dtype=torch.float32)
        for index, positive_map in enumerate(positive_maps):
            stacked[index, : positive_map.shape[0]] = positive_map
        return {
            "input_ids": encoding["input_ids"],
            "token_type_ids": torch.zeros_like(encoding["input_ids"]),
            "attention_mask": encoding["attention_mask"],
            "positive_map": stacked,
            "text_labels": [entry.text_labels for entry in entries],
        }

    def __call__(
        self,
        images: Any = None,
        text: Any = None,
        phrase_spans: Any = None,
        annotations: Any = None,
        max_length: int | None = None,
        return_tensors: str | None = "pt",
        **kwargs,
    ) -> BatchFeature:
        """Prepare images and prompts for [`GLIPForGrounding`].

        Args:
            images: anything [`GLIPImageProcessor`] accepts (one image or a list).
            text: see the class docstring (label lists, captions with `phrase_spans`, or captions alone).
            phrase_spans: per phrase, its `(begin, end)` character spans in the caption (a list per caption for a
                batch of captions; `None` entries use noun-phrase extraction).
            annotations: COCO detection annotations, forwarded to the image processor (training targets). When
                every kept object names its prompt entity (`"phrase_index"`: 0-based label / phrase index, or
                `"tokens_positive"`: character spans in the caption), its target also gets `positive_map`
                `(num_boxes, max_length)`, the binary token map of each box (the model's `labels` format).
            max_length (`int`, *optional*): token length, defaults to `self.max_length` (256).
            return_tensors: only `"pt"` is supported.
            kwargs: forwarded to [`GLIPImageProcessor.preprocess`] (e.g. `do_train_augmentation`, `generator`).

        Returns:
            [`BatchFeature`] with `input_ids`, `token_type_ids` (zeros), `attention_mask` `(batch_size, max_length)`;
            `positive_map` `(batch_size, max_num_labels, max_length)` float {0, 1} (row `k` = tokens of entity `k`,
            rows beyond an image's entities are zero); `text_labels` (list per image of entity names: the labels, or
            the phrases); with images, `pixel_values`, `image_sizes`, `original_sizes` (and `labels` with
            annotations).
        """
        if images is None and text is None:
            raise ValueError("Pass `images`, `text` or both.")
        if return_tensors not in (None, "pt") and str(return_tensors) != "TensorType.PYTORCH":
            raise ValueError(f"`return_tensors` must be 'pt', got {return_tensors!r}.")
        max_length = self.max_length if max_length is None else max_length
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 3:
            raise ValueError(f"`max_length` must be an int >= 3, got {max_length!r}.")
        if phrase_spans is not None and text is None:
            raise ValueError("`phrase_spans` needs `text` (the caption the spans index).")
        data: dict[str, Any] = {}
        if text is not None:
            entries = self._text_entries(text, phrase_spans)
            data.update(self._encode_entries(entries, max_length))
        if images is not None:
            image_features = self.image_processor(images, annotations=annotations, **kwargs)
            num_images = image_features["pixel_values"].shape[0]
            if text is not None and num_images != len(data["text_labels"]):
                raise ValueError(
                    f"Got {num_images} images but {len(data['text_labels'])} prompts in `text`; pass one label list "
                    "or caption per image."
                )
            if text is not None and annotations is not None:
                annotation_list = [annotations] if isinstance(annotations, Mapping) else list(annotations)
                self._attach_box_positive_maps(
                    image_features["labels"], annotation_list, entries, data["positive_map"], max_length
                )
            data.update(image_features)
        elif annotations is not None or kwargs:
            raise ValueError("`annotations` and image-processing keyword arguments need `images`.")
        return BatchFeature(data=data)

    def _attach_box_positive_maps(
        self,
        targets: list[dict[str, Any]],
        annotation_list: list[Any],
        entries: list[_TextEntry],
        positive_map: torch.Tensor,
        max_length: int,
    ) -> None:
        """Add `positive_map` `(num_boxes, max_length)` to every training target whose kept objects all name their
        prompt entity: `"phrase_index"` (0-based index into the image's labels / phrases) or `"tokens_positive"`
        (MDETR-style `[begin, end)` spans in the caption). Targets with other objects are left without a map."""
        for image_index, target in enumerate(targets):
            objects = annotation_list[image_index]["annotations"]
            entry = entries[image_index]
            rows = []
            for object_index in target["annotation_indices"].tolist():
                annotation = objects[object_index]
                name = f"annotations[{image_index}]['annotations'][{object_index}]"
                if "tokens_positive" in annotation:
                    spans = _validate_spans(
                        [annotation["tokens_positive"]], f"{name}['tokens_positive']", entry.caption
                    )
                    encoding = self.tokenizer(entry.caption, add_special_tokens=True, truncation=False)
                    rows.append(create_positive_map(encoding, spans, max_length=max_length)[0])
                elif "phrase_index" in annotation:
                    phrase_index = annotation["phrase_index"]
                    if (
                        isinstance(phrase_index, bool)
                        or not isinstance(phrase_index, numbers.Integral)
                        or not 0 <= phrase_index < len(entry.text_labels)
                    ):
                        raise ValueError(
                            f"`{name}['phrase_index']` = {phrase_index!r} is not an entity index of a prompt with "
                            f"{len(entry.text_labels)} entities."
                        )
                    rows.append(positive_map[image_index, int(phrase_index)])
                else:
                    rows = None
                    break
            if rows is not None:
                target["positive_map"] = torch.stack(rows) if rows else torch.zeros((0, max_length))

    # ------------------------------------------------------------------ large vocabularies
    def encode_label_chunks(
        self,
        text: Sequence[str],
        images: Any = None,
        chunk_size: int | None = None,
        max_length: int | None = None,
        **kwargs,
    ) -> BatchFeature:
        """Encode a large label list for ONE image as several prompts (chunks), to run as a text batch.

        Returns:
            [`BatchFeature`] with `input_ids`, `token_type_ids`, `attention_mask` `(num_chunks, max_length)`,
            `positive_map` `(num_chunks, max_labels_per_chunk, max_length)`, `text_labels` (per chunk),
            `chunk_label_indices` (per chunk, the global 0-based index of each chunk label) and, with `images` (one
            image), `pixel_values` `(1, 3, height, width)`, `image_sizes`, `original_sizes`.
        """
        chunk_size = self.chunk_size if chunk_size is None else chunk_size
        max_length = self.max_length if max_length is None else max_length
        labels = _validate_label_list(text, "text")
        chunks = build_label_chunks(labels, self.tokenizer, chunk_size=chunk_size, max_length=max_length)
        entries = [_TextEntry(chunk.caption, chunk.spans, chunk.labels, from_label_list=True) for chunk in chunks]
        data = self._encode_entries(entries, max_length)
        data["chunk_label_indices"] = [chunk.label_indices for chunk in chunks]
        if images is not None:
            image_features = self.image_processor(images, **kwargs)
            if image_features["pixel_values"].shape[0] != 1:
                raise ValueError("`encode_label_chunks` prompts ONE image; pass a single image in `images`.")
            data.update(image_features)
        return BatchFeature(data=data)

    # ------------------------------------------------------------------ post-processing
    def post_process_grounded_object_detection(
        self,
        outputs: Any,
        threshold: float | None = DEFAULT_SCORE_THRESHOLD,
        target_sizes: Any = None,
        text_labels: Sequence[Sequence[str]] | None = None,
        positive_map: Any = None,
        image_sizes: Any = None,
        config: GLIPConfig | None = None,
    ) -> list[dict[str, Any]]:
        """Official GLIP post-processing of [`GLIPForGrounding`] outputs (spec §8) with label names: the one
        post-processing entry point ([`detect`] and the pipeline call it too).

        Args:
            outputs ([`GLIPGroundingOutput`] or mapping): `logits` `(batch_size, num_anchors, sequence_length)`,
                `pred_boxes` `(batch_size, num_anchors, 4)` xyxy network-input pixels, `centerness`
                `(batch_size, num_anchors)`, `num_anchors_per_level`, and (optionally) `image_sizes`.
            threshold (`float`, *optional*, defaults to 0.1): keep detections with `score > threshold` (the
                official evaluation keeps the top `max_detections` without a threshold: pass `None`).
            target_sizes (`torch.Tensor` of shape `(batch_size, 2)` or list of pairs, *optional*): original
                `(height, width)`; boxes are rescaled to it (else they stay in network-input pixels).
            text_labels (`list[list[str]]`, *optional*): entity names per image (the processor output
                `text_labels`). Without `positive_map`, they must be the label lists of label-list prompts, whose
                positive maps are then rebuilt.
            positive_map (*optional*): the processor output `positive_map` `(batch_size, num_labels, max_length)`
                (or a list of per-image maps).
            image_sizes (*optional*): unpadded network-input `(height, width)` per image; defaults to
                `outputs.image_sizes`, else derived from `target_sizes` with the evaluation resize rule.
            config ([`GLIPConfig`], *optional*): the model's config (`model.config`), whose official
                post-processing values are used (`pre_nms_score_threshold`, `pre_nms_top_n`, `nms_threshold`,
                `max_detections`; a converted model carries those of its yaml). Defaults to `GLIPConfig()`.

        Returns:
            `list[dict]` per image: `boxes` `(num_detections, 4)` xyxy, `scores` `(num_detections,)`, `labels`
            `(num_detections,)` 0-based entity indices, `text_labels` (list of the entity names, when known); sorted
            by decreasing score.

        Raises:
            `ValueError` when the outputs hold NaN or infinity (the result would otherwise be silently empty).
        """
        check_score_threshold(threshold)
        config = GLIPConfig() if config is None else config
        logits = output_field(outputs, "logits")
        pred_boxes = output_field(outputs, "pred_boxes")
        centerness = output_field(outputs, "centerness")
        num_anchors_per_level = output_field(outputs, "num_anchors_per_level")
        if logits is None or pred_boxes is None or centerness is None or num_anchors_per_level is None:
            raise ValueError(
                "`outputs` must provide `logits`, `pred_boxes`, `centerness` and `num_anchors_per_level` "
                "(GLIPGroundingOutput)."
            )
        check_finite_outputs(outputs)
        batch_size = logits.shape[0]
        if target_sizes is not None:
            as_size_pairs(target_sizes, "target_sizes", batch_size)
        if text_labels is not None:
            if isinstance(text_labels, (str, bytes)) or not isinstance(text_labels, Sequence):
                raise TypeError("`text_labels` must be a list (one list of names per image).")
            if text_labels and all(isinstance(item, str) for item in text_labels):
                text_labels = [text_labels]  # one image
            if len(text_labels) != batch_size:
                raise ValueError(
                    f"`text_labels` has {len(text_labels)} entries for {batch_size} images; pass one list per image."
                )
        if positive_map is None:
            if text_labels is None:
                raise ValueError(
                    "Pass `positive_map` (processor output) or `text_labels` (label lists) to map tokens to labels."
                )
            sequence_length = logits.shape[-1]
            positive_map = [
                self._encode_entries([self._label_entry(labels, f"text_labels[{index}]")], sequence_length)[
                    "positive_map"
                ][0]
                for index, labels in enumerate(text_labels)
            ]
        resolved_sizes = self.image_processor.resolve_image_sizes(outputs, image_sizes, target_sizes, batch_size)
        results = post_process_grounded_detections(
            logits,
            pred_boxes,
            centerness,
            num_anchors_per_level,
            positive_map,
            resolved_sizes,
            target_sizes=target_sizes,
            score_threshold=threshold,
            **post_processing_arguments(config),
        )
        for index, result in enumerate(results):
            if text_labels is not None:
                names = list(text_labels[index])
                if result["labels"].numel() and int(result["labels"].max()) >= len(names):
                    raise ValueError(
                        f"`text_labels[{index}]` has {len(names)} names but label {int(result['labels'].max())} "
                        "was detected; pass the names of every entity of the prompt."
                    )
                result["text_labels"] = [names[label] for label in result["labels"].tolist()]
        return results

    def post_process_chunked_object_detection(
        self,
        outputs: Any,
        chunk_label_indices: Sequence[Sequence[int]],
        positive_map: Any,
        threshold: float | None = DEFAULT_SCORE_THRESHOLD,
        target_sizes: Any = None,
        text_labels: Sequence[str] | None = None,
        image_sizes: Any = None,
        max_detections: int | None = None,
        config: GLIPConfig | None = None,
        merge_mode: str | None = None,
    ) -> dict[str, Any]:
        """Detections of ONE image prompted with label chunks (outputs batched over the chunks).

        Each chunk is post-processed officially with [`post_process_grounded_object_detection`], then the chunks
        are merged with [`merge_chunk_detections`] in `merge_mode` (default `config.chunk_merge_mode`,
        `"cross_chunk_nms"`; `"concatenate"` is the official chunked evaluation) at `config.nms_threshold`.

        Args:
            outputs: model outputs with batch dimension = chunks (all for the same image).
            chunk_label_indices, positive_map: the `encode_label_chunks` outputs of the same names.
            target_sizes (*optional*): the original `(height, width)` of the image (one pair).
            text_labels (`list[str]`, *optional*): the FULL label list (global indices), for `text_labels`.
            max_detections (`int`, *optional*): cap on the merged detections (default: none beyond the official
                `config.max_detections` per chunk).
            config ([`GLIPConfig`], *optional*): the model's config (see [`post_process_grounded_object_detection`]).

        Returns:
            `dict` with `boxes`, `scores`, `labels` (global 0-based label indices) and, with `text_labels`,
            `text_labels`.
        """
        config = GLIPConfig() if config is None else config
        merge_mode = config.chunk_merge_mode if merge_mode is None else merge_mode
        if merge_mode not in CHUNK_MERGE_MODES:
            raise ValueError(f"`merge_mode` must be one of {CHUNK_MERGE_MODES}, got {merge_mode!r}.")
        logits = output_field(outputs, "logits")
        if logits is None:
            raise ValueError("`outputs` must provide `logits` (GLIPGroundingOutput).")
        num_chunks = logits.shape[0]
        if len(chunk_label_indices) != num_chunks:
            raise ValueError(
                f"`chunk_label_indices` has {len(chunk_label_indices)} chunks but the outputs hold {num_chunks}."
            )
        if target_sizes is not None:
            target_sizes = as_size_pairs(target_sizes, "target_sizes")
            if len(target_sizes) != 1:
                raise ValueError("`target_sizes` must hold the single (height, width) of the chunked image.")
            target_sizes = target_sizes * num_chunks
        if image_sizes is None:
            image_sizes = output_field(outputs, "image_sizes")
        if image_sizes is not None:
            image_sizes = as_size_pairs(image_sizes, "image_sizes")
            if len(image_sizes) == 1:  # the image is shared by every chunk
                image_sizes = image_sizes * num_chunks
        per_chunk = self.post_process_grounded_object_detection(
            outputs,
            threshold=threshold,
            target_sizes=target_sizes,
            positive_map=positive_map,
            image_sizes=image_sizes,
            config=config,
        )
        merged = merge_chunk_detections(
            per_chunk,
            chunk_label_indices,
            mode=merge_mode,
            nms_threshold=config.nms_threshold if merge_mode == "cross_chunk_nms" else None,
            max_detections=max_detections,
        )
        if text_labels is not None:
            merged["text_labels"] = [text_labels[label] for label in merged["labels"].tolist()]
        return merged


class _SingleSequenceEncoding:
    """View of sequence `index` of a batched fast-tokenizer encoding with the single-sequence `char_to_token`
    signature used by [`create_positive_map`]."""

    def __init__(self, encoding, index: int):
        self._encoding = encoding
        self._index = index

    def char_to_token(self, batch_index: int, character_index: int | None = None) -> int | None:
        if character_index is None:
            batch_index, character_index = 0, batch_index
        return self._encoding.char_to_token(self._index, character_index)
