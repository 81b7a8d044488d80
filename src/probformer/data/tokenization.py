"""WordPiece tokenizer trained with Hugging Face ``tokenizers`` on the training split, deterministically.

``tokenizers``' WordPiece trainer (its BPE trainer underneath) numbers the continuation pieces
(``##e``, ``##s``, ...) as it first meets them while iterating over a hash map of the corpus's words,
whose order is random in every process (huggingface/tokenizers#1794). Equal-count merges are then
broken by those numbers, so two trainings on one corpus gave different ids, and could pick different
merges. :func:`train_wordpiece` fixes the order: a first pass over the corpus finds every continuation
piece, and the real training is given them, sorted, as tokens it must number before anything else
(its ``special_tokens``); afterwards they are plain vocabulary entries again. Training is then a
function of the corpus: the same texts give the same tokenizer.json, byte for byte.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from types import MappingProxyType

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = range(len(SPECIAL_TOKENS))
NUM_SPECIAL = len(SPECIAL_TOKENS)
# Role -> id in this layout: what data/shards.py's special_token_ids reads from one of these tokenizers,
# and the default of every call that takes the ids of another tokenizer.
OWN_SPECIAL_IDS = MappingProxyType({"pad": PAD_ID, "unk": UNK_ID, "cls": CLS_ID, "sep": SEP_ID, "mask": MASK_ID})
CONTINUATION_PREFIX = "##"  # the WordPiece trainer's default continuing_subword_prefix


def _untrained(lowercase: bool) -> Tokenizer:
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=lowercase)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    return tokenizer


def continuation_pieces(texts: Sequence[str], lowercase: bool) -> list[str]:
    """Every ``##c`` piece the trainer will create for ``texts``, sorted: a training that stops before
    its first merge (vocab_size 0) creates exactly those, after the special tokens and the alphabet."""
    probe = _untrained(lowercase)
    probe.train_from_iterator(texts, trainer=trainers.WordPieceTrainer(
        vocab_size=0, special_tokens=list(SPECIAL_TOKENS), show_progress=False))
    return sorted(t for t in probe.get_vocab(with_added_tokens=False) if t.startswith(CONTINUATION_PREFIX))


def _without_added_tokens(tokenizer: Tokenizer, keep: Sequence[str]) -> Tokenizer:
    """``tokenizer`` with only ``keep`` as added tokens; the others stay in the model's vocabulary as
    ordinary entries (an added token would be matched in raw text before pre-tokenisation)."""
    spec = json.loads(tokenizer.to_str())
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["content"] in keep]
    return Tokenizer.from_str(json.dumps(spec))


def train_wordpiece(texts: Sequence[str], vocab_size: int, lowercase: bool = True) -> Tokenizer:
    """A BERT-style WordPiece tokenizer whose first ids are :data:`SPECIAL_TOKENS` in that order,
    the same for the same ``texts`` (module docstring). ``texts`` is read twice."""
    pieces = continuation_pieces(texts, lowercase)
    tokenizer = _untrained(lowercase)
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=[*SPECIAL_TOKENS, *pieces],
                                        show_progress=False)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    tokenizer = _without_added_tokens(tokenizer, SPECIAL_TOKENS)
    for expected, token in enumerate(SPECIAL_TOKENS):
        if tokenizer.token_to_id(token) != expected:
            raise RuntimeError(f"special token {token} did not get id {expected}")
    return tokenizer
