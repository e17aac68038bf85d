"""all-MiniLM-L6-v2 (Reimers & Gurevych's sentence-transformers model on Wang et al.'s
MiniLM-L6-H384: a 6-layer, 384-wide, 12-head BERT encoder) with its sentence head:
mean of the token vectors under the attention mask, then L2 normalisation. The module
tree is Hugging Face's BertModel's (`embeddings.word_embeddings.weight`,
`encoder.layer.3.attention.self.query.weight`, `encoder.layer.5.output.LayerNorm.bias`,
...), so the checkpoint loads unchanged (less its pooler, which mean pooling does not
use, and the constant `position_ids` buffer).

What sets it apart from the zoo's other models: two integer inputs (token ids and the
attention mask), an embedding lookup, scaled dot-product attention with the padding
masked out, GELU, LayerNorm, and a masked mean over the sequence."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

VOCAB = 30522
HIDDEN = 384
LAYERS = 6
HEADS = 12
INTERMEDIATE = 1536
MAX_POSITIONS = 512
LN_EPS = 1e-12


class Embeddings(nn.Module):
    def __init__(self, vocab: int, hidden: int, max_positions: int):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, hidden, padding_idx=0)
        self.position_embeddings = nn.Embedding(max_positions, hidden)
        self.token_type_embeddings = nn.Embedding(2, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=LN_EPS)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        # One segment: every token has type 0.
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions) + self.token_type_embeddings.weight[0]
        return self.LayerNorm(x)


class SelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int):
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, n, self.heads, d // self.heads).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(d // self.heads) + mask_bias
        return (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, n, d)


class AttentionOutput(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=LN_EPS)


class Attention(nn.Module):
    def __init__(self, hidden: int, heads: int):
        super().__init__()
        self.self = SelfAttention(hidden, heads)
        self.output = AttentionOutput(hidden)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        return self.output.LayerNorm(x + self.output.dense(self.self(x, mask_bias)))


class Intermediate(nn.Module):
    def __init__(self, hidden: int, intermediate: int):
        super().__init__()
        self.dense = nn.Linear(hidden, intermediate)


class Output(nn.Module):
    def __init__(self, intermediate: int, hidden: int):
        super().__init__()
        self.dense = nn.Linear(intermediate, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=LN_EPS)


class Layer(nn.Module):
    def __init__(self, hidden: int, heads: int, intermediate: int):
        super().__init__()
        self.attention = Attention(hidden, heads)
        self.intermediate = Intermediate(hidden, intermediate)
        self.output = Output(intermediate, hidden)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        x = self.attention(x, mask_bias)
        return self.output.LayerNorm(x + self.output.dense(F.gelu(self.intermediate.dense(x))))


class Encoder(nn.Module):
    def __init__(self, hidden: int, heads: int, intermediate: int, layers: int):
        super().__init__()
        self.layer = nn.ModuleList(Layer(hidden, heads, intermediate) for _ in range(layers))


class SentenceEncoder(nn.Module):
    def __init__(self, vocab: int = VOCAB, hidden: int = HIDDEN, layers: int = LAYERS, heads: int = HEADS,
                 intermediate: int = INTERMEDIATE, max_positions: int = MAX_POSITIONS):
        super().__init__()
        self.embeddings = Embeddings(vocab, hidden, max_positions)
        self.encoder = Encoder(hidden, heads, intermediate, layers)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """input_ids, attention_mask: B x N int64 (mask 1 for tokens, 0 for padding).
        Returns B x hidden unit vectors."""
        mask = attention_mask.to(torch.float32)
        # Padding gets a large negative score before the softmax; finite, so a
        # quantizer's ranges stay finite too.
        mask_bias = ((1.0 - mask) * -10000.0)[:, None, None, :]
        x = self.embeddings(input_ids)
        for layer in self.encoder.layer:
            x = layer(x, mask_bias)
        pooled = (x * mask[:, :, None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1e-9)
        return F.normalize(pooled, dim=1)


def build_model() -> nn.Module:
    return SentenceEncoder()
