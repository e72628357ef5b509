"""A reward model: a scalar head on a sequence model's final hidden state (04_rlhf).

For a sequence y (prompt + completion) of length L, padded to T, the reward is

    r_θ(y) = wᵀ h_{L−1} + b,            h = f_θ(y) ∈ R^{T×d},

h the backbone's last hidden states (for a language model: after its final norm, the input of
its readout, so no logits are needed) read at the last real token, position L − 1 (0-based).
With a causal backbone h_{L−1} depends on y_0 … y_{L−1} only, so the padding after L changes
nothing (tested). It is trained on preference pairs by the Bradley-Terry pairwise loss
−log σ(r_θ(y_c) − r_θ(y_r)) (:func:`alignment.pairwise_loss`); InstructGPT (Ouyang et al. 2022)
starts it from the policy's own pretrained transformer, here the book's GPT.

The LM protocol of ``autoregressive`` has no hidden-state output, so :func:`lm_hidden_states`
reads it with a forward pre-hook on the model's readout (the ``nn.Linear`` named ``head`` that
maps d to V: ``GPT.head``, ``LMHead.head`` inside S4 and Mamba language models), removed after
the call. Any other backbone is given as a ``features`` callable, idx (B, T) -> (B, T, d).

Shapes: idx (B, T) int64; lengths (B,) int64 in 1..T; hidden states (B, T, d); rewards (B,).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from utils.validation import check_int, shape_of

__all__ = ["RewardModel", "lm_hidden_states", "lm_readout"]


def lm_readout(model: nn.Module) -> nn.Linear:
    """The readout of a language model of the LM protocol: its last submodule that is an
    ``nn.Linear`` named ``head`` (or ``….head``) with ``out_features == model.vocab_size``."""
    vocab = getattr(model, "vocab_size", None)
    found = [m for name, m in model.named_modules()
             if (name == "head" or name.endswith(".head")) and isinstance(m, nn.Linear)
             and m.out_features == vocab]
    if not found:
        raise ValueError(f"{type(model).__name__} has no readout nn.Linear named 'head' with "
                         f"out_features = vocab_size ({vocab}); pass features=... instead")
    return found[-1]


def lm_hidden_states(model: nn.Module, idx: torch.Tensor) -> torch.Tensor:
    """The final hidden states h (B, T, d) of a language model fed idx (B, T): the input of its
    readout (:func:`lm_readout`), so ``readout(h)`` are the logits ``model(idx)`` returns."""
    readout = lm_readout(model)
    store: list[torch.Tensor] = []
    handle = readout.register_forward_pre_hook(lambda module, args: store.append(args[0]))
    try:
        model(idx)
    finally:
        handle.remove()
    return store[-1]


class RewardModel(nn.Module):
    """r_θ(y) = wᵀ h_{L−1} + b on a backbone's last hidden state (see the module docstring).

    Args:
        backbone: the sequence model (trained with the head; its parameters are this module's).
            Without ``features`` it must be a language model whose readout
            :func:`lm_readout` finds (e.g. :class:`autoregressive.GPT`).
        d_model: d, the width of the hidden states.
        features: optional callable idx (B, T) -> h (B, T, d), for any other backbone.

    ``model(idx, lengths=None)``: idx (B, T) int64, lengths (B,) int64 in 1..T (``None``: all
    T) -> rewards (B,). The head starts at w ~ N(0, 0.02²), b = 0 (GPT-2's scale).
    """

    def __init__(self, backbone: nn.Module, d_model: int, *,
                 features: Callable[[torch.Tensor], torch.Tensor] | None = None):
        super().__init__()
        if not isinstance(backbone, nn.Module):
            raise ValueError(f"backbone must be an nn.Module, got {type(backbone).__name__}")
        self.d_model = check_int("d_model", d_model, minimum=1)
        if features is None:
            readout = lm_readout(backbone)
            if readout.in_features != self.d_model:
                raise ValueError(f"d_model = {self.d_model}, but the backbone's readout takes "
                                 f"{readout.in_features} features")
        elif not callable(features):
            raise ValueError(f"features must be callable, got {type(features).__name__}")
        self.backbone = backbone
        self._features = features
        self.score = nn.Linear(self.d_model, 1)
        nn.init.normal_(self.score.weight, 0.0, 0.02)
        nn.init.zeros_(self.score.bias)

    def hidden_states(self, idx: torch.Tensor) -> torch.Tensor:
        """h (B, T, d) of the backbone for idx (B, T)."""
        h = lm_hidden_states(self.backbone, idx) if self._features is None \
            else self._features(idx)
        if not isinstance(h, torch.Tensor) or h.ndim != 3 or h.shape[:2] != idx.shape \
                or h.shape[-1] != self.d_model:
            raise ValueError(f"the features must be (B, T, d) = ({idx.shape[0]}, {idx.shape[1]}, "
                             f"{self.d_model}), got {shape_of(h)}")
        return h

    def forward(self, idx: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if not isinstance(idx, torch.Tensor) or idx.ndim != 2 or idx.dtype != torch.int64 \
                or idx.shape[0] < 1 or idx.shape[1] < 1:
            raise ValueError(f"idx must be an int64 tensor (B, T) with B, T >= 1, got "
                             f"{shape_of(idx)}")
        b, t = idx.shape
        if lengths is None:
            lengths = torch.full((b,), t, dtype=torch.int64, device=idx.device)
        if not isinstance(lengths, torch.Tensor) or lengths.dtype != torch.int64 \
                or lengths.shape != (b,):
            raise ValueError(f"lengths must be an int64 tensor ({b},), got {shape_of(lengths)}")
        if int(lengths.min()) < 1 or int(lengths.max()) > t:
            raise ValueError(f"lengths must lie in 1..{t}, got {int(lengths.min())}.."
                             f"{int(lengths.max())}")
        h = self.hidden_states(idx)                                     # (B, T, d)
        last = h[torch.arange(b, device=h.device), lengths.to(h.device) - 1]   # (B, d)
        return self.score(last).squeeze(-1)                             # (B,)
