"""`make fuzz`: every target for a while, printing inputs per second and findings.

    python -m test.fuzz [--seconds N] [--seed S] [TARGET ...]

Findings' smallest inputs are written to _fuzz/TARGET-N.bin. Exit status 1
if anything was found.
"""

import argparse
import importlib
import os
import pkgutil
import sys

import test.fuzz
from test.fuzz.harness import Target, fuzz


def all_targets():
    targets = {}
    for info in pkgutil.iter_modules(test.fuzz.__path__):
        if not info.name.startswith("test_"):
            continue
        module = importlib.import_module(f"test.fuzz.{info.name}")
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, Target) and value is not Target \
                    and value.__module__ == module.__name__:
                targets[value.name] = value
    return targets


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m test.fuzz")
    parser.add_argument("--seconds", type=float, default=float(os.environ.get("FUZZ_SECONDS", 120)))
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("targets", nargs="*")
    args = parser.parse_args(argv)
    targets = all_targets()
    unknown = [t for t in args.targets if t not in targets]
    if unknown:
        parser.error(f"unknown target(s): {', '.join(unknown)}; known: {', '.join(sorted(targets))}")
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
    print(f"seed {seed}, {args.seconds:.0f} s per target")
    os.makedirs("_fuzz", exist_ok=True)
    found = 0
    total_inputs = 0
    for name in (args.targets or sorted(targets)):
        report = fuzz(targets[name](), seed=seed, seconds=args.seconds)
        total_inputs += report.inputs
        print(report.summary(), flush=True)
        for i, f in enumerate(report.findings.values()):
            path = os.path.join("_fuzz", f"{name}-{i}.bin")
            with open(path, "wb") as out:
                out.write(f.data)
            print(f"    written to {path}\n" + "\n".join("    " + l for l in f.trace.splitlines()[-6:]))
        found += len(report.findings)
    print(f"total: {total_inputs} inputs, {found} finding(s)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
