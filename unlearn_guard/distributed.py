"""Data-parallel work on torch.distributed: shard it, gather the results, notice dead ranks.

`probe`, the gate and `ProbeMonitor` each call this module in one place. Nothing here starts
processes: torchrun, `accelerate launch` or srun start them, `init_process_group` joins them, and
this module runs on whatever default process group is initialised (any backend).

One operation on W ranks, `Session.gather(produce, what)`, called by every rank in the same order:
  1. Each rank posts "started" in the process group's store, runs its share (`produce()`), and
     posts its outcome: "ok", or "error" with the exception's type and message.
  2. It waits until every rank posted an outcome, and watches them meanwhile: a rank whose
     process is gone (same host: its pid; any host: its heartbeat, a counter a thread bumps in the
     store every `heartbeat_s`, frozen for `dead_after_s`) is dead; a rank that has not started
     after `start_within_s` is not taking part. A slow rank that is alive is waited for.
  3. All "ok": the payloads move with one `all_gather_object` over a gloo group of this module's
     own (CPU objects, whatever backend training uses; every rank is known to be there). Otherwise
     every rank raises the same `RankFailure` naming the failed, dead or missing ranks; when every
     rank failed with the same error, each raises its own (identical) exception instead.
Between units of work, `Session.check()` stops a rank early when a peer already failed or died.

Results do not depend on the number of ranks when the work is cut where a one-process run cuts it
(`shard` keeps units whole and in order), so every image is computed in the same batch.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import json
import os
import signal
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Iterator, Sequence, TypeVar

import torch
import torch.distributed as dist

from .errors import EXIT_BAD_INPUT, EXIT_PROBE_FAILED, InputError, UnlearnGuardError, exit_code_of, one_line

T = TypeVar("T")
KEY_PREFIX = "unlearn_guard"


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


class RankFailure(UnlearnGuardError):
    """An operation failed on some rank, a rank died, or a rank did not take part.

    Every rank raises the same message (it names ranks, never the rank raising it), so a monitor
    records the same failure everywhere. `exit_code` is what the command line exits with: 2 when
    every failure was bad input on some rank, else 3 (a failed probe, a dead or missing rank).
    """

    def __init__(self, message: str, exit_code: int = EXIT_PROBE_FAILED, ranks: Sequence[int] = ()) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.ranks = tuple(ranks)


class _PeerStopped(Exception):
    """check() saw another rank fail or die: stop this share and join the others."""


# ---------------------------------------------------------------------------- the process group
def group_info() -> dict[str, Any] | None:
    """World size and backend of the initialised default process group, or None."""
    if not (dist.is_available() and dist.is_initialized()):
        return None
    return {"world_size": dist.get_world_size(), "backend": str(dist.get_backend())}


def describe(session: "Session | None") -> dict[str, Any] | None:
    """What provenance records: the group (world size, backend) and whether the work was sharded."""
    info = group_info()
    if info is None:
        return None
    return {**info, "sharded": session is not None}


def rank() -> int:
    """This process's rank in the default group (0 without one)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def resolve(distributed: bool | None, argument: str = "distributed") -> "Session | None":
    """The session to shard over, or None to work in this process alone.

    False: alone. True: shard over the initialised group (InputError if there is none). None:
    shard when a group of more than one rank is initialised. Every rank must then make the call.
    """
    if distributed is not None and not isinstance(distributed, bool):
        raise InputError(f"{argument}: got {distributed!r}; expected True, False or None (detect a process group)")
    if distributed is False:
        return None
    active = dist.is_available() and dist.is_initialized()
    if distributed and not active:
        raise InputError(f"{argument}=True: no torch.distributed process group is initialised; launch with torchrun "
                         "or accelerate launch and call torch.distributed.init_process_group() first, or pass "
                         f"{argument}=False")
    if not active or dist.get_world_size() < 2:
        return None
    return session()


def would_shard(distributed: bool | None) -> bool:
    """Whether `resolve(distributed)` would shard now, without creating a session (no collective)."""
    if distributed is False or not (dist.is_available() and dist.is_initialized()):
        return False
    return dist.get_world_size() > 1


# ---------------------------------------------------------------------------- sharding
def shard_bounds(weights: Sequence[float], world_size: int) -> list[range]:
    """Contiguous, weight-balanced slices of `len(weights)` units, one per rank (some may be empty).

    Unit i goes to the rank whose share of the total holds the unit's midpoint, so the slices
    keep the units' order and each holds about total / world_size of the weight.
    """
    total = float(sum(weights))
    owners = []
    before = 0.0
    for weight in weights:
        middle = (before + weight / 2) / total if total > 0 else 0.0
        owners.append(min(world_size - 1, int(middle * world_size)))
        before += weight
    return [range(owners.index(r), len(owners) - owners[::-1].index(r)) if r in owners else range(0) for r in
            range(world_size)]


# ---------------------------------------------------------------------------- liveness helpers
def _who() -> dict[str, Any]:
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = None
    return {"host": socket.gethostname(), "pid": os.getpid(), "pidns": namespace}


def _process_gone(pid: int) -> bool:
    """True when process `pid` (on this host) has exited (a zombie counts as exited)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as stream:
            return stream.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def _default_store() -> Any:
    getter = getattr(dist.distributed_c10d, "_get_default_store", None)
    if getter is None:
        return None
    try:
        return getter()
    except (RuntimeError, ValueError):
        return None


class _StoreGone(Exception):
    pass


# ---------------------------------------------------------------------------- the session
_session: "Session | None" = None
_sessions_created = 0


def session() -> "Session":
    """The session on the current default group, created on first use (a collective: every rank
    must call it, as they call every operation)."""
    global _session
    world = dist.group.WORLD
    if _session is not None and _session.world is world and not _session.closed:
        return _session
    if _session is not None:
        _session.close()
    _session = Session._create(_timeouts)
    return _session


def close_session(wait_s: float = 0.0) -> None:
    """Stop the heartbeat and forget the session (before `destroy_process_group`); see `Session.close`."""
    global _session
    if _session is not None:
        _session.close(wait_s)
        _session = None


atexit.register(close_session)


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
        self._who = who
        self._me = _who()
        # Re-entrant: the SIGTERM handler may look at the store while the main thread is inside a call.
        self._lock = threading.RLock()
        self._seq = 0
        self._what = ""
        self._in_op = False
        self._last_check = 0.0
        self._beats: dict[int, tuple[int, float]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if store is not None:
            self._thread = threading.Thread(target=self._heartbeat, name="unlearn_guard-heartbeat", daemon=True)
            self._thread.start()

    # ------------------------------------------------------------------ creation
    @classmethod
    def _create(cls, timeouts: Timeouts) -> "Session":
        global _sessions_created
        _sessions_created += 1
        rank, world_size = dist.get_rank(), dist.get_world_size()
        store = _default_store()
        who: dict[int, dict[str, Any]] = {}
        if store is not None:
            # Join through the store first, so that a rank that never comes is named after
            # start_within_s instead of blocking new_group for the process group's timeout.
            restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
            prefix = f"{KEY_PREFIX}/join/{restart}/{_sessions_created}"
            joiner = cls.__new__(cls)  # a bare instance: only the store helpers and the waiting loop
            joiner._init_minimal(store, prefix, rank, world_size, timeouts)
            me = _who()
            joiner._set(f"{prefix}/{rank}", json.dumps(["ok", me]).encode())
            outcomes = joiner._await(lambda q: f"{prefix}/{q}", "the start of distributed work", started=lambda q: False)
            missing = {q: o for q, o in outcomes.items() if o[0] != "ok"}
            if missing:
                raise joiner._failure(missing, "the start of distributed work", own=None)
            who = {q: outcomes[q][1] for q in outcomes}
            who[rank] = me
        group = dist.new_group(backend="gloo", timeout=timedelta(seconds=timeouts.collective_s))
        token = [uuid.uuid4().hex if rank == 0 else None]
        dist.broadcast_object_list(token, src=0, group=group)
        return cls(dist.group.WORLD, group, store, str(token[0]), timeouts, who)

    def _init_minimal(self, store: Any, prefix: str, rank: int, world_size: int, timeouts: Timeouts) -> None:
        self.store, self.sid, self.rank, self.world_size, self.timeouts = store, prefix, rank, world_size, timeouts
        self._lock = threading.RLock()
        self._who, self._me, self._beats = {}, _who(), {}
        self.world, self.group, self.backend, self.closed = None, None, "", False

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
        if self.store is None or self.world is None or wait_s <= 0:
            return
        left = f"{KEY_PREFIX}/{self.sid}/left"
        with contextlib.suppress(_StoreGone):
            self._set(f"{left}/{self.rank}", b"1")
            deadline = time.monotonic() + wait_s
            waiting = list(range(1, self.world_size)) if self.rank == 0 else [0]
            while waiting and time.monotonic() < deadline:
                waiting = [q for q in waiting if not self._exists(f"{left}/{q}")]
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
        seq, self._what, self._in_op = self._seq, what, True
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
            outcomes = self._await(lambda q: self._key(seq, "status", q), what,
                                   started=lambda q: self._exists(self._key(seq, "start", q)), since=since)
            outcomes[self.rank] = outcome
            if any(o[0] != "ok" for o in outcomes.values()):
                failure = self._failure(outcomes, what, own)
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
                key = self._key(self._seq, "status", q)
                if (self._exists(key) and json.loads(self._get(key))[0] != "ok") or self._gone(q, now):
                    raise _PeerStopped()
        except _StoreGone:
            raise _PeerStopped() from None

    def dead_ranks(self) -> dict[int, str]:
        """Ranks known to be dead right now (a vanished process on this host, a frozen heartbeat)."""
        now = time.monotonic()
        found = {}
        for q in range(self.world_size):
            if q == self.rank:
                continue
            try:
                reason = self._gone(q, now)
            except _StoreGone:
                reason = self._store_gone_reason()
            if reason:
                found[q] = reason
        return found

    # ------------------------------------------------------------------ store helpers
    def _key(self, seq: int, kind: str, q: int) -> str:
        return f"{KEY_PREFIX}/{self.sid}/{seq}/{kind}/{q}"

    def _beat_key(self, q: int) -> str:
        return f"{KEY_PREFIX}/{self.sid}/beat/{q}"

    def _call(self, name: str, *args: Any) -> Any:
        try:
            with self._lock:
                return getattr(self.store, name)(*args)
        except (RuntimeError, OSError, ValueError) as error:  # DistStoreError, connection reset or refused
            raise _StoreGone(str(error)) from None

    def _set(self, key: str, value: bytes) -> None:
        self._call("set", key, value)

    def _get(self, key: str) -> bytes:
        return self._call("get", key)

    def _exists(self, key: str) -> bool:
        return bool(self._call("check", [key]))

    def _post(self, seq: int, kind: str, value: bytes) -> None:
        if self.store is not None:
            try:
                self._set(self._key(seq, kind, self.rank), value)
            except _StoreGone:
                pass  # the waiting loop names who is gone

    def _post_outcome(self, seq: int, outcome: tuple[str, Any]) -> None:
        self._post(seq, "status", json.dumps(outcome).encode())

    def _forget(self, seq: int) -> None:
        """Delete this rank's keys of an operation every rank has finished (two operations ago)."""
        if self.store is None or seq < 1:
            return
        for kind in ("start", "status"):
            with contextlib.suppress(_StoreGone, AttributeError):
                self._call("delete_key", self._key(seq, kind, self.rank))

    def _heartbeat(self) -> None:
        key = self._beat_key(self.rank)
        while not self._stop.is_set():
            try:
                self._call("add", key, 1)
            except _StoreGone:
                return  # the store's host is gone; the main thread will say so
            self._stop.wait(self.timeouts.heartbeat_s)

    # ------------------------------------------------------------------ waiting
    def _store_gone_reason(self) -> str:
        where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
        host = "the launcher's agent" if "TORCHELASTIC_RUN_ID" in os.environ else "rank 0"
        return f"stopped answering: the process group's store at {where}, hosted by {host}, is gone"

    def _gone(self, q: int, now: float) -> str | None:
        """Why rank q is dead, or None while it looks alive."""
        who = self._who.get(q)
        if who and who.get("host") == self._me["host"] and who.get("pidns") == self._me["pidns"] \
                and _process_gone(int(who["pid"])):
            return f"died (its process {who['pid']} on {who['host']} is gone)"
        if self.world is None:  # joining: no heartbeats yet
            return None
        beat = int(self._call("add", self._beat_key(q), 0))
        seen = self._beats.get(q)
        if seen is None or seen[0] != beat:
            self._beats[q] = (beat, now)
            return None
        silent = now - seen[1]
        if silent > self.timeouts.dead_after_s:
            return f"stopped answering (no heartbeat for {silent:.0f} s: it died, hangs or lost the network)"
        return None

    def _await(self, key_of: Callable[[int], str], what: str, started: Callable[[int], bool],
               since: float | None = None) -> dict[int, tuple]:
        """Every other rank's posted outcome, or ("dead", why) / ("missing", why) for ranks that
        will never post one. Never waits on a dead rank; waits as long as needed on a live one."""
        outcomes: dict[int, tuple] = {}
        pending = [q for q in range(self.world_size) if q != self.rank]
        if self.store is None:
            return {q: ("ok", None) for q in pending}
        since = time.monotonic() if since is None else since  # when this rank started the operation
        pause, last_scan = 0.005, 0.0
        while pending:
            try:
                if self._call("check", [key_of(q) for q in pending]):
                    for q in pending:
                        outcomes[q] = tuple(json.loads(self._get(key_of(q))))
                    break
                now = time.monotonic()
                if now - last_scan >= 0.5:
                    last_scan = now
                    for q in pending:
                        if self._exists(key_of(q)):
                            outcomes[q] = tuple(json.loads(self._get(key_of(q))))
                            continue
                        reason = self._gone(q, now)
                        if reason:
                            outcomes[q] = ("dead", reason)
                        elif now - since > self.timeouts.start_within_s and not started(q):
                            outcomes[q] = ("missing", f"did not reach {what} within {self.timeouts.start_within_s:.0f} s "
                                                      "(every rank must make the same calls, in the same order)")
                    pending = [q for q in pending if q not in outcomes]
            except _StoreGone:
                reason = self._store_gone_reason()
                for q in pending:
                    outcomes[q] = ("dead", reason)
                break
            time.sleep(pause)
            pause = min(pause * 2, 0.2)
        return outcomes

    def _failure(self, outcomes: dict[int, tuple], what: str, own: BaseException | None) -> BaseException:
        """The error every rank raises: `own` when every rank failed alike, else a RankFailure."""
        errors = {q: o[1] for q, o in outcomes.items() if o[0] == "error"}
        if own is not None and len(errors) == self.world_size and \
                len({(e["type"], e["message"]) for e in errors.values()}) == 1:
            return own
        parts, codes = [], []
        for q in sorted(outcomes):
            kind, detail = outcomes[q]
            if kind == "error":
                parts.append(f"rank {q} of {self.world_size} failed: {detail['type']}: {detail['message']}")
                codes.append(int(detail["exit_code"]))
            elif kind in ("dead", "missing"):
                parts.append(f"rank {q} of {self.world_size} {detail}")
                codes.append(EXIT_PROBE_FAILED)
        ranks = [q for q in sorted(outcomes) if outcomes[q][0] in ("error", "dead", "missing")]
        code = EXIT_BAD_INPUT if codes and all(c == EXIT_BAD_INPUT for c in codes) else EXIT_PROBE_FAILED
        return RankFailure(f"{what}: " + "; ".join(parts), code, ranks)

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
            named = "; ".join(f"rank {q} of {self.world_size} {why}" for q, why in sorted(dead.items()))
            raise RankFailure(f"{what}: moving the results failed ({one_line(error)[:200]})"
                              + (f": {named}" if named else ""), EXIT_PROBE_FAILED, sorted(dead)) from None
        return gathered


# ---------------------------------------------------------------------------- launchers
def launched() -> bool:
    """True when a launcher (torchrun, accelerate launch, a SLURM wrapper) started this process as
    one of several ranks: WORLD_SIZE > 1 in the environment."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        raise InputError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} in the environment; expected an int") from None


def local_device(device: str | None) -> str | None:
    """`cuda` means this rank's GPU (cuda:LOCAL_RANK) when launched; anything else is kept."""
    if device == "cuda" and launched():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device


class LauncherStopped(BaseException):
    """SIGTERM from the launcher: torchrun stops every worker when one of them fails.

    A BaseException, like KeyboardInterrupt, so that no `except Exception` on the way (a model
    loader wrapping its errors) swallows it; the command line exits with `exit_code` (3).
    """

    def __init__(self, message: str, exit_code: int = EXIT_PROBE_FAILED, ranks: Sequence[int] = ()) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.ranks = tuple(ranks)


@contextlib.contextmanager
def launched_group(device: str | None = None) -> Iterator["Session | None"]:
    """Join the launcher's process group (env://) for one command; None when not launched.

    The default group is gloo: every payload moves as CPU objects, and the GPUs (cuda:LOCAL_RANK
    when `device` is cuda) only compute. A group the caller initialised already is used as is.

    The launcher's SIGTERM (torchrun stops the survivors when a worker fails) raises
    `LauncherStopped` naming the ranks found dead, so the survivors exit with one clear line and
    code 3. Once the command's outcome is known, a late SIGTERM is ignored until the process exits:
    it must not turn a finished verdict (or a first, better error) into another one.
    """
    if not launched():
        yield None
        return
    owned = not dist.is_initialized()
    if owned:
        missing = [name for name in ("RANK", "MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
        if missing:
            raise InputError(f"WORLD_SIZE={os.environ['WORLD_SIZE']} but {', '.join(missing)} not set: launch with "
                             "torchrun or accelerate launch, or set RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT")
        if device is not None and device.startswith("cuda"):
            torch.cuda.set_device(torch.device(local_device(device)))
        dist.init_process_group("gloo", timeout=timedelta(seconds=_timeouts.collective_s))
    current = session()
    handles_signals = threading.current_thread() is threading.main_thread()

    def stopped(signum: int, frame: Any) -> None:
        dead = current.dead_ranks()
        named = "; ".join(f"rank {q} of {current.world_size} {why}" for q, why in sorted(dead.items()))
        raise LauncherStopped("stopped by the launcher (SIGTERM) " + (
            f"after {named}" if named else "because another rank failed (the launcher's summary names it)"),
            EXIT_PROBE_FAILED, sorted(dead))

    previous = signal.signal(signal.SIGTERM, stopped) if handles_signals else None
    try:
        yield current
    finally:
        if handles_signals:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            atexit.register(signal.signal, signal.SIGTERM, previous)
        close_session(wait_s=30.0)
        if owned and dist.is_initialized():
            dist.destroy_process_group()
