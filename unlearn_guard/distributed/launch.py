"""One command under a launcher (torchrun, accelerate launch, srun): join, share a session, leave.

The launcher's SIGTERM (torchrun stops the survivors when a worker fails) becomes
`LauncherStopped` naming the ranks found dead, so the survivors exit with one clear line and code 3.
"""

from __future__ import annotations

import atexit
import contextlib
import signal
import threading
from typing import Any, Iterator

from ..errors import EXIT_PROBE_FAILED
from .failures import LauncherStopped, named_ranks
from .process_group import join_launcher_group, launched, leave_launcher_group
from .sessions import Session, close_session, session
from .timeouts import current_timeouts


@contextlib.contextmanager
def launched_group(device: str | None = None) -> Iterator[Session | None]:
    """Join the launcher's process group (env://) for one command; None when not launched.

    The default group is gloo (`join_launcher_group`); a group the caller initialised already is
    used as is. Once the command's outcome is known, a late SIGTERM is ignored until the process
    exits: it must not turn a finished verdict (or a first, better error) into another one.
    """
    if not launched():
        yield None
        return
    joined = join_launcher_group(device, current_timeouts().collective_s)
    current = session()
    handles_signals = threading.current_thread() is threading.main_thread()

    def stopped(signum: int, frame: Any) -> None:
        dead = current.dead_ranks()
        named = named_ranks(dead, current.world_size)
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
        leave_launcher_group(joined)
