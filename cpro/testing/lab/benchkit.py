"""What the benchmarks in bench/ share: output, percentiles, the daemon's process, the runner.

A benchmark is an object with ``run()`` (async), ``destroy()`` (async),
``report()`` and a ``results`` dict; L{run_benchmark} runs it, cleans up
whatever happens, and prints the results as one JSON object on the last line.
"""

import json
import math
import shutil

import psutil
from twisted.internet import defer

from cpro.testing.lab.common import LabError, run_with_cleanup


def say(text=""):
    print(text, flush=True)


def percentile(values, p):
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100.0 * len(ordered))) - 1]


def daemon_process(pid):
    """psutil.Process of the twistd daemon (the lab's pid may be `ip netns exec`, which execs it)."""
    proc = psutil.Process(pid)
    if any("twistd" in part for part in proc.cmdline()):
        return proc
    for child in proc.children(recursive=True):
        if any("twistd" in part for part in child.cmdline()):
            return child
    return proc


async def destroy_lab(lab, workdir, keep):
    """Destroy the benchmark's lab; keep its files (logs, config) when asked or after an error."""
    await lab.destroy()
    if keep:
        say(f"lab files kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)


async def _run(bench, state):
    code = 0
    try:
        await bench.run()
    except defer.CancelledError:
        bench.results["error"] = "interrupted"
        code = 130
    except LabError as e:
        bench.results["error"] = str(e)
        say(f"\nbenchmark failed: {e}")
        code = 1
    except Exception as e:  # always clean up and still print the JSON line
        bench.results["error"] = f"{type(e).__name__}: {e}"
        say(f"\nbenchmark failed unexpectedly: {type(e).__name__}: {e}")
        code = 1
    finally:
        state["cleaning"] = True
        try:
            await bench.destroy()
        except Exception as e:
            say(f"cleanup failed: {e}")
            code = code or 1
    bench.report()
    print(json.dumps(bench.results, sort_keys=True), flush=True)
    raise SystemExit(code)


def run_benchmark(reactor, make_bench):
    """Build the benchmark (make_bench()) and run it under run_with_cleanup."""
    return run_with_cleanup(reactor, lambda state: _run(make_bench(), state))
