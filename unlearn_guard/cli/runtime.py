"""The process around a command: Ctrl-C handling (with the import guard), torch threads, library noise.

Everything here is set when a command starts and restored when it ends, so calling `main` from
Python leaves the caller's signal handler, `__import__`, warning filters, logging and progress bars
as they were; importing this module changes none of them.
"""

from __future__ import annotations

import argparse
import builtins
import contextlib
import logging
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from ..errors import InputError

# Commands that load models (and so import diffusers and transformers).
_MODEL_COMMANDS = ("probe", "gate", "demo", "train-world")


# --------------------------------------------------------------------------- library noise
class _DropMessages(logging.Filter):
    """Drops log records whose message contains any of `fragments`."""

    def __init__(self, *fragments: str) -> None:
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(fragment in message for fragment in self.fragments)


# transformers logs, from the image-processor fallback it sets up when torchvision is absent, a
# note per processor class ("`CLIPImageProcessor` requires torchvision (not installed); ...").
# Nothing here processes images with transformers, so the note is noise for our commands.
_TORCHVISION_NOTE = ("transformers.utils.import_utils", _DropMessages("requires torchvision"))


def _one_line_warnings(stream: TextIO) -> Any:
    """A `warnings.showwarning` that prints `warning: <message>` on one line, each text once."""
    seen: set[str] = set()

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        text = " ".join(str(message).split())
        if text in seen:  # e.g. the same long-prompt note from each gated checkpoint's probe
            return
        seen.add(text)
        from tqdm.auto import tqdm

        tqdm.write(f"warning: {text}", file=stream)  # above any progress bar, not through it

    return show


@contextlib.contextmanager
def _progress_bars_off(libraries: tuple[str, ...]) -> Iterator[None]:
    """diffusers' "Loading pipeline components" and transformers' "Loading weights" bars off, then back."""
    import importlib

    restore = []
    for name in libraries:
        library_logging = importlib.import_module(f"{name}.utils.logging")
        if library_logging.is_progress_bar_enabled():
            library_logging.disable_progress_bar()
            restore.append(library_logging.enable_progress_bar)
    try:
        yield
    finally:
        for enable in restore:
            enable()


# --------------------------------------------------------------------------- threads
def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def default_threads() -> int | None:
    """The CLI's thread count when --threads is not given: 1 on a machine with at most 2 usable
    cores, else None (torch's default); None too when OMP_NUM_THREADS says what the user wants.

    Why: on 2 cores shared with other torch jobs, OpenMP threads spin-wait for cores another
    process holds, so a second thread gains at best 2x and can cost far more; measured by
    benchmarks/threads_contention.py (numbers in benchmarks/RESULTS.md).
    """
    if "OMP_NUM_THREADS" in os.environ or _usable_cores() > 2:
        return None
    return 1


@contextlib.contextmanager
def _threads(count: int | None) -> Iterator[None]:
    """torch's intra-op CPU threads set to `count` (None: `default_threads()`), restored afterwards."""
    if count is None:
        count = default_threads()
        if count is None:
            yield
            return
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise InputError(f"--threads: got {count!r}; expected an int >= 1 (default: 1 on machines with at most "
                         "2 cores, else torch's: one per core)")
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def command_scope(args: argparse.Namespace) -> Iterator[None]:
    """What a command runs inside: one-line warnings, no library start-up noise, --threads.

    Everything is set on entry and restored on exit, so calling `main` from Python leaves the
    caller's warning filters, logging and progress bars as they were.
    """
    loads_models = args.command in _MODEL_COMMANDS
    logger_name, note_filter = _TORCHVISION_NOTE
    with contextlib.ExitStack() as stack:
        stack.enter_context(warnings.catch_warnings())
        warnings.showwarning = _one_line_warnings(sys.stderr)
        logging.getLogger(logger_name).addFilter(note_filter)
        stack.callback(logging.getLogger(logger_name).removeFilter, note_filter)
        if loads_models:
            stack.enter_context(_progress_bars_off(("diffusers", "transformers")))
            stack.enter_context(_threads(getattr(args, "threads", None)))
        yield


# --------------------------------------------------------------------------- Ctrl-C
_SIGINT_SEEN: list[int] = []
_IMPORT_DEPTH = [0]  # nested `import` statements running in the main thread
_DEFERRED: list[int] = []  # interrupts that arrived during an import, raised when it ends


def _on_sigint(signum: int, frame: Any) -> None:
    """Python's own Ctrl-C behaviour (raise KeyboardInterrupt), remembered: some third-party import
    code catches everything with a bare `except:`, and an interrupt landing there must not be lost.
    During an import it is deferred to the end of the outermost `import` statement: raised inside a
    C extension's initialisation (triton's libtriton calls back into Python), it can abort the
    process (exit -6)."""
    _SIGINT_SEEN.append(signum)
    if _IMPORT_DEPTH[0] > 0:
        _DEFERRED.append(signum)
        return
    raise KeyboardInterrupt


def _guarded_import(original: Callable[..., Any]) -> Callable[..., Any]:
    """`builtins.__import__` that raises a deferred interrupt once the outermost import returns."""
    def importing(*args: Any, **kwargs: Any) -> Any:
        if threading.current_thread() is not threading.main_thread():
            return original(*args, **kwargs)
        _IMPORT_DEPTH[0] += 1
        try:
            return original(*args, **kwargs)
        finally:
            _IMPORT_DEPTH[0] -= 1
            if _IMPORT_DEPTH[0] == 0 and _DEFERRED:
                _DEFERRED.clear()
                raise KeyboardInterrupt
    return importing


def interrupt_seen() -> bool:
    """Whether Ctrl-C arrived since `handle_interrupts()`, even if a library swallowed the KeyboardInterrupt."""
    return bool(_SIGINT_SEEN)


def handle_interrupts() -> Callable[[], None]:
    """Install the remembering Ctrl-C handler and the import guard; returns the function that restores both.

    Only in the main thread and only when the caller kept Python's default handler: a caller with
    its own handler keeps it (and nothing is installed; the restore function then does nothing).
    """
    _SIGINT_SEEN.clear()
    _DEFERRED.clear()
    _IMPORT_DEPTH[0] = 0
    if not (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
        return lambda: None
    original_import = builtins.__import__
    previous = signal.signal(signal.SIGINT, _on_sigint)
    builtins.__import__ = _guarded_import(original_import)

    def restore() -> None:
        builtins.__import__ = original_import
        signal.signal(signal.SIGINT, previous)

    return restore
