"""The one training loop (DESIGN.md §7).

A model family writes a ``step(batch) -> dict[str, float]`` that does one update (a GAN alternates
critic and generator inside it) and returns the numbers worth plotting. :func:`fit` owns the rest:
device placement, a tqdm progress bar, the metric history, an exponential moving average (EMA) of
the weights, checkpoint save and resume, and NaN detection::

    def step(batch):
        optimizer.zero_grad()
        loss = -model.log_prob(batch).mean()
        loss.backward()
        optimizer.step()
        return {"nll": loss.item()}

    result = fit(step, batches(x, batch_size=256), steps=2_000, models=model, optimizers=optimizer)
    training_curves(result.history)

A checkpoint holds the ``state_dict`` of every model, optimiser, scheduler and EMA, the step, the
metric history, the RNG states (Python, NumPy, torch CPU and CUDA) and the run's config, and is
loaded with ``weights_only=True``. So a run interrupted at step s and resumed from its checkpoint
ends with the same weights as one that was never interrupted, provided ``batches(s)`` depends only
on ``s`` (as :func:`utils.data.batches` does).
"""

from __future__ import annotations

import copy
import math
import os
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm  # the text bar: it renders in terminals, Jupyter and the HTML book alike

from utils.config import device as default_device
from utils.validation import check_int

__all__ = [
    "EMA",
    "FitResult",
    "NonFiniteLossError",
    "fit",
    "load_checkpoint",
    "save_checkpoint",
    "to_device",
]

CHECKPOINT_FORMAT = 1


class NonFiniteLossError(FloatingPointError):
    """A metric from the step was NaN or infinite: the run stops instead of plotting garbage."""


class EMA:
    """Exponential moving average of a module's weights.

    After every step, for each floating-point parameter θ of the trained module,
    ``θ̄ ← decay · θ̄ + (1 - decay) · θ``; buffers (e.g. BatchNorm statistics) are copied.
    ``averaged`` is a frozen copy of the module, in eval mode, holding θ̄.
    """

    def __init__(self, module: nn.Module, decay: float = 0.999):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must lie in (0, 1), got {decay}")
        self.decay = float(decay)
        self.averaged = copy.deepcopy(module).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        for avg, p in zip(self.averaged.parameters(), module.parameters(), strict=True):
            if p.dtype.is_floating_point:
                avg.lerp_(p.detach(), 1.0 - self.decay)
            else:
                avg.copy_(p)
        for avg, b in zip(self.averaged.buffers(), module.buffers(), strict=True):
            avg.copy_(b)

    def state_dict(self) -> dict[str, Any]:
        return self.averaged.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.averaged.load_state_dict(state)


@dataclass
class FitResult:
    """What :func:`fit` returns.

    ``history[name]`` is the list of a metric's values, one per step, aligned with
    ``history["step"]``; ``ema[name]`` the averaged copy of each model (empty without
    ``ema_decay``); ``step`` the number of steps done; ``seconds`` the wall time of this call.
    """

    history: dict[str, list[float]]
    ema: dict[str, nn.Module] = field(default_factory=dict)
    step: int = 0
    seconds: float = 0.0


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor in a (nested) tuple, list or dict to ``device``; leave the rest."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # NamedTuple
        return type(batch)(*(to_device(v, device) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def _named(obj: Any, default: str, kind: str) -> dict[str, Any]:
    if obj is None:
        return {}
    if isinstance(obj, Mapping):
        return dict(obj)
    if kind == "models" and not isinstance(obj, nn.Module):
        raise ValueError(f"models must be an nn.Module or a dict of them, got {type(obj).__name__}")
    return {default: obj}


def _rng_state() -> dict[str, Any]:
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": {"version": version, "mt": torch.tensor(mt, dtype=torch.int64), "gauss": gauss},
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["mt"].tolist()), py["gauss"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | os.PathLike, *, step: int, models: Mapping[str, nn.Module],
                    optimizers: Mapping[str, Any] | None = None,
                    schedulers: Mapping[str, Any] | None = None,
                    ema: Mapping[str, EMA] | None = None,
                    history: Mapping[str, list] | None = None,
                    config: Mapping[str, Any] | None = None) -> None:
    """Write a checkpoint (state dicts, step, history, RNG states, config) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "format": CHECKPOINT_FORMAT,
        "step": int(step),
        "models": {k: m.state_dict() for k, m in models.items()},
        "optimizers": {k: o.state_dict() for k, o in (optimizers or {}).items()},
        "schedulers": {k: s.state_dict() for k, s in (schedulers or {}).items()},
        "ema": {k: e.state_dict() for k, e in (ema or {}).items()},
        "history": {k: list(v) for k, v in (history or {}).items()},
        "config": dict(config) if config is not None else None,
        "rng": _rng_state(),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # a run killed while saving never leaves a torn checkpoint


def load_checkpoint(path: str | os.PathLike, *, models: Mapping[str, nn.Module],
                    optimizers: Mapping[str, Any] | None = None,
                    schedulers: Mapping[str, Any] | None = None,
                    ema: Mapping[str, EMA] | None = None,
                    restore_rng: bool = True, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` into the given objects.

    Loads with ``weights_only=True`` (no arbitrary code from a pickle). Returns the raw dict (step,
    history, config). The names of models, optimisers, schedulers and EMAs must match the saved
    ones exactly, so a checkpoint is never half-loaded.
    """
    state = torch.load(path, map_location=map_location, weights_only=True)
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a checkpoint of format {CHECKPOINT_FORMAT}")
    for kind, objs in (("models", models), ("optimizers", optimizers), ("schedulers", schedulers),
                       ("ema", ema)):
        objs = objs or {}
        if set(objs) != set(state[kind]):
            raise ValueError(
                f"{path}: checkpoint has {kind} {sorted(state[kind])}, this run has {sorted(objs)}"
            )
        for name, obj in objs.items():
            obj.load_state_dict(state[kind][name])
    if restore_rng:
        _set_rng_state(state["rng"])
    return state


def fit(step: Callable[[Any], Mapping[str, float]],
        batches: Callable[[int], Any] | Iterable[Any],
        steps: int, *,
        models: nn.Module | Mapping[str, nn.Module],
        optimizers: Any | Mapping[str, Any] | None = None,
        schedulers: Any | Mapping[str, Any] | None = None,
        ema_decay: float | None = None,
        checkpoint: str | os.PathLike | None = None,
        checkpoint_every: int | None = None,
        resume: bool = True,
        config: Mapping[str, Any] | None = None,
        device: torch.device | str | None = None,
        progress: bool = True,
        desc: str = "training") -> FitResult:
    """Run ``step`` for global steps ``0 … steps-1`` and return the history and EMA models.

    Args:
        step: does one update on a batch (already on ``device``) and returns ``{name: float}``.
        batches: ``batches(s)`` gives the batch of global step ``s`` (a stateless sampler such
            as :func:`utils.data.batches`, which makes resume exact), or any iterable, cycled
            when exhausted (on resume its first ``s`` items are skipped).
        steps: the total number of steps of the run (not of this call: a resumed run goes on
            from its checkpoint's step up to ``steps``).
        models: the module(s) ``step`` trains; moved to ``device``, put in train mode, averaged
            by the EMA and checkpointed. Several as a dict, e.g. ``{"G": G, "D": D}``.
        optimizers, schedulers: checkpointed with the models (one or a dict of them); ``step``
            calls them itself.
        ema_decay: if given, keep an :class:`EMA` of every model, in ``FitResult.ema``.
        checkpoint: a file path; saved every ``checkpoint_every`` steps and at the end, and, if it
            exists and ``resume``, loaded first (with ``weights_only=True``).
        config: plain data (numbers, strings, lists, dicts) saved in the checkpoint; resuming with
            a different config is refused.
        device: where models and batches go; default :func:`utils.config.device`.

    Raises:
        NonFiniteLossError: a metric was NaN or infinite (names the step and the metric).
        ValueError: bad arguments, or a checkpoint that does not belong to this run.
    """
    steps = check_int("steps", steps, minimum=0)
    if checkpoint_every is not None:
        checkpoint_every = check_int("checkpoint_every", checkpoint_every, minimum=1)
    if checkpoint_every is not None and checkpoint is None:
        raise ValueError("checkpoint_every needs a checkpoint path")
    model_dict = _named(models, "model", "models")
    if not model_dict:
        raise ValueError("fit needs at least one model")
    optim_dict = _named(optimizers, "optimizer", "optimizers")
    sched_dict = _named(schedulers, "scheduler", "schedulers")
    dev = torch.device(device) if device is not None else default_device()
    for m in model_dict.values():
        m.to(dev).train()
    ema = {k: EMA(m, ema_decay) for k, m in model_dict.items()} if ema_decay is not None else {}
    history: dict[str, list[float]] = {"step": []}
    start = 0

    if checkpoint is not None and resume and Path(checkpoint).exists():
        state = load_checkpoint(checkpoint, models=model_dict, optimizers=optim_dict,
                                schedulers=sched_dict, ema=ema, map_location=dev)
        saved = state["config"]
        if config is not None and saved is not None and dict(config) != saved:
            raise ValueError(f"{checkpoint} was written with config {saved}, this run has "
                             f"{dict(config)}; delete the checkpoint or pass resume=False")
        start = state["step"]
        history = {k: list(v) for k, v in state["history"].items()} or history
        if start > steps:
            raise ValueError(f"{checkpoint} is at step {start}, beyond steps={steps}")

    get_batch = _batch_source(batches, start)
    t0 = time.perf_counter()
    bar = tqdm(total=steps, initial=start, desc=desc, disable=not progress, mininterval=1.0,
               dynamic_ncols=True)
    try:
        for s in range(start, steps):
            metrics = step(to_device(get_batch(s), dev))
            _record(history, s, metrics)
            for k, e in ema.items():
                e.update(model_dict[k])
            if checkpoint_every is not None and (s + 1) % checkpoint_every == 0:
                save_checkpoint(checkpoint, step=s + 1, models=model_dict, optimizers=optim_dict,
                                schedulers=sched_dict, ema=ema, history=history, config=config)
            bar.update(1)
            if s % 25 == 0 or s == steps - 1:
                bar.set_postfix({k: f"{v[-1]:.4g}" for k, v in history.items() if k != "step"},
                                refresh=False)
    finally:
        bar.close()
    if checkpoint is not None and steps > start:
        save_checkpoint(checkpoint, step=steps, models=model_dict, optimizers=optim_dict,
                        schedulers=sched_dict, ema=ema, history=history, config=config)
    return FitResult(history=history, ema={k: e.averaged for k, e in ema.items()},
                     step=steps, seconds=time.perf_counter() - t0)


def _batch_source(batches: Callable[[int], Any] | Iterable[Any],
                  start: int) -> Callable[[int], Any]:
    if callable(batches):
        return batches
    if not isinstance(batches, Iterable):
        raise ValueError(f"batches must be callable (step -> batch) or iterable, got "
                         f"{type(batches).__name__}")
    it = iter(batches)

    def next_batch() -> Any:
        nonlocal it
        try:
            return next(it)
        except StopIteration:
            it = iter(batches)
            try:
                return next(it)
            except StopIteration:
                raise ValueError("batches is an empty iterable") from None

    for _ in range(start):  # replay the iterable up to the resumed step
        next_batch()
    return lambda s: next_batch()


def _record(history: dict[str, list[float]], s: int, metrics: Mapping[str, Any]) -> None:
    if not isinstance(metrics, Mapping) or not metrics:
        raise ValueError(f"step must return a non-empty dict of metrics, got {metrics!r}")
    values = {}
    for name, value in metrics.items():
        if name == "step":
            raise ValueError("'step' is reserved in the metrics: the loop records it")
        v = float(value.item() if isinstance(value, torch.Tensor) else value)
        if not math.isfinite(v):
            raise NonFiniteLossError(
                f"step {s}: metric {name!r} is {v}; training stopped. Lower the learning rate, "
                f"or look for a log of 0 or a division by zero in the loss"
            )
        values[name] = v
    history["step"].append(s)
    for name, v in values.items():
        # a metric first reported late is padded with NaN so every list aligns with "step"
        history.setdefault(name, [math.nan] * (len(history["step"]) - 1)).append(v)
    for name in history.keys() - values.keys() - {"step"}:
        history[name].append(math.nan)
