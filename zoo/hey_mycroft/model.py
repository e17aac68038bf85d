"""openWakeWord's "hey mycroft" keyword spotter (v0.1): the classifier that sits on top of
Google's speech-embedding features. 16 consecutive 96-d embeddings (1.28 s of audio,
one every 80 ms) go through two bidirectional LSTM layers (64 then 32 units each way);
the forward direction's last output and the backward direction's first (each having
seen the whole window) are concatenated and a dense layer with a sigmoid gives the
probability that the phrase was said. This is Keras's
`Bidirectional(LSTM(64, return_sequences=True))`, `Bidirectional(LSTM(32))`,
`Dense(1, sigmoid)`, as the package's ONNX file records it.

What sets it apart from the zoo's other models: stacked bidirectional LSTMs (a time
reversal inside the graph) over a sequence input."""

from __future__ import annotations

import torch
from torch import nn

FRAMES = 16
FEATURES = 96


class WakeWordHead(nn.Module):
    def __init__(self, features: int = FEATURES, hidden1: int = 64, hidden2: int = 32):
        super().__init__()
        self.lstm1 = nn.LSTM(features, hidden1, batch_first=True, bidirectional=True)
        self.lstm2 = nn.LSTM(2 * hidden1, hidden2, batch_first=True, bidirectional=True)
        self.dense = nn.Linear(2 * hidden2, 1)
        self.hidden2 = hidden2

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """embeddings: B x 16 x 96. Returns B x 1, the wake-phrase probability."""
        x, _ = self.lstm1(embeddings)
        x, _ = self.lstm2(x)
        last = torch.cat([x[:, -1, : self.hidden2], x[:, 0, self.hidden2:]], dim=1)
        return torch.sigmoid(self.dense(last))


def build_model() -> nn.Module:
    return WakeWordHead()
