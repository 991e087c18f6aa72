"""What ranks raise when some rank failed, died or never came, and the messages that name them.

Every rank raises the same message (it names ranks, never the rank raising it), so a monitor
records the same failure everywhere.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from ..errors import EXIT_BAD_INPUT, EXIT_PROBE_FAILED, UnlearnGuardError


class NamesRanks:
    """Mixin of the failures below: the exit code the command line returns, and the ranks at fault."""

    def __init__(self, message: str, exit_code: int = EXIT_PROBE_FAILED, ranks: Sequence[int] = ()) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.ranks = tuple(ranks)


class RankFailure(NamesRanks, UnlearnGuardError):
    """An operation failed on some rank, a rank died, or a rank did not take part.

    `exit_code` is what the command line exits with: 2 when every failure was bad input on some
    rank, else 3 (a failed probe, a dead or missing rank).
    """


class LauncherStopped(NamesRanks, BaseException):
    """SIGTERM from the launcher: torchrun stops every worker when one of them fails.

    A BaseException, like KeyboardInterrupt, so that no `except Exception` on the way (a model
    loader wrapping its errors) swallows it; the command line exits with `exit_code` (3).
    """


def named_ranks(reasons: Mapping[int, str], world_size: int) -> str:
    """"rank 1 of 2 died (...); rank 3 of 4 ..." for {rank: why}, in rank order."""
    return "; ".join(f"rank {q} of {world_size} {why}" for q, why in sorted(reasons.items()))


def failure_of(outcomes: Mapping[int, tuple], what: str, own: BaseException | None,
               world_size: int) -> BaseException:
    """The error every rank raises for these outcomes of `what`: `own` when every rank failed alike,
    else a RankFailure naming each rank that failed ("error"), died ("dead") or never came ("missing")."""
    errors: dict[int, Any] = {q: o[1] for q, o in outcomes.items() if o[0] == "error"}
    if own is not None and len(errors) == world_size and \
            len({(e["type"], e["message"]) for e in errors.values()}) == 1:
        return own
    parts, codes = [], []
    for q in sorted(outcomes):
        kind, detail = outcomes[q]
        if kind == "error":
            parts.append(f"rank {q} of {world_size} failed: {detail['type']}: {detail['message']}")
            codes.append(int(detail["exit_code"]))
        elif kind in ("dead", "missing"):
            parts.append(f"rank {q} of {world_size} {detail}")
            codes.append(EXIT_PROBE_FAILED)
    ranks = [q for q in sorted(outcomes) if outcomes[q][0] in ("error", "dead", "missing")]
    code = EXIT_BAD_INPUT if codes and all(c == EXIT_BAD_INPUT for c in codes) else EXIT_PROBE_FAILED
    return RankFailure(f"{what}: " + "; ".join(parts), code, ranks)
