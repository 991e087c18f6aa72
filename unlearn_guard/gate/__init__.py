"""Release gate: probe checkpoints, decide pass/fail, cache and resume (`unlearn-guard gate`)."""
