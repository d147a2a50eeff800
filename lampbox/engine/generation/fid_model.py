"""Fusion-in-Decoder's model code, shared by the `fid` backend (generation/fid.py) and the FiD
training objective (training/fid.py): passages tokenized and encoded one by one, fused for the
decoder; greedy decoding and label log-likelihoods; loading an encoder-decoder, and the offline
base. Inference imports this, never the training code; torch and transformers load when used.

Works with any encoder-decoder transformers loads (T5 / Flan-T5 by hub id or path, or an
EncoderDecoderModel). Offline, the default base is `minilm-bert2bert`: an EncoderDecoderModel
warm-started from the packaged all-MiniLM-L6-v2 (encoder and decoder; the decoder's
cross-attention starts random), built once into lampbox's cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lampbox.errors import LampboxError

OFFLINE_BASE = "minilm-bert2bert"
IGNORE_INDEX = -100


def passage_ids(tokenizer: Any, passages: Sequence[str], max_length: int) -> tuple[tuple[int, ...], ...]:
    """Each passage's tokens with the model's special tokens, cut to max_length."""
    texts = list(passages) or [""]
    encoded = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    return tuple(tuple(ids) for ids in encoded)


def passage_limits(tokenizer: Any) -> tuple[int, int]:
    """(tokens a passage may have, special tokens the tokenizer adds to each): what the FiD
    preparer budgets with, in training and at inference alike."""
    limit = int(min(getattr(tokenizer, "model_max_length", 512) or 512, 512))
    return limit, len(tokenizer("")["input_ids"])


def fid_target_ids(tokenizer: Any, gold: str, max_target_tokens: int) -> tuple[int, ...]:
    """The gold's tokens and an end token (T5's </s>, BERT's [SEP]), without a start token."""
    ids = list(tokenizer(gold, add_special_tokens=False)["input_ids"])[:max_target_tokens]
    end = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    if end is not None:
        ids.append(int(end))
    return tuple(ids)


def pad_passages(batch: Sequence[Sequence[Sequence[int]]], pad_id: int) -> tuple[Any, Any]:
    """(batch, passages, length) ids and mask, padded to the batch's most passages and longest."""
    import torch

    n = max(len(passages) for passages in batch)
    width = max(len(ids) for passages in batch for ids in passages)
    ids = torch.full((len(batch), n, width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), n, width), dtype=torch.long)
    for row, passages in enumerate(batch):
        for column, passage in enumerate(passages):
            ids[row, column, : len(passage)] = torch.tensor(passage, dtype=torch.long)
            mask[row, column, : len(passage)] = 1
    return ids, mask


def encode_fused(model: Any, passage_ids: Any, passage_mask: Any) -> tuple[Any, Any]:
    """Encode every passage separately, then concatenate them per question for the decoder."""
    from transformers.modeling_outputs import BaseModelOutput

    batch, n, width = passage_ids.shape
    encoder = model.get_encoder()
    hidden = encoder(
        input_ids=passage_ids.reshape(batch * n, width), attention_mask=passage_mask.reshape(batch * n, width)
    ).last_hidden_state
    fused = hidden.reshape(batch, n * width, hidden.shape[-1])
    return BaseModelOutput(last_hidden_state=fused), passage_mask.reshape(batch, n * width)


def fid_generate(model: Any, tokenizer: Any, batch_passages: Sequence[Sequence[Sequence[int]]], new_tokens: int) -> list[str]:
    """Greedy outputs for a batch of questions given as their passages' token ids."""
    import torch

    device = next(model.parameters()).device
    ids, mask = pad_passages(batch_passages, tokenizer.pad_token_id)
    with torch.inference_mode():
        encoded, fused_mask = encode_fused(model, ids.to(device), mask.to(device))
    return fid_generate_encoded(model, tokenizer, encoded, fused_mask, new_tokens)


def fid_generate_encoded(model: Any, tokenizer: Any, encoded: Any, fused_mask: Any, new_tokens: int) -> list[str]:
    """Greedy outputs from fused encoder outputs (encode_fused's, or a frozen encoder's kept ones)."""
    import torch

    with torch.inference_mode():
        generated = model.generate(
            encoder_outputs=encoded, attention_mask=fused_mask, max_new_tokens=new_tokens, do_sample=False, num_beams=1
        )
    return [tokenizer.decode(row, skip_special_tokens=True) for row in generated.tolist()]


def passage_dependence(
    model: Any,
    tokenizer: Any,
    own: Sequence[Sequence[Sequence[int]]],
    other: Sequence[Sequence[Sequence[int]]],
    new_tokens: int,
    batch_size: int = 8,
) -> list[bool]:
    """For each question, whether its greedy output changes when its passages (`own`) are
    replaced by other ones (`other`, e.g. the same input paired with another user's items):
    a model that ignores its passages answers the same, one that reads them does not always."""
    if len(own) != len(other):
        raise ValueError("own and other passages must be given for the same questions")
    changed: list[bool] = []
    for start in range(0, len(own), batch_size):
        first = fid_generate(model, tokenizer, own[start : start + batch_size], new_tokens)
        second = fid_generate(model, tokenizer, other[start : start + batch_size], new_tokens)
        changed += [a.strip() != b.strip() for a, b in zip(first, second, strict=True)]
    return changed


def new_parameter_names(model: Any) -> list[str]:
    """The parameters a FiD objective may give a learning rate of their own: the decoder's
    cross-attention (random in a warm-started bert2bert, whose decoder never attended to an
    encoder; pretrained in a T5) and, in a bert2bert, the output head's transform and bias
    (random too: the packaged all-MiniLM-L6-v2 has no masked-LM head). The head's word matrix is
    tied to the decoder's embedding and stays at the base rate."""
    names = []
    for name, _ in model.named_parameters():
        cross = "crossattention" in name or "EncDecAttention" in name
        head = ".cls.predictions." in f".{name}" and not name.endswith("predictions.decoder.weight")
        if cross or head:
            names.append(name)
    return names


def fid_label_logliks(model: Any, tokenizer: Any, passages: Sequence[Sequence[int]], labels: Sequence[str]) -> list[float]:
    """Each label's log-likelihood as the decoder's whole answer for one question given as its
    passages' token ids: the sum of the log-probabilities of the label's tokens and the end
    token (an encoder-decoder's answer ends there, so a label that is the prefix of another is
    not favoured). The passages are encoded once; the labels are decoded as one batch."""
    import torch

    device = next(model.parameters()).device
    ids, mask = pad_passages([passages], tokenizer.pad_token_id)
    targets = [fid_target_ids(tokenizer, label, 10_000) for label in labels]
    width = max(len(t) for t in targets)
    gold = torch.full((len(labels), width), IGNORE_INDEX, dtype=torch.long)
    for row, target in enumerate(targets):
        gold[row, : len(target)] = torch.tensor(target, dtype=torch.long)
    with torch.inference_mode():
        encoded, fused_mask = encode_fused(model, ids.to(device), mask.to(device))
        hidden = encoded.last_hidden_state.expand(len(labels), -1, -1)
        encoded.last_hidden_state = hidden
        logits = model(encoder_outputs=encoded, attention_mask=fused_mask.expand(len(labels), -1), labels=gold.to(device)).logits
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        gold = gold.to(device)
        picked = logprobs.gather(-1, gold.clamp(min=0).unsqueeze(-1)).squeeze(-1) * gold.ne(IGNORE_INDEX)
    return [float(value) for value in picked.sum(-1).tolist()]


def seq2seq_config(source: str) -> Any:
    """The config of an encoder-decoder model; a clear error for anything else."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as error:
        raise LampboxError(f"could not read the config of {source!r}: {error}") from error
    if not getattr(config, "is_encoder_decoder", False):
        architectures = ", ".join(getattr(config, "architectures", None) or []) or config.model_type
        raise LampboxError(f"{source!r} is not an encoder-decoder model ({architectures}); FiD needs one (e.g. a T5)")
    return config


def load_seq2seq(source: str) -> Any:
    """An encoder-decoder model from a folder or hub id (T5 family or EncoderDecoderModel)."""
    from transformers import AutoModelForSeq2SeqLM, EncoderDecoderModel

    from lampbox.engine.quiet import quiet_transformers

    quiet_transformers()
    if seq2seq_config(source).model_type == "encoder-decoder":
        return EncoderDecoderModel.from_pretrained(source)
    return AutoModelForSeq2SeqLM.from_pretrained(source)


def round_trip_tokenizer(tokenizer: Any, folder: Path) -> None:
    """Save a WordPiece tokenizer that splits on whitespace only, so that what the decoder
    writes decodes back to the same text. BERT's own pre-tokenizer splits punctuation into
    words of their own, and decoding joins words with spaces: "git-gui" came back as
    "git - gui", which can never match a label. Split on whitespace, "git-gui" is "gi ##t
    ##- ##gui" and decodes to "git-gui" (the vocabulary has the "##" punctuation pieces). The
    folder loads as a plain fast tokenizer (BertTokenizer would rebuild its pre-tokenizer)."""
    import json

    from tokenizers import pre_tokenizers

    tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.save_pretrained(folder)
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config.pop("do_basic_tokenize", None)
    config_path.write_text(json.dumps(config, indent=2))


def offline_base_settings(name: str | None) -> tuple[int, bool] | None:
    """(decoder layers, cross-attention copied from self-attention) of an offline base name:
    `minilm-bert2bert` (all 6 of MiniLM's layers, cross-attention random), with `-dN` a
    decoder of MiniLM's first N layers (1-6: cheaper), with `-sa` each decoder layer's
    cross-attention starting as a copy of that layer's self-attention (queries and keys
    already in the space the encoder, the same MiniLM, writes); None for other names."""
    prefix = OFFLINE_BASE
    if name is None or not name.startswith(prefix):
        return None
    rest = name[len(prefix) :]
    copied = rest.endswith("-sa")
    rest = rest[: -len("-sa")] if copied else rest
    if rest == "":
        return 6, copied
    if not rest.startswith("-d") or not rest[2:].isdigit():
        return None
    layers = int(rest[2:])
    if not 1 <= layers <= 6:
        raise LampboxError(f"{name!r}: the offline base's decoder has 1 to 6 layers (all-MiniLM-L6-v2 has 6)")
    return layers, copied


def copy_self_attention_to_cross_attention(model: Any) -> None:
    """Start each BERT decoder layer's cross-attention as a copy of its self-attention."""
    import torch

    with torch.no_grad():
        for layer in model.decoder.bert.encoder.layer:
            for target, source in zip(layer.crossattention.parameters(), layer.attention.parameters(), strict=True):
                target.copy_(source)


def offline_base_folder(decoder_layers: int = 6, cross_from_self: bool = False) -> Path:
    """The minilm-bert2bert base (built once from the packaged all-MiniLM-L6-v2, its decoder
    from MiniLM's first `decoder_layers` layers, its cross-attention random or copied from
    self-attention), with a tokenizer whose outputs round-trip (round_trip_tokenizer)."""
    from transformers import AutoTokenizer, EncoderDecoderModel

    from lampbox.engine.quiet import quiet_transformers
    from lampbox.engine.retrieval.dense import packaged_model_path
    from lampbox.paths import cache_dir

    quiet_transformers()  # building and saving it draws transformers' bars otherwise
    name = OFFLINE_BASE + (f"-d{decoder_layers}" if decoder_layers != 6 else "") + ("-sa" if cross_from_self else "")
    target = cache_dir("models") / f"{name}-2"  # -2: the round-trip tokenizer
    if (target / "config.json").is_file():
        return target
    source = packaged_model_path()
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = EncoderDecoderModel.from_encoder_decoder_pretrained(source, source, decoder_num_hidden_layers=decoder_layers)
    if cross_from_self:
        copy_self_attention_to_cross_attention(model)
    model.config.decoder_start_token_id = tokenizer.cls_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    model.config.eos_token_id = tokenizer.sep_token_id
    model.generation_config.decoder_start_token_id = tokenizer.cls_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.sep_token_id
    partial = target.with_name(target.name + ".partial")
    model.save_pretrained(partial)
    round_trip_tokenizer(tokenizer, partial)
    partial.replace(target)
    return target


def seq2seq_source(name: str) -> str:
    """What transformers loads for a FiD base name: the offline default, a trained FiD model,
    a folder or a hub id."""
    settings = offline_base_settings(name)
    if settings is not None:
        return str(offline_base_folder(*settings))
    from lampbox.models import resolve_model

    resolved = resolve_model(name)
    if resolved.format != "hf":
        raise LampboxError(f"{name!r} is a GGUF model; FiD needs an encoder-decoder (e.g. a T5 folder or hub id)")
    return resolved.location
