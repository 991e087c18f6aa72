"""Release gate: probe checkpoints, decide pass/fail, cache and resume (`unlearn-guard gate`).

runner.py holds `run_gate` (one process, or handed to sharded.py under a process group of 2+
ranks); both gates share inputs.py (checks and loading), plan.py (cache keys; reuse, resume or
compute), finish.py (records, decisions, the report), output.py (the output folder) and render.py
(the printed lines and the --json verdict).
"""
