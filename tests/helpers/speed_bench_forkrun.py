"""Run several Python scripts as `python SCRIPT ARGS...`, each in its own process, paying the imports once.

Usage: python speed_bench_forkrun.py JOBS.json RESULTS.json

JOBS.json is a list of {"name", "script", "argv", "cwd", "timeout"}. This process imports the heavy
libraries the scripts share (torch, diffusers, transformers, scipy, unlearn_guard: ~8 s of CPU per
start-up) and computes nothing with them, then forks one child per job, one at a time. Each child is
a fresh process with a copy of that import-only state: it sets sys.argv and sys.path[0] as `python
SCRIPT` would, changes to the job's folder, sends its stdout/stderr to files and runs the script as
__main__. Its exit status follows Python's rules (0 on return, SystemExit's code, 1 and a traceback
on an uncaught exception). Nothing a script does (threads, seeds, globals, environment) reaches the
next one, because each runs in its own child. RESULTS.json maps each name to {"returncode",
"stdout", "stderr", "seconds"}; a job past its timeout is killed (returncode -9).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

# Import only: no tensor op runs here, so no OpenMP/intra-op thread pool exists at fork time.
import numpy  # noqa: F401
import scipy.stats  # noqa: F401
import torch  # noqa: F401
import diffusers  # noqa: F401
import transformers  # noqa: F401
import unlearn_guard  # noqa: F401
import unlearn_guard.world  # noqa: F401
import unlearn_guard.trainers  # noqa: F401
import unlearn_guard.callbacks  # noqa: F401


def _child(job: dict, out_path: str, err_path: str) -> None:
    import atexit
    import runpy
    import traceback

    code = 0
    try:
        with open(out_path, "w") as out, open(err_path, "w") as err:
            os.dup2(out.fileno(), 1)
            os.dup2(err.fileno(), 2)
        os.chdir(job["cwd"])
        script = os.path.abspath(job["script"])
        sys.argv = [script, *job["argv"]]
        sys.path[0] = os.path.dirname(script)  # as `python SCRIPT` puts the script's folder first
        try:
            runpy.run_path(script, run_name="__main__")
        except SystemExit as stop:
            if stop.code is None:
                code = 0
            elif isinstance(stop.code, int):
                code = stop.code
            else:
                print(stop.code, file=sys.stderr)
                code = 1
        except BaseException:
            traceback.print_exc()
            code = 1
        atexit._run_exitfuncs()
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code if 0 <= code <= 255 else 1)


def main() -> None:
    jobs_path, results_path = sys.argv[1:3]
    jobs = json.loads(open(jobs_path).read())
    results = {}
    logs = os.path.dirname(os.path.abspath(results_path))  # not the job's folder: a script may list that
    for job in jobs:
        out_path = os.path.join(logs, f"{job['name']}.stdout")
        err_path = os.path.join(logs, f"{job['name']}.stderr")
        sys.stdout.flush()
        sys.stderr.flush()  # no buffered parent output is copied into the child
        started = time.monotonic()
        pid = os.fork()
        if pid == 0:
            _child(job, out_path, err_path)
        deadline = started + job["timeout"]
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                _, status = os.waitpid(pid, 0)
                break
            time.sleep(0.05)
        returncode = os.waitstatus_to_exitcode(status)
        results[job["name"]] = {"returncode": returncode, "stdout": open(out_path).read(),
                                "stderr": open(err_path).read(), "seconds": time.monotonic() - started}
        os.remove(out_path)
        os.remove(err_path)
    with open(results_path, "w") as stream:
        json.dump(results, stream)


if __name__ == "__main__":
    main()
