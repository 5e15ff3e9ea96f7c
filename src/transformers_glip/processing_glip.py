"""`GLIPProcessor`: a [`GLIPImageProcessor`] plus a BERT tokenizer, turning images and label lists / captions into
model inputs (token ids and the positive maps of the prompt entities) and model outputs into named detections.

Prompt building, character spans -> token positive maps and noun-phrase extraction live in `prompts_glip`.
"""

import json
import numbers
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers.image_processing_utils import BatchFeature
from transformers.processing_utils import ProcessingKwargs, ProcessorMixin, TextKwargs, Unpack
from transformers.utils import PaddingStrategy, logging

from .configuration_glip import GLIPConfig
from .hub_glip import add_remote_code_files, pop_hub_arguments, push_folder_to_hub
from .image_processing_glip import GLIPImageProcessor, GLIPImageProcessorKwargs
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
from .prompts_glip import (
    build_detection_prompt,
    build_label_chunks,
    clean_label_name,
    count_prompt_tokens,
    create_positive_map,
    find_noun_phrases,
    validate_label_tokens,
    validate_labels,
)

logger = logging.get_logger(__name__)

__all__ = ["GLIPProcessor", "GLIPProcessorKwargs", "GLIPTextKwargs"]

# `MODEL.LANGUAGE_BACKBONE.MAX_QUERY_LEN` of every released GLIP config: prompts are padded to 256 tokens.
GLIP_MAX_TEXT_LENGTH = 256


class GLIPTextKwargs(TextKwargs, total=False):
    """Text keyword arguments of [`GLIPProcessor`] on top of the tokenizer's `TextKwargs`.

    Attributes:
        phrase_spans (`list`, *optional*): for a caption, per phrase its `(begin, end)` character spans (end
            exclusive); for a batch of captions, one such list (or `None`: noun-phrase extraction) per caption.
        official_mode (`bool`, *optional*, defaults to `False`): pad every prompt to `max_text_length` tokens, as
            the official code (the inputs the parity tests pin), instead of to the longest prompt of the call (the
            fast path; the padding is masked, so the outputs on the real tokens are the same up to float rounding).
    """

    phrase_spans: list | tuple | None
    official_mode: bool


class GLIPProcessorKwargs(ProcessingKwargs, total=False):
    """Keyword arguments of [`GLIPProcessor.__call__`]: `text_kwargs` ([`GLIPTextKwargs`]) go to the tokenizer,
    `images_kwargs` ([`GLIPImageProcessorKwargs`]) to the image processor; flat keywords are routed by name."""

    text_kwargs: GLIPTextKwargs
    images_kwargs: GLIPImageProcessorKwargs


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
      ONE image): the official detection prompt, cleaned names joined with `". "` (see
      [`~prompts_glip.build_detection_prompt`]);
    - a caption string (or a list of captions) with `phrase_spans=` (per phrase, its `(begin, end)` character
      spans; a list of those per caption for a batch);
    - a caption alone: entities are the noun phrases found by [`~prompts_glip.find_noun_phrases`] (to mix with
      explicit spans in a batch, give `None` for those captions in `phrase_spans`).

    Keyword arguments follow transformers' unified processor kwargs ([`GLIPProcessorKwargs`]): tokenizer options
    (`padding`, `max_length`, `truncation`, ...) flat or in `text_kwargs`, image options (`size`, `do_rescale`,
    `do_train_augmentation`, ...) flat or in `images_kwargs`, shared ones in `common_kwargs`.

    Padding (fast path and official mode): by default the prompts of a call are padded to the longest of them and
    truncated at `max_text_length` tokens; the text padding is masked in the model, so its outputs on the real tokens
    equal those of the official 256-token padding up to float rounding, with fewer tokens to compute.
    `official_mode=True` pads every prompt to `max_text_length`, as the official code (the inputs the parity tests
    pin; for the model side of official mode set `model.config.fusion_implementation = "official"` and
    `model.config.deformable_conv_implementation = "torchvision"`, or use `detect(..., official_mode=True)`, which
    does all of it). Explicit `padding` / `max_length` arguments win over the
    fast-path default; with `official_mode=True` they must agree with it.

    Args:
        image_processor ([`GLIPImageProcessor`]): the image processor.
        tokenizer ([`BertTokenizer`]): a fast BERT tokenizer (offsets are needed for the positive maps).
        max_text_length (`int`, *optional*, defaults to 256): default padded token length
            (`MODEL.LANGUAGE_BACKBONE.MAX_QUERY_LEN`; the model config's `max_text_length`).
        chunk_size (`int`, *optional*, defaults to 40): labels per prompt for large vocabularies
            (`TEST.CHUNKED_EVALUATION`).
    """

    valid_processor_kwargs = GLIPProcessorKwargs
    # Outputs that stay Python lists (names per image, COCO targets, chunk indices).
    skip_tensor_conversion = [*ProcessorMixin.skip_tensor_conversion, "text_labels", "labels", "chunk_label_indices"]

    def __init__(
        self,
        image_processor,
        tokenizer,
        max_text_length: int = GLIP_MAX_TEXT_LENGTH,
        chunk_size: int = 40,
        **kwargs,
    ):
        if isinstance(max_text_length, bool) or not isinstance(max_text_length, int) or max_text_length < 3:
            raise ValueError(f"`max_text_length` must be an int >= 3, got {max_text_length!r}.")
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"`chunk_size` must be a positive int, got {chunk_size!r}.")
        if not isinstance(image_processor, GLIPImageProcessor):
            raise TypeError(f"`image_processor` must be a GLIPImageProcessor, got {type(image_processor).__name__}.")
        if not getattr(tokenizer, "is_fast", False):
            raise TypeError("`tokenizer` must be a fast tokenizer (character offsets are needed for positive maps).")
        self.max_text_length = max_text_length
        self.chunk_size = chunk_size
        super().__init__(image_processor, tokenizer, **kwargs)

    @property
    def text_kwargs(self) -> dict[str, Any]:
        """Default tokenizer options (lowest priority of `_merge_kwargs`): the fast path, padding to the longest
        prompt of the call, truncated at `max_text_length` (`official_mode=True` pads to `max_text_length`)."""
        return {"padding": "longest", "max_length": self.max_text_length, "truncation": True}

    @property
    def model_input_names(self) -> list[str]:
        """The keys `__call__` returns for images and text: the tokenizer's and the image processor's inputs of
        [`GLIPForGrounding`], plus `original_sizes`, `positive_map` and `text_labels`, which the post-processing (and
        the loss targets) read."""
        names = list(self.tokenizer.model_input_names) + list(self.image_processor.model_input_names)
        return list(dict.fromkeys([*names, "original_sizes", "positive_map", "text_labels"]))

    @property
    def max_length(self) -> int:
        """The default padded token length (`max_text_length`)."""
        return self.max_text_length

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
        that loading does not depend on `AutoImageProcessor` registrations. A local `tokenizer.json` that cannot be
        read gives a `ValueError` naming the file."""
        subfolder = kwargs.pop("subfolder", "")
        tokenizer_file = os.path.join(pretrained_model_name_or_path, subfolder, "tokenizer.json")
        if os.path.isfile(tokenizer_file):
            try:
                with open(tokenizer_file, encoding="utf-8") as handle:
                    json.load(handle)
            except (UnicodeDecodeError, json.JSONDecodeError) as error:
                raise ValueError(
                    f"{tokenizer_file} is not valid JSON ({error}); re-save the tokenizer (e.g. "
                    "`BertTokenizer.from_pretrained('bert-base-uncased').save_pretrained(folder)`) or delete the file "
                    "to rebuild it from vocab.txt."
                ) from error
        try:
            tokenizer = cls._load_tokenizer_from_pretrained(
                "tokenizer", pretrained_model_name_or_path, subfolder=subfolder, **kwargs
            )
        except Exception as error:
            if not os.path.isfile(tokenizer_file):
                raise
            raise ValueError(
                f"The tokenizer in {tokenizer_file} could not be loaded ({type(error).__name__}: {error}); re-save "
                "the tokenizer or delete the file to rebuild it from vocab.txt."
            ) from error
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
        labels = validate_labels(labels, name)
        validate_label_tokens(labels, self.tokenizer, name)
        caption, spans = build_detection_prompt(labels)
        return _TextEntry(caption, spans, list(labels), from_label_list=True)

    def _encode_entries(
        self, entries: list[_TextEntry], max_length: int | None, text_kwargs: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Tokenize the captions of `entries` and build their positive maps.

        Args:
            entries: one prompt per image.
            max_length: the token limit (with special tokens): label-list prompts beyond it raise, captions beyond it
                are truncated with a warning. `None`: no limit.
            text_kwargs: tokenizer options (`padding`, `truncation`, ...); default: padding to `max_length`.

        Returns:
            `dict` with `input_ids`, `token_type_ids`, `attention_mask` `(batch_size, sequence_length)`,
            `positive_map` `(batch_size, max_num_entities, sequence_length)` and `text_labels`.
        """
        if text_kwargs is None:
            text_kwargs = {"padding": "max_length", "truncation": True}
        text_kwargs = {**text_kwargs, "max_length": max_length, "return_tensors": "pt"}
        captions = [entry.caption for entry in entries]
        if max_length is not None and text_kwargs.get("truncation") not in (None, False, "do_not_truncate"):
            unpadded = self.tokenizer(captions, add_special_tokens=True, truncation=False)["input_ids"]
            for index, (entry, ids) in enumerate(zip(entries, unpadded)):
                if len(ids) <= max_length:
                    continue
                if entry.from_label_list:
                    label_counts = count_prompt_tokens(
                        self.tokenizer, [clean_label_name(label) for label in entry.text_labels]
                    )
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
                    f"Caption {index} has {len(ids)} tokens and is truncated to max_length={max_length}; phrases "
                    "beyond the cut get no tokens."
                )
        # A fast tokenizer keeps the padding / truncation of its last call in its backend, and `save_pretrained` writes
        # that state into tokenizer.json, whose reload then turns it into init kwargs that override `max_text_length`:
        # leave a tokenizer that had none without any.
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        had_padding = backend is not None and backend.padding is not None
        had_truncation = backend is not None and backend.truncation is not None
        encoding = self.tokenizer(captions, **text_kwargs)
        if backend is not None and not had_padding:
            backend.no_padding()
        if backend is not None and not had_truncation:
            backend.no_truncation()
        sequence_length = encoding["input_ids"].shape[-1]
        positive_maps = [
            create_positive_map(_SingleSequenceEncoding(encoding, index), entry.spans, max_length=sequence_length)
            for index, entry in enumerate(entries)
        ]
        max_labels = max(positive_map.shape[0] for positive_map in positive_maps)
        stacked = torch.zeros((len(entries), max_labels, sequence_length), dtype=torch.float32)
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
        annotations: Any = None,
        **kwargs: Unpack[GLIPProcessorKwargs],
    ) -> BatchFeature:
        """Prepare images and prompts for [`GLIPForGrounding`].

        Args:
            images: anything [`GLIPImageProcessor`] accepts (one image or a list).
            text: see the class docstring (label lists, captions with `phrase_spans`, or captions alone).
            annotations: COCO detection annotations, forwarded to the image processor (training targets). When
                every kept object names its prompt entity (`"phrase_index"`: 0-based label / phrase index, or
                `"tokens_positive"`: character spans in the caption), its target also gets `positive_map`
                `(num_boxes, sequence_length)`, the binary token map of each box (the model's `labels` format).
            kwargs ([`GLIPProcessorKwargs`]): `phrase_spans` (per phrase, its `(begin, end)` character spans in the
                caption; a list per caption for a batch of captions, `None` entries use noun-phrase extraction),
                `official_mode` (pad to `max_text_length` as the official code; default: pad to the longest prompt,
                see the class docstring), tokenizer options (`padding`, `max_length`, `truncation`),
                image-processor options (e.g. `do_train_augmentation`, `generator`, `size`), `return_tensors` (only
                `"pt"` or `None`: the outputs are torch tensors either way).

        Returns:
            [`BatchFeature`] with `input_ids`, `token_type_ids` (zeros), `attention_mask` `(batch_size,
            sequence_length)`; `positive_map` `(batch_size, max_num_labels, sequence_length)` float {0, 1} (row `k` =
            tokens of entity `k`, rows beyond an image's entities are zero); `text_labels` (list per image of entity
            names: the labels, or the phrases); with images, `pixel_values`, `image_sizes`, `original_sizes` (and
            `labels` with annotations).
        """
        if images is None and text is None:
            raise ValueError("Pass `images`, `text` or both.")
        explicit_text_options = {
            key
            for key in ("padding", "max_length")
            if key in kwargs or key in kwargs.get("text_kwargs", {}) or key in kwargs.get("common_kwargs", {})
        }
        output_kwargs = self._merge_kwargs(
            GLIPProcessorKwargs, tokenizer_init_kwargs=self.tokenizer.init_kwargs, **kwargs
        )
        text_kwargs = output_kwargs["text_kwargs"]
        images_kwargs = output_kwargs["images_kwargs"]
        phrase_spans = text_kwargs.pop("phrase_spans", None)
        for options in (text_kwargs, images_kwargs):
            return_tensors = options.pop("return_tensors", None)
            if return_tensors not in (None, "pt") and str(return_tensors) != "TensorType.PYTORCH":
                raise ValueError(f"`return_tensors` must be 'pt' or None (torch tensors), got {return_tensors!r}.")
        max_length = text_kwargs.pop("max_length", None)
        if max_length is not None and (
            isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 3
        ):
            raise ValueError(f"`max_length` must be an int >= 3, got {max_length!r}.")
        official_mode = text_kwargs.pop("official_mode", False)
        if not isinstance(official_mode, bool):
            raise TypeError(
                f"`official_mode` must be True (pad to max_text_length, as the official code) or False (pad to the "
                f"longest prompt), got {official_mode!r}."
            )
        if official_mode:
            padding = text_kwargs.get("padding")
            if "padding" in explicit_text_options and padding not in ("max_length", PaddingStrategy.MAX_LENGTH):
                raise ValueError(
                    f"`padding={padding!r}` contradicts `official_mode=True` (which pads to max_text_length="
                    f"{self.max_text_length}); drop one of them."
                )
            if "max_length" in explicit_text_options and max_length != self.max_text_length:
                raise ValueError(
                    f"`max_length={max_length!r}` contradicts `official_mode=True` (which pads to max_text_length="
                    f"{self.max_text_length}); drop one of them."
                )
            text_kwargs["padding"] = "max_length"
            max_length = self.max_text_length
        if phrase_spans is not None and text is None:
            raise ValueError("`phrase_spans` needs `text` (the caption the spans index).")
        data: dict[str, Any] = {}
        if text is not None:
            entries = self._text_entries(text, phrase_spans)
            data.update(self._encode_entries(entries, max_length, text_kwargs))
        if images is not None:
            image_features = self.image_processor(images, annotations=annotations, **images_kwargs)
            num_images = image_features["pixel_values"].shape[0]
            if text is not None and num_images != len(data["text_labels"]):
                raise ValueError(
                    f"Got {num_images} images but {len(data['text_labels'])} prompts in `text`; pass one label list "
                    "or caption per image."
                )
            if text is not None and annotations is not None:
                annotation_list = [annotations] if isinstance(annotations, Mapping) else list(annotations)
                self._attach_box_positive_maps(
                    image_features["labels"], annotation_list, entries, data["positive_map"], data["input_ids"]
                )
            data.update(image_features)
        elif annotations is not None:
            raise ValueError("`annotations` needs `images`.")
        return BatchFeature(data=data)

    def _attach_box_positive_maps(
        self,
        targets: list[dict[str, Any]],
        annotation_list: list[Any],
        entries: list[_TextEntry],
        positive_map: torch.Tensor,
        input_ids: torch.Tensor,
    ) -> None:
        """Add `positive_map` `(num_boxes, sequence_length)` to every training target whose kept objects all name their
        prompt entity: `"phrase_index"` (0-based index into the image's labels / phrases) or `"tokens_positive"`
        (MDETR-style `[begin, end)` spans in the caption). Targets with other objects are left without a map."""
        sequence_length = input_ids.shape[-1]
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
                    rows.append(create_positive_map(encoding, spans, max_length=sequence_length)[0])
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
                target["positive_map"] = torch.stack(rows) if rows else torch.zeros((0, sequence_length))

    # ------------------------------------------------------------------ large vocabularies
    def encode_label_chunks(
        self,
        text: Sequence[str],
        images: Any = None,
        chunk_size: int | None = None,
        max_length: int | None = None,
        **kwargs: Unpack[GLIPImageProcessorKwargs],
    ) -> BatchFeature:
        """Encode a large label list for ONE image as several prompts (chunks), to run as a text batch.

        Args:
            text (`list[str]`): the labels.
            images (*optional*): ONE image.
            chunk_size (`int`, *optional*): labels per chunk, defaults to `self.chunk_size` (40).
            max_length (`int`, *optional*): token length of every chunk, defaults to `self.max_text_length` (256).
            kwargs: image-processor options.

        Returns:
            [`BatchFeature`] with `input_ids`, `token_type_ids`, `attention_mask` `(num_chunks, max_length)`,
            `positive_map` `(num_chunks, max_labels_per_chunk, max_length)`, `text_labels` (per chunk),
            `chunk_label_indices` (per chunk, the global 0-based index of each chunk label) and, with `images` (one
            image), `pixel_values` `(1, 3, height, width)`, `image_sizes`, `original_sizes`.
        """
        chunk_size = self.chunk_size if chunk_size is None else chunk_size
        max_length = self.max_text_length if max_length is None else max_length
        labels = validate_labels(text, "text")
        validate_label_tokens(labels, self.tokenizer, "text")
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
