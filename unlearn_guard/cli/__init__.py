"""`unlearn-guard`, the command line: `main` parses, runs one command, and returns its exit code.

The commands, options and exit codes are described in `parser.DESCRIPTION` (the top-level --help).
Layout: `parser` (argparse only, no torch), `runtime` (Ctrl-C, threads, library noise), `common`
(what probe and gate share) and one module per command: `probe_command`, `gate_command`,
`report_command`, `world_commands` (demo, train-world).
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback

from ..errors import (
    EXIT_BAD_INPUT,
    EXIT_CODES_HELP,
    EXIT_FAIL,
    EXIT_INCONCLUSIVE,
    EXIT_INTERRUPTED,
    EXIT_PASS,
    EXIT_PROBE_FAILED,
    UnlearnGuardError,
    exit_code_of,
    one_line,
)
from .parser import SHAPES_FOR_CLI, build_parser
from .runtime import command_scope, handle_interrupts, interrupt_seen

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_CODES_HELP",
    "EXIT_FAIL",
    "EXIT_INCONCLUSIVE",
    "EXIT_INTERRUPTED",
    "EXIT_PASS",
    "EXIT_PROBE_FAILED",
    "SHAPES_FOR_CLI",
    "build_parser",
    "main",
]


def _interrupted(command: str | None) -> int:
    if command is None:
        message = "interrupted during start-up; nothing was run"
    elif command == "gate":
        message = "interrupted; finished checkpoints are cached: rerun with --resume to continue"
    else:
        message = f"interrupted; {command} did not finish"
    print(message, file=sys.stderr)
    return EXIT_INTERRUPTED


def _run(args: argparse.Namespace, started: list[str]) -> tuple[int, str | None]:
    """The command's exit code and, when it failed, the one-line error message."""
    from ..distributed import (
        LauncherStopped,  # imports torch: seconds, inside main's Ctrl-C handling
    )

    if interrupt_seen():  # a library's bare `except:` swallowed the KeyboardInterrupt during its import
        raise KeyboardInterrupt
    try:
        with command_scope(args):
            started.append(args.command)
            return args.handler(args), None
    except (UnlearnGuardError, LauncherStopped) as error:  # each carries its exit code (errors.py); a rank's failure too
        code = exit_code_of(error)
        return code, ("probe failed: " if code == EXIT_PROBE_FAILED else "") + one_line(error)
    except Exception as error:  # noqa: BLE001 - a crash is a failed probe (3), never a verdict (1)
        if interrupt_seen():  # the interrupt, half swallowed by a library, left it broken: still an interrupt
            raise KeyboardInterrupt from None
        traceback.print_exc(file=sys.stderr)
        return EXIT_PROBE_FAILED, f"probe failed unexpectedly: {type(error).__name__}: {one_line(error)}"


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (see `parser.DESCRIPTION`).

    Everything runs under one Ctrl-C handler, the imports of torch and diffusers included (they
    take seconds), so an interrupt at any point exits 130 with one line and no traceback.
    """
    started: list[str] = []  # the command, once its handler runs
    restore = handle_interrupts()
    try:
        return _main(argv, started)
    finally:
        restore()


def _main(argv: list[str] | None, started: list[str]) -> int:
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as stop:  # argparse: 2 on bad usage (message printed), 0 for --help
            return stop.code if isinstance(stop.code, int) else EXIT_BAD_INPUT
        code, message = _run(args, started)
    except KeyboardInterrupt:
        return _interrupted(started[0] if started else None)
    except Exception:
        if interrupt_seen():  # e.g. an import that a swallowed interrupt left half done (numpy: RecursionError)
            return _interrupted(started[0] if started else None)
        raise
    if message is None:
        return code
    print(f"error: {message}", file=sys.stderr)
    if getattr(args, "json", False):
        print(json.dumps({"verdict": "error", "exit_code": code, "error": message}))
    return code
