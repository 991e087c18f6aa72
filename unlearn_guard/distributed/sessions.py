"""A rank's session on the default process group: heartbeats, `gather` with failures shared, `check`.

One operation on W ranks, `Session.gather(produce, what)`, called by every rank in the same order:
  1. Each rank posts "started" in the process group's store, runs its share (`produce()`), and
     posts its outcome: "ok", or "error" with the exception's type and message.
  2. It waits until every rank posted an outcome, and watches them meanwhile (`peers.Peers`): a
     rank whose process is gone (same host: its pid; any host: its heartbeat, a counter a thread
     bumps in the store every `heartbeat_s`, frozen for `dead_after_s`) is dead; a rank that has
     not started after `start_within_s` is not taking part. A slow rank that is alive is waited for.
  3. All "ok": the payloads move with one `all_gather_object` over a gloo group of this module's
     own (CPU objects, whatever backend training uses; every rank is known to be there). Otherwise
     every rank raises the same `RankFailure` naming the failed, dead or missing ranks; when every
     rank failed with the same error, each raises its own (identical) exception instead.
Between units of work, `Session.check()` stops a rank early when a peer already failed or died.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import threading
import time
import uuid
from datetime import timedelta
from typing import Any, Callable, Sequence, TypeVar

import torch.distributed as dist

from ..errors import EXIT_PROBE_FAILED, InputError, exit_code_of, one_line
from .failures import LauncherStopped, RankFailure, failure_of, named_ranks
from .peers import KEY_PREFIX, Peers, StoreGone, default_store
from .process_group import group_info, initialized, would_shard
from .sharding import shard_bounds
from .timeouts import Timeouts, current_timeouts

T = TypeVar("T")


class _PeerStopped(Exception):
    """check() saw another rank fail or die: stop this share and join the others."""


class Session:
    """This rank's handle on the group for sharded work; see the module docstring."""

    def __init__(self, world: Any, group: Any, store: Any, sid: str, timeouts: Timeouts,
                 who: dict[int, dict[str, Any]]) -> None:
        self.world = world
        self.group = group
        self.store = store
        self.sid = sid
        self.timeouts = timeouts
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.backend = str(dist.get_backend())
        self.closed = False
        self.peers = Peers(store, sid, self.rank, self.world_size, timeouts, who, watch_beats=True)
        self._seq = 0
        self._in_op = False
        self._last_check = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if store is not None:
            self._thread = threading.Thread(target=self._heartbeat, name="unlearn_guard-heartbeat", daemon=True)
            self._thread.start()

    # ------------------------------------------------------------------ creation
    @classmethod
    def _create(cls, timeouts: Timeouts) -> Session:
        global _sessions_created
        _sessions_created += 1
        store = default_store()
        who = _join(store, timeouts, _sessions_created) if store is not None else {}
        group = dist.new_group(backend="gloo", timeout=timedelta(seconds=timeouts.collective_s))
        token = [uuid.uuid4().hex if dist.get_rank() == 0 else None]
        dist.broadcast_object_list(token, src=0, group=group)
        return cls(dist.group.WORLD, group, store, str(token[0]), timeouts, who)

    def close(self, wait_s: float = 0.0) -> None:
        """Stop the heartbeat; with `wait_s`, leave together (the command line waits 30 s at most).

        Rank 0 waits for the others to stop theirs, so none talks to a store that is gone (rank 0
        hosts it without torchrun's agent, and c10d logs a stack trace for that); the others wait
        for rank 0 to finish, so a launcher that stops every worker when one exits non-zero (the
        gate's exit code 1) never cuts rank 0's last lines short. Dead ranks are not waited for.
        """
        if self.closed:
            return
        self.closed = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * self.timeouts.heartbeat_s)
        if self.store is None or wait_s <= 0:
            return
        with contextlib.suppress(StoreGone):
            self.peers.set(self.peers.left_key(self.rank), b"1")
            deadline = time.monotonic() + wait_s
            waiting = list(range(1, self.world_size)) if self.rank == 0 else [0]
            while waiting and time.monotonic() < deadline:
                waiting = [q for q in waiting if not self.peers.exists(self.peers.left_key(q))]
                dead = self.dead_ranks() if waiting else {}
                waiting = [q for q in waiting if q not in dead]
                time.sleep(0.05)

    # ------------------------------------------------------------------ public API
    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def describe(self) -> dict[str, Any]:
        return {"world_size": self.world_size, "backend": self.backend, "sharded": True}

    def shard(self, weights: Sequence[float]) -> range:
        """This rank's slice of units with these weights (`shard_bounds`)."""
        return shard_bounds(weights, self.world_size)[self.rank]

    def gather(self, produce: Callable[[], T], what: str) -> list[T]:
        """Run `produce()` here and return every rank's value, in rank order, on every rank.

        If `produce` raises on any rank, or a rank dies or never calls, every rank raises (see the
        module docstring); `what` names the operation in the message ("the probe", "checkpoint
        round 3"). KeyboardInterrupt is posted for the others and re-raised at once.
        """
        if self.closed:
            raise RankFailure(f"{what}: the distributed session was closed (destroy_process_group?)")
        self._seq += 1
        seq, self._in_op = self._seq, True
        try:
            self._forget(seq - 2)
            self._post(seq, "start", b"1")
            since = time.monotonic()
            own: BaseException | None = None
            try:
                payload = produce()
                outcome = ("ok", None)
            except _PeerStopped:
                payload, outcome = None, ("aborted", None)
            except (KeyboardInterrupt, LauncherStopped) as error:  # stopping now: tell the others, wait for no one
                self._post_outcome(seq, ("error", {"type": type(error).__name__, "message": one_line(error) or
                                                   "interrupted", "exit_code": EXIT_PROBE_FAILED}))
                raise
            except Exception as error:  # noqa: BLE001 - every failure is shared with the other ranks
                own, payload = error, None
                outcome = ("error", {"type": type(error).__name__, "message": one_line(error),
                                     "exit_code": exit_code_of(error)})
            self._post_outcome(seq, outcome)
            outcomes = self.peers.wait_for(lambda q: self.peers.key(seq, "status", q), what,
                                           started=lambda q: self.peers.exists(self.peers.key(seq, "start", q)),
                                           since=since)
            outcomes[self.rank] = outcome
            if any(o[0] != "ok" for o in outcomes.values()):
                failure = failure_of(outcomes, what, own, self.world_size)
                if failure is own:
                    raise own
                raise failure from own
            return self._all_gather(payload, what)
        finally:
            self._in_op = False

    def check(self) -> None:
        """Between units of work: raise (into `gather`) when another rank already failed or died.
        Costs a few store reads, at most once a second."""
        if not self._in_op or self.store is None:
            return
        now = time.monotonic()
        if now - self._last_check < 1.0:
            return
        self._last_check = now
        try:
            for q in range(self.world_size):
                if q == self.rank:
                    continue
                key = self.peers.key(self._seq, "status", q)
                if (self.peers.exists(key) and json.loads(self.peers.get(key))[0] != "ok") or self.peers.gone(q, now):
                    raise _PeerStopped()
        except StoreGone:
            raise _PeerStopped() from None

    def dead_ranks(self) -> dict[int, str]:
        """Ranks known to be dead right now (a vanished process on this host, a frozen heartbeat)."""
        return self.peers.dead_ranks()

    # ------------------------------------------------------------------ posting
    def _post(self, seq: int, kind: str, value: bytes) -> None:
        if self.store is not None:
            try:
                self.peers.set(self.peers.key(seq, kind, self.rank), value)
            except StoreGone:
                pass  # the waiting loop names who is gone

    def _post_outcome(self, seq: int, outcome: tuple[str, Any]) -> None:
        self._post(seq, "status", json.dumps(outcome).encode())

    def _forget(self, seq: int) -> None:
        """Delete this rank's keys of an operation every rank has finished (two operations ago)."""
        if self.store is None or seq < 1:
            return
        for kind in ("start", "status"):
            with contextlib.suppress(StoreGone, AttributeError):
                self.peers.call("delete_key", self.peers.key(seq, kind, self.rank))

    def _heartbeat(self) -> None:
        key = self.peers.beat_key(self.rank)
        while not self._stop.is_set():
            try:
                self.peers.call("add", key, 1)
            except StoreGone:
                return  # the store's host is gone; the main thread will say so
            self._stop.wait(self.timeouts.heartbeat_s)

    def _all_gather(self, payload: Any, what: str) -> list[Any]:
        gathered: list[Any] = [None] * self.world_size
        try:
            dist.all_gather_object(gathered, payload, group=self.group)
        except RuntimeError as error:  # a rank died after posting "ok": name it if it can be named
            deadline = time.monotonic() + self.timeouts.dead_after_s + 2 * self.timeouts.heartbeat_s
            dead: dict[int, str] = {}
            while not dead and time.monotonic() < deadline:
                dead = self.dead_ranks()
                time.sleep(0.2)
            named = named_ranks(dead, self.world_size)
            raise RankFailure(f"{what}: moving the results failed ({one_line(error)[:200]})"
                              + (f": {named}" if named else ""), EXIT_PROBE_FAILED, sorted(dead)) from None
        return gathered


def _join(store: Any, timeouts: Timeouts, count: int) -> dict[int, dict[str, Any]]:
    """Meet every rank through the store, before `new_group`, so that a rank that never comes is
    named after start_within_s instead of blocking new_group for the process group's timeout.
    Returns {rank: `process_identity()`} of every rank."""
    rank, world_size = dist.get_rank(), dist.get_world_size()
    restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    prefix = f"{KEY_PREFIX}/join/{restart}/{count}"
    joiner = Peers(store, prefix, rank, world_size, timeouts, who={}, watch_beats=False)
    joiner.set(f"{prefix}/{rank}", json.dumps(["ok", joiner.me]).encode())
    outcomes = joiner.wait_for(lambda q: f"{prefix}/{q}", "the start of distributed work", started=lambda q: False)
    missing = {q: o for q, o in outcomes.items() if o[0] != "ok"}
    if missing:
        raise failure_of(missing, "the start of distributed work", None, world_size)
    who = {q: outcomes[q][1] for q in outcomes}
    who[rank] = joiner.me
    return who


# ---------------------------------------------------------------------------- the current session
_session: Session | None = None
_sessions_created = 0


def session() -> Session:
    """The session on the current default group, created on first use (a collective: every rank
    must call it, as they call every operation)."""
    global _session
    world = dist.group.WORLD
    if _session is not None and _session.world is world and not _session.closed:
        return _session
    if _session is not None:
        _session.close()
    _session = Session._create(current_timeouts())
    return _session


def close_session(wait_s: float = 0.0) -> None:
    """Stop the heartbeat and forget the session (before `destroy_process_group`); see `Session.close`."""
    global _session
    if _session is not None:
        _session.close(wait_s)
        _session = None


atexit.register(close_session)


def resolve(distributed: bool | None, argument: str = "distributed") -> Session | None:
    """The session to shard over, or None to work in this process alone.

    False: alone. True: shard over the initialised group (InputError if there is none). None:
    shard when a group of more than one rank is initialised. Every rank must then make the call.
    """
    if distributed is not None and not isinstance(distributed, bool):
        raise InputError(f"{argument}: got {distributed!r}; expected True, False or None (detect a process group)")
    if distributed and not initialized():
        raise InputError(f"{argument}=True: no torch.distributed process group is initialised; launch with torchrun "
                         "or accelerate launch and call torch.distributed.init_process_group() first, or pass "
                         f"{argument}=False")
    return session() if would_shard(distributed) else None


def describe(session: Session | None) -> dict[str, Any] | None:
    """What provenance records: the group (world size, backend) and whether the work was sharded."""
    info = group_info()
    if info is None:
        return None
    return {**info, "sharded": session is not None}
