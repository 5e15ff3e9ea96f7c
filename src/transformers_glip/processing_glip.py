"""Text side of GLIP: prompts, character spans -> token positive maps, and the `GLIPProcessor`.

Official sources (microsoft/GLIP): `maskrcnn_benchmark/data/datasets/modulated_coco.py::create_positive_map`,
`maskrcnn_benchmark/engine/inference.py::{create_queries_and_maps, create_positive_dict, clean_name, chunks}`,
`maskrcnn_benchmark/engine/predictor_glip.py::{find_noun_phrases, run_ner}`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["create_positive_map"]


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
                or not all(isinstance(value, int) and not isinstance(value, bool) for value in span)
            ):
                raise ValueError(
                    f"`spans_per_entity[{entity_index}]` holds {span!r}; every span must be a pair of ints "
                    "(begin, end) with end exclusive."
                )
            begin, end = span
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
