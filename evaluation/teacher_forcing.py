"""Teacher forcing, free running and scheduled sampling; measuring exposure bias.

A sequence model factorises p_θ(x_1..x_T) = Π_t p_θ(x_t | x_<t), so maximum likelihood on data
sequences is the sum of next-token cross-entropies with the *true* prefix as input (teacher
forcing):

    L_TF(θ) = −(1 / (B T)) Σ_b Σ_t log p_θ(y_{b,t} | x_{b,≤t}),   y_{b,t} = x_{b,t+1}.

At test time the model reads its *own* tokens (free running): x̂_{t+1} ~ p_θ(· | x̂_≤t). The
prefixes of training come from the data, those of generation from the model (exposure bias); one
early mistake puts every later step on a prefix training never showed.

**Scheduled sampling** (Bengio et al. 2015) trains on a mixture: at training step i, every input
position t ≥ 1 of every sequence flips its own coin m_{b,t} ~ Bernoulli(ε_i) and reads

    x̃_{b,t} = x_{b,t}                    if m_{b,t} = 1   (the truth),
    x̃_{b,t} = x̂_{b,t} ~ p_θ(· | x̃_{b,<t}) if m_{b,t} = 0   (the model's own prediction),

with x̃_{b,0} = x_{b,0} (nothing predicts the first input), while the target stays the truth
y_{b,t}. ε_i, the probability of the truth, decays over training (linear, exponential or inverse
sigmoid, below). No gradient flows through the sampled tokens (they are discrete). The coin is
per token, not per sequence: a sequence mixes truth and predictions.

Two ways to get x̂ (``method``):

- ``"exact"``: position by position, x̂_{b,t} drawn from the logits the model gives on the *mixed*
  prefix x̃_{<t}, as Bengio et al. did with RNNs. With ``cache=True`` it feeds one token per call
  through ``model.init_cache`` (the LM protocol of ``autoregressive``: an RNN's state), so the
  logits keep their graph through the state; ``cache=False`` re-runs the model on the whole
  mixed prefix at every position (any model, T forward passes; a KV cache written in place cannot
  carry gradients, so use this for a transformer).
- ``"two_pass"``: the approximation used for transformers (Mihaylova & Martins 2019; Duckworth et
  al. 2019): pass 1, without gradients, runs the model teacher-forced and takes x̂_{t} from its
  logits at t − 1 on the *true* prefix; the inputs are mixed; pass 2 computes the loss on x̃. It
  costs two parallel passes instead of T sequential ones, but x̂_t ignores the earlier mixing.

The model is any module mapping int64 tokens (B, T) to logits (B, T, V) (``autoregressive``'s
GPT, RecurrentLM, or ssm's Mamba); this module imports no model family (it takes the model as an
argument). Huszár (2015) showed that scheduled sampling is an inconsistent objective: with the
truth inside the model class its minimiser is in general *not* the data distribution (the
notebook computes one case in closed form).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from utils.data import IGNORE  # a target that is not scored (= autoregressive.IGNORE, −100)
from utils.training import check_finite
from utils.validation import check_choice, check_int, shape_of

__all__ = ["IGNORE", "METHODS", "ExposureErrors", "Rollout", "exponential_decay",
           "exposure_errors", "free_running", "given_inputs", "inverse_sigmoid_decay",
           "linear_decay", "mix_inputs", "mixed_rollout", "repeated_ngrams",
           "scheduled_sampling_step", "teacher_forced_loss", "token_nll", "truth_mask"]

METHODS = ("exact", "two_pass")


# -- the schedules ε_i (Bengio et al. 2015, §2.4): probability of feeding the truth at step i ---

def _probability(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
    return float(value)


def linear_decay(i: int, *, slope: float, start: float = 1.0, floor: float = 0.0) -> float:
    """ε_i = max(floor, start − slope · i): from ``start`` down to ``floor``, linearly."""
    i = check_int("i", i, minimum=0)
    start, floor = _probability("start", start), _probability("floor", floor)
    if floor > start:
        raise ValueError(f"floor ({floor}) must be at most start ({start})")
    if isinstance(slope, bool) or not isinstance(slope, (int, float)) \
            or not 0.0 <= slope < math.inf:
        raise ValueError(f"slope must be a finite number >= 0, got {slope!r}")
    return max(floor, start - slope * i)


def exponential_decay(i: int, k: float) -> float:
    """ε_i = k^i with 0 < k <= 1."""
    i = check_int("i", i, minimum=0)
    if isinstance(k, bool) or not isinstance(k, (int, float)) or not 0.0 < k <= 1.0:
        raise ValueError(f"k must lie in (0, 1] for the exponential decay k^i, got {k!r}")
    return float(k) ** i


def inverse_sigmoid_decay(i: int, k: float) -> float:
    """ε_i = k / (k + exp(i / k)) with k >= 1 (ε_0 = k / (k + 1); halves near i = k ln k)."""
    i = check_int("i", i, minimum=0)
    if isinstance(k, bool) or not isinstance(k, (int, float)) or not 1.0 <= k < math.inf:
        raise ValueError(f"k must be a finite number >= 1 for the inverse sigmoid decay, got "
                         f"{k!r}")
    z = i / k
    return 0.0 if z > 700 else k / (k + math.exp(z))   # exp overflows past ~709


# -- mixing ---------------------------------------------------------------------------------

def _tokens(name: str, x: object) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dtype != torch.int64 or x.ndim != 2 \
            or x.shape[0] < 1 or x.shape[1] < 1:
        dtype = f" {x.dtype}" if isinstance(x, torch.Tensor) else ""
        raise ValueError(f"{name} must be an int64 tensor (B, T) with B, T >= 1, got "
                         f"{shape_of(x)}{dtype}")
    return x


def truth_mask(batch: int, length: int, epsilon: float, *, generator: torch.Generator | None
               = None, device: torch.device | str | None = None) -> torch.Tensor:
    """m (B, T) bool: m[:, 0] = True and every m[b, t], t >= 1, an independent Bernoulli(ε) coin
    (True: feed the truth x_{b,t}; False: the model's own prediction). ``generator`` lives on
    ``device``."""
    batch = check_int("batch", batch, minimum=1)
    length = check_int("length", length, minimum=1)
    epsilon = _probability("epsilon", epsilon)
    m = torch.rand(batch, length, generator=generator, device=device) < epsilon
    m[:, 0] = True
    return m


def given_inputs(y: torch.Tensor) -> torch.Tensor:
    """g (B, T) bool: the input positions nothing predicts, which always read the data: t = 0,
    and every t whose token is not a target (y[:, t − 1] = ``IGNORE``: a prompt, a source
    sentence, an exogenous input). Free running replaces every other position."""
    y = _tokens("y", y)
    g = torch.ones_like(y, dtype=torch.bool)
    g[:, 1:] = y[:, :-1] == IGNORE
    return g


def mix_inputs(x: torch.Tensor, predicted: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x̃ (B, T): x̃[:, 0] = x[:, 0], x̃[:, t] = x[:, t] where mask[:, t] else predicted[:, t − 1].

    x (B, T) the true inputs; predicted (B, T) int64, predicted[:, t] the model's guess of the
    token after position t (so of x[:, t + 1]); mask (B, T) bool from :func:`truth_mask`."""
    x, predicted = _tokens("x", x), _tokens("predicted", predicted)
    if predicted.shape != x.shape or not isinstance(mask, torch.Tensor) \
            or mask.dtype != torch.bool or mask.shape != x.shape:
        raise ValueError(f"predicted (int64) and mask (bool) must have x's shape "
                         f"{tuple(x.shape)}, got {shape_of(predicted)} and {shape_of(mask)}")
    shifted = torch.cat([x[:, :1], predicted[:, :-1]], dim=1)  # the guess of each x[:, t]
    keep = mask.clone()
    keep[:, 0] = True
    return torch.where(keep, x, shifted)


def _predict(logits: torch.Tensor, greedy: bool, generator: torch.Generator | None
             ) -> torch.Tensor:
    """One token per row of logits (..., V): argmax, or a draw from softmax(logits)."""
    if greedy:
        return logits.argmax(-1)
    p = torch.softmax(logits.detach().float(), dim=-1)
    return torch.multinomial(p.reshape(-1, p.shape[-1]), 1, generator=generator
                             ).view(p.shape[:-1])


class Rollout(NamedTuple):
    """``tokens`` (B, T) int64: the inputs the model read (x̃); ``logits`` (B, T, V):
    logits[:, t] the model's next-token logits after reading tokens[:, ≤ t]."""

    tokens: torch.Tensor
    logits: torch.Tensor


def mixed_rollout(model: nn.Module, x: torch.Tensor, mask: torch.Tensor, *,
                  method: str = "exact", greedy: bool = False, cache: bool = True,
                  generator: torch.Generator | None = None) -> Rollout:
    """Run ``model`` on x (B, T) where every position with mask False reads the model's own
    prediction instead of the truth (module docstring: ``method`` "exact" or "two_pass").

    x̂ is the argmax (``greedy``) or a sample of the previous position's logits. The logits
    carry gradients (not through x̂); with mask all True this is teacher forcing, with mask True
    only on a prompt it is free running. Returns :class:`Rollout` (x̃, logits (B, T, V))."""
    x = _tokens("x", x)
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.shape != x.shape:
        raise ValueError(f"mask must be a bool tensor of x's shape {tuple(x.shape)}, got "
                         f"{shape_of(mask)}")
    method = check_choice("method", method, METHODS)
    if method == "two_pass":
        with torch.no_grad():
            predicted = _predict(model(x), greedy, generator)
        mixed = mix_inputs(x, predicted, mask)
        return Rollout(mixed, model(mixed))
    B, T = x.shape
    state = model.init_cache(B) if cache else None
    tokens, steps = x[:, :1], []
    for t in range(T):
        if t > 0:
            guess = _predict(steps[-1], greedy, generator)
            tokens = torch.cat([tokens, torch.where(mask[:, t], x[:, t], guess)[:, None]], 1)
        out = model(tokens[:, -1:], cache=state) if cache else model(tokens)
        steps.append(out[:, -1])
    return Rollout(tokens, torch.stack(steps, dim=1))


def free_running(model: nn.Module, prompt: torch.Tensor, length: int, *, greedy: bool = True,
                 cache: bool = True, generator: torch.Generator | None = None) -> Rollout:
    """The model continues ``prompt`` (B, T0) on its own up to ``length`` tokens, keeping its
    logits: :func:`mixed_rollout` with the truth fed on the prompt only. Without gradients."""
    prompt = _tokens("prompt", prompt)
    length = check_int("length", length, minimum=prompt.shape[1])
    B, T0 = prompt.shape
    x = torch.cat([prompt, prompt.new_zeros(B, length - T0)], dim=1)
    mask = torch.zeros(B, length, dtype=torch.bool, device=prompt.device)
    mask[:, :T0] = True
    with torch.no_grad():
        return mixed_rollout(model, x, mask, greedy=greedy, cache=cache, generator=generator)


class ExposureErrors(NamedTuple):
    """(B, T) bool each, False where y is ``IGNORE``: ``teacher_forced``, the argmax is wrong
    on the true prefix; ``free_running``, it is wrong on the model's own prefix."""

    teacher_forced: torch.Tensor
    free_running: torch.Tensor


def exposure_errors(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, cache: bool = True
                    ) -> ExposureErrors:
    """Per-position argmax errors against the true targets y (B, T), teacher forced (every
    input from x) and free running (greedy: every predicted input, i.e. not
    :func:`given_inputs` (y), is the model's own argmax). For a task whose truth is fixed by the
    given inputs. Both runs take the same path, so a row's free run equals the truth up to its
    first teacher-forced error, exactly. Eval mode for the call, without gradients."""
    x, y = _tokens("x", x), _tokens("y", y)
    if y.shape != x.shape:
        raise ValueError(f"y must have x's shape {tuple(x.shape)}, got {tuple(y.shape)}")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            runs = [mixed_rollout(model, x, m, greedy=True, cache=cache).logits.argmax(-1)
                    for m in (torch.ones_like(x, dtype=torch.bool), given_inputs(y))]
    finally:
        model.train(was_training)
    scored = y != IGNORE
    return ExposureErrors(*((guess != y) & scored for guess in runs))


# -- losses and a step for utils.training.fit ------------------------------------------------

def token_nll(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """−log softmax(logits)[y] per token: (B, T) from logits (B, T, V) and targets y (B, T);
    0 where y is ``IGNORE``. Its mean over scored tokens is the teacher-forced loss."""
    if not isinstance(logits, torch.Tensor) or logits.ndim != 3 \
            or not logits.dtype.is_floating_point or not isinstance(y, torch.Tensor) \
            or y.shape != logits.shape[:2]:
        raise ValueError(f"logits must be a float tensor (B, T, V) and y (B, T), got "
                         f"{shape_of(logits)} and {shape_of(y)}")
    lp = logits.float() if logits.element_size() < 4 else logits
    return F.cross_entropy(lp.transpose(1, 2), y, ignore_index=IGNORE, reduction="none")


def teacher_forced_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """L_TF: the mean of :func:`token_nll` of ``model(x)`` over the scored targets (nats/token)."""
    nll = token_nll(model(_tokens("x", x)), y)
    return nll.sum() / (y != IGNORE).sum().clamp_min(1)


def scheduled_sampling_step(model: nn.Module, optimizer: torch.optim.Optimizer,
                            epsilon: float | Callable[[int], float], *, method: str = "exact",
                            greedy: bool = False, cache: bool = True, clip: float | None = 1.0,
                            scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
                            start: int = 0, generator: torch.Generator | None = None
                            ) -> Callable[[tuple[torch.Tensor, torch.Tensor]], dict[str, float]]:
    """A ``step((x, y)) -> {"loss", "epsilon", "truth_fed"}`` for :func:`utils.training.fit`.

    At its i-th call (i = start, start + 1, …; pass the resumed step as ``start``) it draws
    m = :func:`truth_mask` with ε_i (``epsilon``: a number, or a schedule i -> ε_i such as
    ``lambda i: inverse_sigmoid_decay(i, 300)``), runs :func:`mixed_rollout` on the mask
    m | :func:`given_inputs` (y) (a position whose token is not a target is always the data's),
    and minimises the cross-entropy of its logits against the true targets y (B, T), clipping
    the gradient norm to ``clip`` (None: no clipping), then steps ``scheduler`` (if any). With
    ε = 1 it is the teacher-forced step (``autoregressive.lm_step``).
    ``truth_fed`` is the measured share of the predicted positions that read the truth."""
    method = check_choice("method", method, METHODS)
    if clip is not None and (isinstance(clip, bool) or not isinstance(clip, (int, float))
                             or not clip > 0):
        raise ValueError(f"clip must be a positive number or None, got {clip!r}")
    if not callable(epsilon):
        fixed = _probability("epsilon", epsilon)
    schedule = epsilon if callable(epsilon) else (lambda i: fixed)
    calls = [check_int("start", start, minimum=0)]
    params = [p for p in model.parameters() if p.requires_grad]

    def step(batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, float]:
        x, y = batch
        eps = _probability("epsilon", schedule(calls[0]))
        calls[0] += 1
        model.train()
        given = given_inputs(y)
        mask = truth_mask(x.shape[0], x.shape[1], eps, generator=generator, device=x.device)
        mask |= given
        logits = mixed_rollout(model, x, mask, method=method, greedy=greedy, cache=cache,
                               generator=generator).logits
        nll = token_nll(logits, y)
        loss = nll.sum() / (y != IGNORE).sum().clamp_min(1)
        value = check_finite("loss", loss)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(params, clip)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        fed = float(mask[~given].float().mean()) if bool((~given).any()) else 1.0
        return {"loss": value, "epsilon": eps, "truth_fed": fed}

    return step


# -- a measurement of degeneration --------------------------------------------------------------

def repeated_ngrams(tokens: torch.Tensor, n: int) -> torch.Tensor:
    """r (B, T) bool: r[b, t] iff the n-gram tokens[b, t − n + 1 : t + 1] already ended at an
    earlier position s < t of the same row (False for t < n − 1). Its mean over b at each t is
    the share of sequences that are repeating themselves there (a loop)."""
    tokens = _tokens("tokens", tokens)
    n = check_int("n", n, minimum=1)
    B, T = tokens.shape
    r = torch.zeros(B, T, dtype=torch.bool, device=tokens.device)
    if T < n:
        return r
    grams = tokens.unfold(1, n, 1)                                    # (B, G, n), G = T − n + 1
    same = (grams[:, :, None, :] == grams[:, None, :, :]).all(-1)     # (B, G, G): g_t == g_s
    earlier = torch.ones(grams.shape[1], grams.shape[1], dtype=torch.bool,
                         device=tokens.device).tril(-1)               # s < t
    r[:, n - 1:] = (same & earlier).any(-1)
    return r
