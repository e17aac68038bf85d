"""Silero VAD v5/v6 (16 kHz), the voice activity detector of the `silero-vad` package,
in PyTorch: one 32 ms chunk of audio (512 new samples after 64 of context) and the LSTM
state in, the speech probability and the next state out. The module names are those of
the package's own safetensors file (`stft_conv.weight`, `lstm_cell.weight_ih`, ...) and
the forward pass follows the package's reference re-implementation
(silero_vad/tinygrad_model.py):

- the STFT as a strided 1-D convolution with 258 fixed filters (the real and imaginary
  parts of 129 frequency bins, 256-sample window, hop 128), after reflect-padding 64
  samples on the right; the magnitude is sqrt(re^2 + im^2);
- four 1-D convolutions (two with stride 2) shrink the 4 frames to 1;
- an LSTM cell carries context across chunks; its state is an input and an output, so
  the model is stateless and streams by feeding the state back;
- a 1x1 convolution and a sigmoid give the probability.

What sets it apart from the zoo's other models: audio in, an STFT by convolution,
sqrt, an LSTM cell and a second output that is a recurrent state."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

SAMPLE_RATE = 16000
CONTEXT = 64
CHUNK = 512
HIDDEN = 128
N_FFT = 256
HOP = 128


class Magnitude(nn.Module):
    """|STFT| from the real and imaginary halves of the filter bank's output."""

    def __init__(self, cutoff: int):
        super().__init__()
        self.cutoff = cutoff

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(x[:, : self.cutoff] ** 2 + x[:, self.cutoff:] ** 2)


class SileroVAD(nn.Module):
    def __init__(self):
        super().__init__()
        self.cutoff = N_FFT // 2 + 1
        self.stft_conv = nn.Conv1d(1, 2 * self.cutoff, N_FFT, stride=HOP, bias=False)
        self.magnitude = Magnitude(self.cutoff)
        self.conv1 = nn.Conv1d(self.cutoff, 128, 3, padding=1)
        self.conv2 = nn.Conv1d(128, 64, 3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(64, 64, 3, stride=2, padding=1)
        self.conv4 = nn.Conv1d(64, 128, 3, padding=1)
        self.lstm_cell = nn.LSTMCell(128, HIDDEN)
        self.final_conv = nn.Conv1d(HIDDEN, 1, 1)

    def forward(self, audio: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """audio: B x 576 (64 samples of the previous chunk, then 512 new ones) in [-1, 1];
        state: B x 2 x 128 (h, c; zeros at the start of a stream). The package's own
        ONNX file puts the batch second (2 x B x 128); here it is first, as every
        input's batch dimension is for edgepack.
        Returns the speech probability (B x 1) and the next state (B x 2 x 128)."""
        x = F.pad(audio.unsqueeze(1), (0, CONTEXT), mode="reflect")
        x = self.stft_conv(x)
        x = self.magnitude(x)
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.relu(self.conv3(x))
        x = F.relu(self.conv4(x)).squeeze(-1)
        h, c = self.lstm_cell(x, (state[:, 0], state[:, 1]))
        y = torch.sigmoid(self.final_conv(F.relu(h).unsqueeze(-1)))
        return y.squeeze(1).mean(1, keepdim=True), torch.stack([h, c], dim=1)


def build_model() -> nn.Module:
    return SileroVAD()
