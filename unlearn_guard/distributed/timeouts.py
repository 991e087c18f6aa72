"""How long a rank waits for the others: the `Timeouts` every new session uses, and `configure`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..errors import InputError


@dataclass(frozen=True)
class Timeouts:
    """How long a rank waits for the others (seconds).

    heartbeat_s: how often each rank's heartbeat thread bumps its counter in the store.
    dead_after_s: a rank on another host whose counter stays frozen this long is dead (on the
        same host a vanished process is seen at once). The bound on how long survivors wait.
    start_within_s: a live rank that has not started an operation this long after this rank did
        is not taking part (a rank that skipped the call): the others stop instead of waiting.
    collective_s: timeout of the gloo group that moves the payloads (every rank is inside it).
    """

    heartbeat_s: float = 1.0
    dead_after_s: float = 60.0
    start_within_s: float = 600.0
    collective_s: float = 1800.0

    def __post_init__(self) -> None:
        for name in ("heartbeat_s", "dead_after_s", "start_within_s", "collective_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise InputError(f"distributed timeout {name!r}: got {value!r}; expected a number of seconds > 0")
        if self.dead_after_s < 2 * self.heartbeat_s:
            raise InputError(f"distributed timeout 'dead_after_s': got {self.dead_after_s!r}; expected at least twice "
                             f"heartbeat_s ({self.heartbeat_s!r}), or live ranks would look dead")


_timeouts = Timeouts()


def configure(**changes: float) -> Timeouts:
    """Change the timeouts (fields of `Timeouts`) for sessions created from now on; returns the old ones."""
    global _timeouts
    unknown = set(changes) - {f.name for f in dataclasses.fields(Timeouts)}
    if unknown:
        raise InputError(f"distributed.configure: unknown setting(s) {sorted(unknown)}; expected fields of Timeouts")
    previous, _timeouts = _timeouts, dataclasses.replace(_timeouts, **changes)
    return previous


def current_timeouts() -> Timeouts:
    """The timeouts a session created now uses (the last `configure`)."""
    return _timeouts
