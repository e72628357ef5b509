"""The one training loop (DESIGN.md §7).

A model family writes a ``step(batch) -> dict[str, float]`` that does one update (a GAN alternates
critic and generator inside it) and returns the numbers worth plotting. :func:`fit` owns the rest:
device placement, a tqdm progress bar, the metric history, an exponential moving average (EMA) of
the weights, checkpoint save and resume, and NaN detection (of every metric after the step; a step
calls :func:`check_finite` on its loss before the optimiser step, so NaN never reaches the
weights)::

    def step(batch):
        optimizer.zero_grad()
        loss = -model.log_prob(batch).mean()
        nll = check_finite("nll", loss)  # before backward and the optimiser step
        loss.backward()
        optimizer.step()
        return {"nll": nll}

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
from utils.config import keep_freed_memory
from utils.validation import check_int

__all__ = [
    "EMA",
    "FIT_FRACTION_ENV",
    "FitResult",
    "NonFiniteLossError",
    "check_finite",
    "fit",
    "load_checkpoint",
    "planned_steps",
    "save_checkpoint",
    "to_device",
]

CHECKPOINT_FORMAT = 2
# `make guards` sets this to 0.02: every guarded `fit` then runs ceil(0.02 · steps) steps, and a
# notebook that claims a trained result must fail one of its checks (DESIGN.md §4).
FIT_FRACTION_ENV = "DGM_FIT_FRACTION"


class NonFiniteLossError(FloatingPointError):
    """A loss or metric was NaN or infinite: the run stops instead of plotting garbage."""


def check_finite(name: str, value: torch.Tensor | float, step: int | None = None) -> float:
    """Return ``value`` as a float, or raise :class:`NonFiniteLossError` if it is NaN or ±inf.

    A family's ``step`` calls it on its loss *before* ``loss.backward()`` and
    ``optimizer.step()``, so a non-finite loss never reaches the weights (the optimiser state and
    the EMA stay as they were at the last good step)."""
    v = float(value.detach().item() if isinstance(value, torch.Tensor) else value)
    if not math.isfinite(v):
        where = f"step {step}: " if step is not None else ""
        raise NonFiniteLossError(
            f"{where}{name} is {v}; training stopped before the optimiser step. Lower the "
            f"learning rate, or look for a log of 0 or a division by zero in the loss"
        )
    return v


def planned_steps(steps: int) -> int:
    """``steps``, or ``ceil(f · steps)`` when ``$DGM_FIT_FRACTION`` = f in (0, 1] is set (the
    training cut of ``make guards``)."""
    raw = os.environ.get(FIT_FRACTION_ENV, "").strip()
    if not raw:
        return steps
    try:
        f = float(raw)
    except ValueError:
        raise ValueError(f"{FIT_FRACTION_ENV} must be a number in (0, 1], got {raw!r}") from None
    if not 0.0 < f <= 1.0:
        raise ValueError(f"{FIT_FRACTION_ENV} must be a number in (0, 1], got {raw!r}")
    return math.ceil(f * steps)


class EMA:
    """Exponential moving average of a module's weights, with a warm-up.

    At its ``n``-th update (n = 0, 1, …), for every floating-point parameter *and buffer* θ of the
    trained module, ``θ̄ ← d_n · θ̄ + (1 - d_n) · θ`` with the warmed-up decay
    ``d_n = min(decay, (1 + n) / (10 + n))`` (as in the common diffusion libraries), so the random
    initial weights are forgotten within the first few dozen steps instead of after ~1/(1 - decay)
    of them; integer buffers (e.g. BatchNorm's ``num_batches_tracked``) are copied.
    ``averaged`` is a frozen copy of the module, in eval mode, holding θ̄; ``updates`` is n.

    Why not ``torch.optim.swa_utils.AveragedModel``: it would need a custom ``avg_fn`` for the
    warm-up anyway; with ``use_buffers=True`` it sends integer buffers through the same averaging
    function as floats (``lerp`` refuses int64), and with ``use_buffers=False`` it leaves
    BatchNorm statistics at their initial values; and it wraps the module, so its state-dict keys
    (``module.…``, plus ``n_averaged``) are not the model's. Here ``averaged`` is the model's own
    class with the model's keys: an EMA state loads straight into a fresh model. Thirty lines,
    tested against the closed form.
    """

    def __init__(self, module: nn.Module, decay: float = 0.999):
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) \
                or not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must lie in (0, 1), got {decay!r}")
        self.decay = float(decay)
        self.updates = 0
        self.averaged = copy.deepcopy(module).eval().requires_grad_(False)

    def current_decay(self) -> float:
        """The decay ``d_n = min(decay, (1 + n) / (10 + n))`` the next update will use."""
        n = self.updates
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        d = self.current_decay()
        pairs = [*zip(self.averaged.parameters(), module.parameters(), strict=True),
                 *zip(self.averaged.buffers(), module.buffers(), strict=True)]
        for avg, p in pairs:
            if p.dtype.is_floating_point:
                avg.lerp_(p.detach(), 1.0 - d)
            else:
                avg.copy_(p)
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {"averaged": self.averaged.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if set(state) != {"averaged", "updates"}:
            raise ValueError(f"an EMA state needs 'averaged' and 'updates', got {sorted(state)}")
        self.averaged.load_state_dict(state["averaged"])
        self.updates = int(state["updates"])


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
    """Restore the generators. Every state is a CPU tensor here (the loader reads them on the CPU,
    whatever device the weights go to): torch, CUDA and NumPy accept no other."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["mt"].tolist()), py["gauss"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].cpu().numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        saved = [t.cpu() for t in state["cuda"]]
        for i in range(min(len(saved), torch.cuda.device_count())):  # as many GPUs as both have
            torch.cuda.set_rng_state(saved[i], i)


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
                    config: Mapping[str, Any] | None = None,
                    restore_rng: bool = True, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` into the given objects.

    Loads with ``weights_only=True`` (no arbitrary code from a pickle). Returns the raw dict (step,
    history, config). Everything is checked before anything is loaded: the names of models,
    optimisers, schedulers and EMAs must match the saved ones exactly, and a ``config`` given here
    must equal the saved one, so a checkpoint is never half-loaded.

    The file is read on the CPU; ``map_location`` then moves the model, optimiser, scheduler and
    EMA states (``load_state_dict`` also copies them to wherever each object lives). The RNG states
    always stay on the CPU, where ``torch.set_rng_state`` and NumPy need them.
    """
    if map_location is not None and not isinstance(map_location, (str, torch.device)):
        raise ValueError(f"map_location must be a device (or its name), got "
                         f"{type(map_location).__name__}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a checkpoint of format {CHECKPOINT_FORMAT}")
    given = {"models": models, "optimizers": optimizers, "schedulers": schedulers, "ema": ema}
    for kind, objs in given.items():
        if set(objs or {}) != set(state[kind]):
            raise ValueError(
                f"{path}: checkpoint has {kind} {sorted(state[kind])}, this run has "
                f"{sorted(objs or {})}"
            )
    saved = state["config"]
    if config is not None and saved is not None and dict(config) != saved:
        raise ValueError(f"{path} was written with config {saved}, this run has {dict(config)}; "
                         f"delete the checkpoint or pass resume=False")
    for kind, objs in given.items():
        for name, obj in (objs or {}).items():
            obj.load_state_dict(_move(state[kind][name], map_location))
    if restore_rng:
        _set_rng_state(state["rng"])
    return state


def _move(tree: Any, map_location: Any) -> Any:
    """Every tensor of a nested dict/list/tuple moved to ``map_location`` (``"cpu"``: as is)."""
    if map_location is None or (isinstance(map_location, (str, torch.device))
                                and torch.device(map_location).type == "cpu"):
        return tree
    if isinstance(tree, torch.Tensor):
        return tree.to(map_location)
    if isinstance(tree, Mapping):
        return type(tree)((k, _move(v, map_location)) for k, v in tree.items())
    if isinstance(tree, (list, tuple)):
        return type(tree)(_move(v, map_location) for v in tree)
    return tree


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
        desc: str = "training",
        guard: bool = True) -> FitResult:
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
        guard: whether ``make guards`` may cut this run to a fraction of ``steps``
            (``$DGM_FIT_FRACTION``, see :func:`planned_steps`). ``False`` only for measuring
            instruments trained on the side, such as the digits classifier behind the FD, whose
            training is not the result a notebook claims.

    Raises:
        NonFiniteLossError: a metric was NaN or infinite (names the step and the metric).
        ValueError: bad arguments, or a checkpoint that does not belong to this run.
    """
    steps = check_int("steps", steps, minimum=0)
    if guard:
        steps = planned_steps(steps)
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
    if dev.type == "cpu":
        keep_freed_memory()          # the same large buffers every step: reuse, don't re-fault
    for m in model_dict.values():
        m.to(dev).train()
    ema = {k: EMA(m, ema_decay) for k, m in model_dict.items()} if ema_decay is not None else {}
    history: dict[str, list[float]] = {"step": []}
    start = 0

    if checkpoint is not None and resume and Path(checkpoint).exists():
        state = load_checkpoint(checkpoint, models=model_dict, optimizers=optim_dict,
                                schedulers=sched_dict, ema=ema, config=config)
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
