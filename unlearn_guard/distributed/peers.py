"""The other ranks as seen through the process group's store: posting, reading, liveness, waiting.

A rank is dead when its process is gone (same host: its pid) or its heartbeat counter in the
store stays frozen for `dead_after_s` (any host); a live rank that has not started an operation
`start_within_s` after this one did is not taking part. A slow rank that is alive is waited for.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from typing import Any, Callable

import torch.distributed as dist

from .timeouts import Timeouts

KEY_PREFIX = "unlearn_guard"


class StoreGone(Exception):
    """The store stopped answering (its host, rank 0 or the launcher's agent, is gone)."""


def process_identity() -> dict[str, Any]:
    """Host, pid and pid namespace of this process: what lets a peer on the same host see it vanish."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = None
    return {"host": socket.gethostname(), "pid": os.getpid(), "pidns": namespace}


def process_gone(pid: int) -> bool:
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


def default_store() -> Any:
    """The default group's key-value store, or None where torch does not expose it."""
    getter = getattr(dist.distributed_c10d, "_get_default_store", None)
    if getter is None:
        return None
    try:
        return getter()
    except (RuntimeError, ValueError):
        return None


def store_gone_reason() -> str:
    """Why every rank is unreachable when the store is: where it was and who hosted it."""
    where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
    host = "the launcher's agent" if "TORCHELASTIC_RUN_ID" in os.environ else "rank 0"
    return f"stopped answering: the process group's store at {where}, hosted by {host}, is gone"


class Peers:
    """This rank's view of the others through `store` (None: no store, every peer counts as ok).

    sid: the key namespace of one session. who: {rank: `process_identity()`} of the peers, for the
    same-host check. watch_beats: False while joining, before any heartbeat runs.
    """

    def __init__(self, store: Any, sid: str, rank: int, world_size: int, timeouts: Timeouts,
                 who: dict[int, dict[str, Any]], watch_beats: bool) -> None:
        self.store, self.sid, self.rank, self.world_size, self.timeouts = store, sid, rank, world_size, timeouts
        self.who, self.watch_beats = who, watch_beats
        self.me = process_identity()
        # Re-entrant: the SIGTERM handler may look at the store while the main thread is inside a call.
        self._lock = threading.RLock()
        self._beats: dict[int, tuple[int, float]] = {}

    # ------------------------------------------------------------------ the store
    def key(self, seq: int, kind: str, q: int) -> str:
        return f"{KEY_PREFIX}/{self.sid}/{seq}/{kind}/{q}"

    def beat_key(self, q: int) -> str:
        return f"{KEY_PREFIX}/{self.sid}/beat/{q}"

    def left_key(self, q: int) -> str:
        return f"{KEY_PREFIX}/{self.sid}/left/{q}"

    def call(self, name: str, *args: Any) -> Any:
        """`store.<name>(*args)` under the lock; StoreGone when the store does not answer."""
        try:
            with self._lock:
                return getattr(self.store, name)(*args)
        except (RuntimeError, OSError, ValueError) as error:  # DistStoreError, connection reset or refused
            raise StoreGone(str(error)) from None

    def set(self, key: str, value: bytes) -> None:
        self.call("set", key, value)

    def get(self, key: str) -> bytes:
        return self.call("get", key)

    def exists(self, key: str) -> bool:
        return bool(self.call("check", [key]))

    # ------------------------------------------------------------------ liveness
    def gone(self, q: int, now: float) -> str | None:
        """Why rank q is dead, or None while it looks alive."""
        who = self.who.get(q)
        if who and who.get("host") == self.me["host"] and who.get("pidns") == self.me["pidns"] \
                and process_gone(int(who["pid"])):
            return f"died (its process {who['pid']} on {who['host']} is gone)"
        if not self.watch_beats:
            return None
        beat = int(self.call("add", self.beat_key(q), 0))
        seen = self._beats.get(q)
        if seen is None or seen[0] != beat:
            self._beats[q] = (beat, now)
            return None
        silent = now - seen[1]
        if silent > self.timeouts.dead_after_s:
            return f"stopped answering (no heartbeat for {silent:.0f} s: it died, hangs or lost the network)"
        return None

    def dead_ranks(self) -> dict[int, str]:
        """Ranks known to be dead right now (a vanished process on this host, a frozen heartbeat)."""
        now = time.monotonic()
        found = {}
        for q in range(self.world_size):
            if q == self.rank:
                continue
            try:
                reason = self.gone(q, now)
            except StoreGone:
                reason = store_gone_reason()
            if reason:
                found[q] = reason
        return found

    # ------------------------------------------------------------------ waiting
    def wait_for(self, key_of: Callable[[int], str], what: str, started: Callable[[int], bool],
                 since: float | None = None) -> dict[int, tuple]:
        """Every other rank's posted outcome (at `key_of(rank)`), or ("dead", why) / ("missing", why)
        for ranks that will never post one. Never waits on a dead rank; waits as long as needed on a
        live one. `since`: when this rank started `what` (now by default)."""
        outcomes: dict[int, tuple] = {}
        pending = [q for q in range(self.world_size) if q != self.rank]
        if self.store is None:
            return {q: ("ok", None) for q in pending}
        since = time.monotonic() if since is None else since
        pause, last_scan = 0.005, 0.0
        while pending:
            try:
                if self.call("check", [key_of(q) for q in pending]):
                    for q in pending:
                        outcomes[q] = tuple(json.loads(self.get(key_of(q))))
                    break
                now = time.monotonic()
                if now - last_scan >= 0.5:
                    last_scan = now
                    for q in pending:
                        if self.exists(key_of(q)):
                            outcomes[q] = tuple(json.loads(self.get(key_of(q))))
                            continue
                        reason = self.gone(q, now)
                        if reason:
                            outcomes[q] = ("dead", reason)
                        elif now - since > self.timeouts.start_within_s and not started(q):
                            outcomes[q] = ("missing", f"did not reach {what} within {self.timeouts.start_within_s:.0f} s "
                                                      "(every rank must make the same calls, in the same order)")
                    pending = [q for q in pending if q not in outcomes]
            except StoreGone:
                reason = store_gone_reason()
                for q in pending:
                    outcomes[q] = ("dead", reason)
                break
            time.sleep(pause)
            pause = min(pause * 2, 0.2)
        return outcomes
