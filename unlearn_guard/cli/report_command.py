"""`unlearn-guard report`: re-render the HTML report from a saved gate.json or probe result."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import EXIT_PASS, InputError
from .common import Output


def report_command(args: argparse.Namespace) -> int:
    """Run `report`: load the result, write the HTML next to it (or to --output), print the verdicts."""
    from ..files import write_text_atomic
    from ..gate.runner import summary_line
    from ..report.html import render_report
    from ..report.loading import load_report

    out = Output(args)
    report = load_report(args.result)
    target = Path(args.output) if args.output else Path(args.result).with_suffix(".html")
    if target.exists() and not args.overwrite:
        raise InputError(f"--output: {str(target)!r} already exists; pass --overwrite to replace it or choose another file")
    write_text_atomic(target, render_report(report))
    verdict = report.get("verdict")
    out.info(f"verdict: {verdict.upper() if verdict else 'none (probe result)'}")
    for record in report["checkpoints"]:
        out.info(f"  {record['name']}: {summary_line(record)}" + (f" -> {record['verdict'].upper()}" if record.get("verdict") else ""))
    out.essential(f"wrote {target}")
    if args.json:
        print(json.dumps({"verdict": verdict, "output": str(target)}))
    return EXIT_PASS
