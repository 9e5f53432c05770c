"""A tiny reranker GGUF, written with the `gguf` package: a random-weight BERT encoder with rank pooling and the
classification head llama.cpp attaches for it (`cls`, `cls.output`), over a small WordPiece vocabulary.

Random weights score nonsense, but deterministic nonsense: enough to show that scores come from the model (they
change with the query and the document), are the same on every run, and are sorted and cut as asked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gguf import GGUFWriter, PoolingType, TokenType

_SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_WORDS = [
    "the",
    "a",
    "an",
    "of",
    "to",
    "in",
    "is",
    "on",
    "and",
    "or",
    "cat",
    "dog",
    "fish",
    "bird",
    "paris",
    "france",
    "berlin",
    "germany",
    "capital",
    "city",
    "river",
    "sea",
    "sky",
    "blue",
    "red",
    "green",
    "what",
    "where",
    "who",
    "which",
    "animal",
    "color",
    "country",
    "language",
    "python",
    "code",
    "model",
    "rank",
    "search",
    "answer",
    "question",
    "document",
    "query",
    "best",
    "good",
    "bad",
    "small",
    "large",
    "fast",
    "slow",
]


def make_reranker(target: Path, *, embedding: int = 32, layers: int = 2, heads: int = 2, seed: int = 0) -> Path:
    """A rank-pooling BERT at `target` (F32, one relevance score per pair)."""
    rng = np.random.default_rng(seed)
    context, ffn = 128, embedding * 2
    vocab = _SPECIAL + ["\u2581" + w for w in _WORDS]  # (whole words carry WordPiece's phantom space)
    target.parent.mkdir(parents=True, exist_ok=True)
    writer = GGUFWriter(target, "bert")
    writer.add_name("tiny-reranker")
    writer.add_context_length(context)
    writer.add_embedding_length(embedding)
    writer.add_feed_forward_length(ffn)
    writer.add_block_count(layers)
    writer.add_head_count(heads)
    writer.add_layer_norm_eps(1e-12)
    writer.add_causal_attention(False)
    writer.add_pooling_type(PoolingType.RANK)
    writer.add_file_type(0)
    writer.add_tokenizer_model("bert")
    writer.add_token_list(vocab)
    writer.add_token_types([TokenType.CONTROL] * len(_SPECIAL) + [TokenType.NORMAL] * len(_WORDS))
    writer.add_token_type_count(2)
    writer.add_bos_token_id(_SPECIAL.index("[CLS]"))
    writer.add_eos_token_id(_SPECIAL.index("[SEP]"))
    writer.add_sep_token_id(_SPECIAL.index("[SEP]"))
    writer.add_unk_token_id(_SPECIAL.index("[UNK]"))
    writer.add_pad_token_id(_SPECIAL.index("[PAD]"))
    writer.add_mask_token_id(_SPECIAL.index("[MASK]"))
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(True)

    def weights(*shape: int, scale: float = 0.2) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    def ones(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    def zeros(n: int) -> np.ndarray:
        return np.zeros(n, dtype=np.float32)

    # numpy shapes are ggml's reversed: a [inputs, outputs] ggml matrix is (outputs, inputs) here.
    writer.add_tensor("token_embd.weight", weights(len(vocab), embedding, scale=1.0))
    writer.add_tensor("token_types.weight", weights(2, embedding))
    writer.add_tensor("position_embd.weight", weights(context, embedding))
    writer.add_tensor("token_embd_norm.weight", ones(embedding))
    writer.add_tensor("token_embd_norm.bias", zeros(embedding))
    for i in range(layers):
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"blk.{i}.{name}.weight", weights(embedding, embedding))
            writer.add_tensor(f"blk.{i}.{name}.bias", zeros(embedding))
        writer.add_tensor(f"blk.{i}.attn_output_norm.weight", ones(embedding))
        writer.add_tensor(f"blk.{i}.attn_output_norm.bias", zeros(embedding))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", weights(ffn, embedding))
        writer.add_tensor(f"blk.{i}.ffn_up.bias", zeros(ffn))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", weights(embedding, ffn))
        writer.add_tensor(f"blk.{i}.ffn_down.bias", zeros(embedding))
        writer.add_tensor(f"blk.{i}.layer_output_norm.weight", ones(embedding))
        writer.add_tensor(f"blk.{i}.layer_output_norm.bias", zeros(embedding))
    writer.add_tensor("cls.weight", weights(embedding, embedding))
    writer.add_tensor("cls.bias", zeros(embedding))
    writer.add_tensor("cls.output.weight", weights(1, embedding, scale=1.0))
    writer.add_tensor("cls.output.bias", zeros(1))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return target
