"""A small, dependency-free mutation fuzzer for cpro's parsers.

A L{Target} names one parser and says what valid input looks like (seeds
built with the project's own encoders and keys), how to repair a mutated
input so that it gets past the outer checks (fixups: lengths, checksums,
authentication tags re-computed), and what the parser's contract is
(L{Target.check}, which raises L{Finding} when the contract is broken).

L{fuzz} feeds a target a seeded stream of inputs:

  - random bytes of random length;
  - seeds mutated by a few stacked edits (bit flips, interesting integers,
    inserted, deleted, duplicated or spliced ranges, truncation, non-UTF-8
    bytes, long runs of digits), then repaired by a fixup half of the time;
  - structured inputs from L{Target.structured}: valid messages whose
    decoded values were replaced by hostile ones (huge integers, deep
    nesting, odd types) and encoded again with the project's encoder;
  - oversized input (a seed repeated past the parser's bound).

Anything the check raises other than L{Finding} is a finding too, as is an
input that takes longer than the target's time bound. Findings are grouped by
exception type and the line that raised it, with the smallest input kept.
"""

import copy
import json
import random
import resource
import struct
import sys
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field

from twisted.logger import globalLogPublisher


class Finding(AssertionError):
    """The parser broke its contract on this input."""


class Target:
    """One parser under fuzzing. Subclasses set name and override seeds/check."""

    name = "target"
    max_size = 4096  # bytes of random input; oversized inputs go past it
    time_bound = 0.25  # seconds one input may take

    def seeds(self, rng):
        """Valid inputs (bytes), built with the project's encoders."""
        return [b""]

    def fixups(self):
        """Callables bytes -> bytes that repair a mutated input's outer layer
        (length fields, checksums, authentication tags). May raise ValueError
        when the input is too broken to repair."""
        return []

    def structured(self, rng):
        """A hostile but well-framed input (bytes), or None."""
        return None

    def check(self, data):
        """Feed data to the parser; raise Finding if its contract is broken.
        The parser's documented errors are caught here."""
        raise NotImplementedError

    def authenticated(self, data):
        """True if data is a seed or was produced by a fixup that signs: a
        mutated input that is not should never be accepted."""
        return True


# -- hostile values -----------------------------------------------------------

HUGE_INTS = (2**63, 2**64, -2**63 - 1, 10**400, -(10**400), 2**1100)
STRINGS = ("", "\x00", "é", "サーバ", "\udcff", "A" * 70000, "../../etc/passwd", "1e999", "NaN",
           "\u202e", "%s%n", " ", "\n")


def hostile_value(rng, depth=0):
    """A JSON value chosen to break a careless decoder."""
    kind = rng.randrange(12)
    if kind == 0:
        return rng.choice(HUGE_INTS)
    if kind == 1:
        return rng.choice((float("inf"), float("-inf"), float("nan"), 1e308, -0.0, 0.5))
    if kind == 2:
        return rng.choice(STRINGS)
    if kind == 3:
        return rng.choice((None, True, False, 0, -1, 1))
    if kind == 4:
        return Raw(nested_json(rng.randrange(50, 5000), rng.random() < 0.5))
    if kind == 5 and depth < 3:
        return [hostile_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    if kind == 6 and depth < 3:
        return {rng.choice(STRINGS)[:20]: hostile_value(rng, depth + 1) for _ in range(rng.randrange(4))}
    if kind == 7:
        return rng.randrange(-2**70, 2**70)
    if kind == 8:
        return "".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(rng.randrange(1, 40)))
    if kind == 9:
        return {}
    if kind == 10:
        return []
    if kind == 11:
        return Raw("9" * rng.choice((4301, 5000, 100000)))  # past int()'s digit limit
    return 10 ** rng.randrange(1, 30)


class Raw(str):
    """JSON text to be written as it is by L{dumps} (deep nesting, huge
    numbers: values json.dumps itself cannot write)."""


def nested_json(depth, as_dict=False):
    """The JSON text of a value nested depth levels deep, without recursion."""
    if as_dict:
        return ('{"a":' * depth) + "0" + ("}" * depth)
    return ("[" * depth) + "0" + ("]" * depth)


def mutate_json(obj, rng):
    """A copy of a decoded JSON object with one leaf (or a key) made hostile."""
    obj = copy.deepcopy(obj)
    paths = []

    def walk(node, path):
        paths.append(path)
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, path + (k,))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, path + (i,))

    walk(obj, ())
    path = rng.choice(paths)
    if not path:
        return hostile_value(rng)
    parent = obj
    for step in path[:-1]:
        parent = parent[step]
    choice = rng.randrange(10)
    if choice == 0 and isinstance(parent, dict):
        del parent[path[-1]]
    elif choice == 1 and isinstance(parent, dict):
        parent[rng.choice(STRINGS)[:30] or "extra"] = hostile_value(rng)
    else:
        parent[path[-1]] = hostile_value(rng)
    return obj


def dumps(obj):
    """Compact JSON that also writes non-finite floats, lone surrogates and
    L{Raw} text."""
    raws = []

    def swap(node):
        if isinstance(node, Raw):
            raws.append(str(node))
            return f"\x00RAW{len(raws) - 1}\x00"
        if isinstance(node, dict):
            return {k: swap(v) for k, v in node.items()}
        if isinstance(node, list):
            return [swap(v) for v in node]
        return node

    text = json.dumps(swap(obj), separators=(",", ":"), allow_nan=True)
    for i, raw in enumerate(raws):
        text = text.replace(f'"\\u0000RAW{i}\\u0000"', raw)
    return text.encode("utf-8", "surrogatepass")


# -- byte mutations -------------------------------------------------------------

INTERESTING = (0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)


def mutate(data, rng, corpus):
    """data with one to eight stacked random edits."""
    buf = bytearray(data)
    for _ in range(1 + int(rng.expovariate(0.6)) % 8):
        op = rng.randrange(13)
        n = len(buf)
        if op == 0 and n:
            i = rng.randrange(n)
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1 and n:
            buf[rng.randrange(n)] = rng.randrange(256)
        elif op == 2 and n:
            width = rng.choice((1, 2, 4, 8))
            value = rng.choice(INTERESTING) & ((1 << (8 * width)) - 1)
            i = rng.randrange(n)
            buf[i:i + width] = value.to_bytes(width, rng.choice(("big", "little")))
        elif op == 3:
            i = rng.randrange(n + 1)
            buf[i:i] = rng.randbytes(rng.randrange(1, 16))
        elif op == 4 and n:
            i = rng.randrange(n)
            del buf[i:i + rng.randrange(1, 16)]
        elif op == 5 and n:
            i = rng.randrange(n)
            chunk = buf[i:i + rng.randrange(1, 64)]
            j = rng.randrange(n + 1)
            buf[j:j] = chunk
        elif op == 6 and n:
            del buf[rng.randrange(n):]
        elif op == 7 and corpus:
            other = rng.choice(corpus)
            if other:
                i = rng.randrange(n + 1)
                j = rng.randrange(len(other))
                buf[i:] = other[j:]
        elif op == 8:
            i = rng.randrange(n + 1)
            buf[i:i] = rng.choice((b"\xff\xfe", b"\xc3(", b"\xed\xa0\x80", b"\x80", b"\x00", b"\xf4\x90\x80\x80"))
        elif op == 9:
            i = rng.randrange(n + 1)
            buf[i:i] = b"9" * rng.choice((20, 400, 5000))
        elif op == 10 and n:
            i = rng.randrange(n)
            buf[i] = rng.choice(b"{}[]\":,\\ 0-")
        elif op == 11 and n > 1:
            i, j = sorted(rng.sample(range(n), 2))
            buf[i:j] = buf[i:j][::-1]
        elif op == 12:
            buf += rng.randbytes(rng.randrange(1, 32))
    return bytes(buf)


# -- the loop -------------------------------------------------------------------


@dataclass
class FindingRecord:
    kind: str  # exception type and where it was raised
    message: str
    data: bytes
    count: int = 1
    trace: str = ""


@dataclass
class Report:
    target: str
    inputs: int = 0
    seconds: float = 0.0
    slowest: float = 0.0
    rss_growth_kib: int = 0
    findings: dict = field(default_factory=dict)

    @property
    def rate(self):
        return self.inputs / self.seconds if self.seconds else 0.0

    def summary(self):
        lines = [f"{self.target}: {self.inputs} inputs in {self.seconds:.1f} s ({self.rate:.0f}/s), "
                 f"slowest {self.slowest * 1000:.1f} ms, RSS +{self.rss_growth_kib} KiB, "
                 f"{len(self.findings)} finding(s)"]
        for f in self.findings.values():
            lines.append(f"  {f.kind} x{f.count}: {f.message[:200]}")
            lines.append(f"    smallest input ({len(f.data)} bytes): {f.data[:160]!r}")
        return "\n".join(lines)


@contextmanager
def logged_failures():
    """Collect the failures logged (log.failure, unhandled errors in
    Deferreds) while the block runs: an error that reached Twisted."""
    caught = []

    def observer(event):
        if event.get("log_failure") is not None or event.get("isError"):
            caught.append(event)

    globalLogPublisher.addObserver(observer)
    try:
        yield caught
    finally:
        globalLogPublisher.removeObserver(observer)


def _where(exc):
    tb = traceback.extract_tb(exc.__traceback__)
    if not tb:
        return type(exc).__name__
    last = tb[-1]
    return f"{type(exc).__name__} at {last.filename.rsplit('/', 1)[-1]}:{last.lineno}"


def _inputs(target, rng, seeds):
    fixups = target.fixups()
    while True:
        roll = rng.random()
        if roll < 0.08:
            yield rng.randbytes(rng.randrange(target.max_size + 1))
        elif roll < 0.11 and seeds:
            seed = rng.choice(seeds)
            yield (seed or b"x") * (target.max_size // max(1, len(seed)) + 2)
        elif roll < 0.35:
            data = target.structured(rng)
            if data is not None:
                yield data
        else:
            data = mutate(rng.choice(seeds), rng, seeds) if seeds else rng.randbytes(64)
            if fixups and rng.random() < 0.5:
                try:
                    data = rng.choice(fixups)(data)
                except (ValueError, IndexError, struct.error):
                    pass
            yield data


def fuzz(target, seed=0, count=None, seconds=None):
    """Run target on a seeded stream of inputs until count inputs or seconds
    have passed. Returns a L{Report}."""
    rng = random.Random(seed)
    seeds = [bytes(s) for s in target.seeds(random.Random(seed))]
    for s in seeds:  # the valid inputs must pass
        target.check(s)
    report = Report(target.name)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.monotonic()
    limit = sys.get_int_max_str_digits()
    try:
        for data in _inputs(target, rng, seeds):
            if count is not None and report.inputs >= count:
                break
            if seconds is not None and time.monotonic() - start >= seconds:
                break
            report.inputs += 1
            t0 = time.monotonic()
            try:
                target.check(data)
            except RecursionError as e:
                _record(report, e, data)
            except Exception as e:  # noqa: BLE001 - every escape is a finding
                _record(report, e, data)
            finally:
                sys.set_int_max_str_digits(limit)  # a parser must not change it
            took = time.monotonic() - t0
            report.slowest = max(report.slowest, took)
            if took > target.time_bound:
                _record(report, Finding(f"took {took:.3f} s (bound {target.time_bound} s)"), data,
                        kind="too slow")
    finally:
        report.seconds = time.monotonic() - start
        report.rss_growth_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
    return report


def _record(report, exc, data, kind=None):
    kind = kind or _where(exc)
    existing = report.findings.get(kind)
    if existing is None:
        report.findings[kind] = FindingRecord(kind, f"{exc}", data, trace="".join(
            traceback.format_exception(type(exc), exc, exc.__traceback__))[-4000:])
        return
    existing.count += 1
    if len(data) < len(existing.data):
        existing.data = data


def expect(errors, fn, *args, **kwargs):
    """fn(*args) or None if it raised one of the documented errors; any other
    exception propagates (and becomes a finding)."""
    try:
        return fn(*args, **kwargs)
    except errors:
        return None


class FuzzTestMixin:
    """Mix into a trial TestCase and set `target` (a Target instance) to get
    the short seeded pass that `make test` runs."""

    target = None
    inputs = 3000
    fuzz_seed = 20261203

    def test_short_seeded_pass(self):
        report = fuzz(self.target, seed=self.fuzz_seed, count=self.inputs)
        if report.findings:
            first = next(iter(report.findings.values()))
            self.fail(report.summary() + "\n\nfirst traceback:\n" + first.trace)
        self.assertEqual(report.inputs, self.inputs)
