"""Prompts of GLIP: detection prompts from label lists, label chunks for large vocabularies, noun phrases of free
captions, and character spans -> token positive maps.

Official sources (microsoft/GLIP): `maskrcnn_benchmark/data/datasets/modulated_coco.py::create_positive_map`,
`maskrcnn_benchmark/engine/inference.py::{create_queries_and_maps, create_positive_dict, clean_name, chunks}`,
`maskrcnn_benchmark/engine/predictor_glip.py::{find_noun_phrases, run_ner}`.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

__all__ = [
    "DETECTION_PROMPT_SEPARATOR",
    "GLIPLabelChunk",
    "build_detection_prompt",
    "build_label_chunks",
    "clean_label_name",
    "count_prompt_tokens",
    "create_positive_map",
    "find_noun_phrases",
    "validate_label_tokens",
    "validate_labels",
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


def validate_labels(labels: Any, name: str = "labels") -> list[str]:
    """Check a label list: a non-empty list of strings, none empty after [`clean_label_name`].

    Raises:
        `TypeError` / `ValueError` naming `name` (e.g. `"text"`, `"text[1]"`) and the bad entry.
    """
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


def validate_label_tokens(labels: Sequence[str], tokenizer: PreTrainedTokenizerBase, name: str = "labels") -> None:
    """Check that every label of a (validated) label list can be detected as its own entity.

    A label whose cleaned name has no letter or digit, or that the tokenizer turns into no token (zero-width space,
    NUL, other control characters), would get an empty or punctuation-only positive map and could never be found; two
    labels with the same tokens would score alike and return every box twice.

    Raises:
        `ValueError` naming the label(s) and their positions in `name`.
    """
    token_ids = tokenizer([clean_label_name(label) for label in labels], add_special_tokens=False, truncation=False)[
        "input_ids"
    ]
    first_position: dict[tuple[int, ...], int] = {}
    for index, (label, ids) in enumerate(zip(labels, token_ids)):
        if not ids or not any(character.isalnum() for character in clean_label_name(label)):
            raise ValueError(
                f"`{name}[{index}]` = {label!r} has no letter or digit the tokenizer keeps (it tokenizes to "
                f"{len(ids)} token(s) of punctuation, control or invisible characters), so it can never be "
                "detected; remove it or spell it out."
            )
        key = tuple(ids)
        if key in first_position:
            other = first_position[key]
            raise ValueError(
                f"`{name}[{other}]` = {labels[other]!r} and `{name}[{index}]` = {label!r} are the same label for "
                "the tokenizer; each box would be returned once per copy. Pass every label once."
            )
        first_position[key] = index


def build_detection_prompt(
    labels: Sequence[str], separator: str = DETECTION_PROMPT_SEPARATOR
) -> tuple[str, list[list[tuple[int, int]]]]:
    """The caption and per-label character spans the official detection evaluation builds from a label list.

    Every label goes through [`clean_label_name`]; the cleaned names are joined with `separator` (no trailing
    separator, no prefix, no lower-casing); label `k`'s span is exactly its cleaned name.
    Example: `["red circle", "person"]` -> `("red circle. person", [[(0, 10)], [(12, 18)]])`.
    """
    labels = validate_labels(labels, "labels")
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


def count_prompt_tokens(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> list[int]:
    """Token counts of `texts` WITH the special tokens (`[CLS] ... [SEP]`), without truncation."""
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
        `ValueError` if a single label does not fit in `max_length` tokens, tokenizes to nothing, or repeats another
        label (see [`validate_label_tokens`]).
    """
    labels = validate_labels(labels, "labels")
    validate_label_tokens(labels, tokenizer, "labels")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"`chunk_size` must be a positive int, got {chunk_size!r}.")
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 3:
        raise ValueError(f"`max_length` must be an int >= 3, got {max_length!r}.")
    # Counts with [CLS]/[SEP]; the separator ". " adds one "." token between names (BERT splits punctuation).
    label_token_counts = [
        count - 2 for count in count_prompt_tokens(tokenizer, [clean_label_name(label) for label in labels])
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
        if len(group) > 1 and count_prompt_tokens(tokenizer, [caption])[0] > max_length:
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
