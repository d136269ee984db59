"""A task's own function as a trial: the `Trial` handle it gets, loading its entrypoint,
and running it on a leased trial through the same reports as the built-in trainer.

The one contract::

    def objective(params: dict[str, Any], trial: Trial) -> float | Mapping[str, float]

`params` is the spec's ``task.params`` overlaid by the trial's sampled values (flat,
keyed by space key). ``trial.report(epoch, **metrics)`` adds an epoch to the curve: it
travels in the worker's batched metrics reports, and at a pruning decision's epoch at
once, so ``trial.should_stop()`` says right after whether the pruner (or a person, or
the worker shutting down) stopped the trial. ``trial.checkpoint(data)`` keeps bytes as
the state after the last reported epoch; pause, resume and fork start a later attempt
from one, and ``trial.resume()`` hands it back (``trial.start_epoch`` is its epoch). The
function returns the objective's value, or a dict of metrics holding
``objective.metric``.

Outcomes: a function that raises fails its trial with the exception's type and message,
and it is not retried (it would raise again; a worker that dies is retried as ever); a
value that is not a finite number fails it, saying so; a function that never reports
is fine (its returned metrics are the curve's one epoch); returning after
``should_stop()`` ends the trial as the service decided (pruned, paused, stopped).
`service.cli.optimize.optimize` runs a whole study of a function object in this process,
with no server.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import math
import numbers
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from worker.client import Client
from worker.trial import METRICS, TrialRun

# A metric's name as the service stores it (service.spec.schema.METRIC_NAME).
_NAME = re.compile(r"[A-Za-z_]\w{0,31}")
ENTRYPOINT = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")
# The service bounds a trial's epochs by params["epochs"], or by this when none is given
# (service.queue.tables.UNSTATED_EPOCHS).
UNSTATED_EPOCHS = 1_000_000


class EntrypointError(ValueError):
    """An entrypoint that is not `module.path:function`, or cannot be imported here."""


def load_entrypoint(entrypoint: str) -> Callable[..., Any]:
    """The function `entrypoint` ("module.path:function") names, imported here.

    Raises EntrypointError saying what is wrong: the syntax, a module that does not
    import (with the import's own error), a missing or uncallable name.
    """
    if not isinstance(entrypoint, str) or not ENTRYPOINT.fullmatch(entrypoint):
        raise EntrypointError(
            f"{entrypoint!r}: an entrypoint is module.path:function, such as mypkg.train:objective"
        )
    module_name, name = entrypoint.split(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any error importing it: the user's code is not loadable
        raise EntrypointError(
            f"{entrypoint}: cannot import {module_name} here ({type(exc).__name__}: {exc}); "
            "install the code where this worker runs"
        ) from exc
    fn = getattr(module, name, None)
    if fn is None:
        raise EntrypointError(
            f"{entrypoint}: module {module_name} has no {name!r}{_functions_hint(module, name)}"
        )
    if not callable(fn):
        raise EntrypointError(f"{entrypoint}: {name} is a {type(fn).__name__}, not a function")
    return fn


def _functions_hint(module: Any, name: str) -> str:
    """'; did you mean ...?' with the module's nearest functions, or the functions it has."""
    functions = sorted(
        k
        for k, v in vars(module).items()
        if inspect.isfunction(v) and v.__module__ == module.__name__ and not k.startswith("_")
    )
    if not functions:
        return " (it defines no function)"
    near = difflib.get_close_matches(name, functions, n=3)
    if near:
        return "; did you mean " + " or ".join(repr(f) for f in near) + "?"
    shown = ", ".join(functions[:8]) + (", ..." if len(functions) > 8 else "")
    return f"; its functions: {shown}"


@dataclass(frozen=True)
class _State:
    """What TrialRun.on_checkpoint takes of a checkpoint: its epoch and its bytes (the
    function's own, which the service stores as given and hands back as they are)."""

    epoch: int
    content: bytes

    def to_bytes(self) -> bytes:
        return self.content


class Trial:
    """The handle a task's function gets: its params, reports, stops and checkpoints."""

    def __init__(
        self,
        run: TrialRun,
        claimed: Mapping[str, Any],
        *,
        state: bytes | None = None,
        start_epoch: int = 0,
    ) -> None:
        self._run = run
        self.params: dict[str, Any] = dict(claimed["config"])
        self.number: int = int(claimed["number"])
        self.study_id: int = int(claimed["study_id"])
        self.trial_id: int = int(claimed["trial_id"])
        self.start_epoch = start_epoch
        self._state = state
        self.last_epoch = start_epoch  # the furthest epoch reported (or resumed from)
        self.reported = False  # whether this attempt reported an epoch
        self.stopped = False  # should_stop() said True at least once

    def __repr__(self) -> str:
        return f"Trial(number={self.number}, trial_id={self.trial_id}, params={self.params})"

    def report(self, epoch: int, **metrics: float) -> None:
        """Add epoch `epoch` (from 1, increasing) to the curve, with metrics of any names."""
        if isinstance(epoch, bool) or not isinstance(epoch, int):
            raise TypeError(f"epoch must be an int, got {epoch!r}")
        if epoch <= self.last_epoch:
            raise ValueError(
                f"epoch {epoch} is not after epoch {self.last_epoch}: epochs count from 1 and go up"
            )
        if epoch > self._run.epochs:
            raise ValueError(
                f"epoch {epoch} is past params['epochs'] = {self._run.epochs}, the trial's length"
            )
        row: dict[str, Any] = {"epoch": epoch}
        extra: dict[str, float] = {}
        for name, value in metrics.items():
            number = metric_number(name, value)
            if name in METRICS:
                row[name] = number
            else:
                extra[name] = number
        if extra:
            row["extra"] = extra
        self.last_epoch = epoch
        self.reported = True
        self._run.on_epoch(row)

    def should_stop(self) -> bool:
        """True once the pruner or a person stopped the trial, or the worker is leaving:
        return then (the value so far, or None to take the curve's)."""
        run = self._run
        stop = run.stop_asked.is_set() or run.lease_lost.is_set() or run.worker.shutdown.is_set()
        self.stopped = self.stopped or stop
        return stop

    def checkpoint(self, data: bytes) -> None:
        """Keep `data` as the state after the last reported epoch (pause, resume and fork
        start a later attempt from it)."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"a checkpoint is bytes, got {type(data).__name__}")
        if self.last_epoch < 1:
            raise ValueError("report an epoch first: a checkpoint is the state after an epoch")
        self._run.on_checkpoint(_State(self.last_epoch, bytes(data)))

    def resume(self) -> bytes | None:
        """The checkpoint this attempt starts from (taken at `start_epoch`), or None."""
        return self._state


def metric_number(name: str, value: Any) -> float:
    """A reported metric as the service takes it; TypeError or ValueError saying why not
    (the one rule for functions run by a worker and programs that ask and tell)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(
            f"a metric's name is an identifier of at most 32 characters (got {name!r})"
        )
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"metric {name} must be a number, got {type(value).__name__} {value!r}")
    return float(value)


@dataclass(frozen=True)
class Ended:
    """How a task's function ended: the trial's outcome, why it failed, its value."""

    outcome: str  # completed | stopped | failed
    error: str | None = None
    value: float | None = None


def run_objective(
    fn: Callable[..., Any], claimed: Mapping[str, Any], run: TrialRun, *, client: Client
) -> Ended:
    """Call `fn` on the leased trial `claimed` (`run` holds its lease and reports)."""
    epochs = claimed["config"].get("epochs")
    run.epochs = int(epochs) if epochs else UNSTATED_EPOCHS
    run.named = True
    state, start = None, 0
    if resume := claimed.get("resume"):
        data = client.request("GET", f"/api/worker/checkpoints/{resume['checkpoint_id']}")
        start, state = int(resume["epoch"]), bytes(data.content)
    trial = Trial(run, claimed, state=state, start_epoch=start)
    try:
        returned = fn(trial.params, trial)
    except Exception as exc:  # the function's own failure: the trial's, not the worker's
        return Ended("failed", f"{type(exc).__name__}: {exc}")
    stopped = trial.should_stop()
    metric = str(claimed.get("metric") or "value")
    if returned is None and stopped:
        return Ended("stopped")  # its value, the curve's: as the trainer's stopped trials
    try:
        values = returned_metrics(returned, metric)
    except ValueError as exc:
        return Ended("failed", str(exc))
    if not trial.reported:  # never reported: what it returned is the curve's one epoch
        trial.report(max(1, start + 1), **values)
    return Ended("stopped" if stopped else "completed", value=values[metric])


def returned_metrics(returned: Any, metric: str) -> dict[str, float]:
    """The metrics a function returned, or a program told (a number is `metric`'s);
    ValueError saying what is wrong with them."""
    if isinstance(returned, Mapping):
        if metric not in returned:
            names = ", ".join(map(str, returned)) or "nothing"
            raise ValueError(
                f"the objective returned a dict without {metric!r} (objective.metric); it "
                f"holds {names}"
            )
        items = dict(returned)
    else:
        items = {metric: returned}
    out: dict[str, float] = {}
    for name, value in items.items():
        try:
            out[str(name)] = metric_number(str(name), value)
        except (TypeError, ValueError):
            raise ValueError(
                f"the objective returned {value!r} for {name!r}: return a number, or a dict "
                f"of numbers holding {metric!r} (objective.metric)"
            ) from None
    value = out[metric]
    if not math.isfinite(value):
        said = "NaN" if math.isnan(value) else f"{value} (not finite)"
        raise ValueError(
            f"the objective returned {said} for {metric!r}: a trial's value must be a finite number"
        )
    return out
