"""Top-k predictions for every [MASK] of a text, from any of our masked LMs."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tokenizers import Tokenizer

from probformer.data.tokenization import MASK_ID, SPECIAL_TOKENS
from probformer.inspection.errors import InspectionError


@dataclass
class MaskPrediction:
    position: int  # index of the [MASK] piece in the tokenised text
    candidates: list[tuple[str, float]]  # (token, probability), most probable first


@torch.no_grad()
def fill_mask(model, tokenizer: Tokenizer, text: str, top_k: int = 5) -> list[MaskPrediction]:
    """Each [MASK] predicted independently from the same input (as HF's fill-mask pipeline does).
    The input is tokenised exactly as in training: no [CLS]/[SEP] added."""
    if top_k < 1:
        raise InspectionError(f"top_k must be >= 1, got {top_k}")
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    mask_id = mask_token_id(model, tokenizer)
    positions = [i for i, t in enumerate(ids) if t == mask_id]
    if not positions:
        raise InspectionError(f"no [MASK] in {text!r}; write the token to predict as [MASK]")
    check_length(model, len(ids))
    logits = model(torch.tensor([ids])).logits[0, positions].double()  # (masks, V)
    probs = torch.softmax(logits, dim=-1)
    top = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
    return [MaskPrediction(pos, [(tokenizer.id_to_token(int(t)), float(p)) for p, t in zip(ps, ts, strict=True)])
            for pos, ps, ts in zip(positions, top.values, top.indices, strict=True)]


def mask_token_id(model, tokenizer: Tokenizer) -> int:
    """The id the model was trained to fill: its config's (the data's [MASK]; a prepared directory may
    move it), else the tokenizer's own [MASK] (a pretrained tokenizer's is not 4)."""
    mask_id = getattr(model.config, "mask_token_id", None)
    if mask_id is None:
        mask_id = tokenizer.token_to_id(SPECIAL_TOKENS[MASK_ID])
    if mask_id is None:
        raise InspectionError(f"the model's config names no mask_token_id and the tokenizer has no "
                              f"{SPECIAL_TOKENS[MASK_ID]} token")
    return int(mask_id)


def check_length(model, num_pieces: int) -> None:
    """A text longer than the model's position table cannot be read (BERT / UT index it; PT's P has the
    same rows): a one-line error instead of an index error deep in the forward."""
    limit = int(model.config.max_position_embeddings)
    if num_pieces > limit:
        raise InspectionError(f"the text is {num_pieces} word pieces, longer than the model's "
                              f"max_position_embeddings ({limit}); shorten it")
