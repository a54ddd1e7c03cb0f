"""Shared by sraw and psrw: "over a threshold continuously for a duration".

A measure is over its limit when a sample is strictly greater than it. A
measure over its limit is a Warning at once, and an Error once it has been
over in every sample for the whole duration (docs/configuration.md, sraw).
One sample at or under the limit starts the count again. Time is the
caller's (the reactor clock).
"""

from cpro.resources.monitors.base import CheckResult, CheckStatus

_ORDER = {CheckStatus.NORMAL: 0, CheckStatus.WARNING: 1, CheckStatus.ERROR: 2}


class Unreadable:
    """A sample value that could not be read; the reason is the text."""

    def __init__(self, reason):
        self.reason = reason

    def __repr__(self):
        return f"Unreadable({self.reason!r})"


def show(value, unit):
    if isinstance(value, float):
        value = f"{value:.1f}"
    return f"{value}{unit}"


class Threshold:
    """One measure against its limit; limit 0 means "not watched"."""

    def __init__(self, label, limit, duration, unit=""):
        self.label = label
        self.limit = limit
        self.duration = duration
        self.unit = unit
        self.over_since = None
        self.last = None

    def update(self, value, now):
        """Record one sample taken at now; returns (CheckStatus, text or None)."""
        self.last = value
        if isinstance(value, Unreadable):
            self.over_since = None
            return CheckStatus.ERROR, f"cannot read {self.label}: {value.reason}"
        if value is None or value <= self.limit:
            self.over_since = None
            return CheckStatus.NORMAL, None
        if self.over_since is None:
            self.over_since = now
        over_for = now - self.over_since
        text = (f"{self.label} {show(value, self.unit)} over {show(self.limit, self.unit)} "
                f"for {over_for:.0f} s")
        if over_for >= self.duration:
            return CheckStatus.ERROR, text
        return CheckStatus.WARNING, f"{text} (error after {self.duration:g} s)"

    def summary(self):
        if self.last is None or isinstance(self.last, Unreadable):
            return None
        return f"{self.label} {show(self.last, self.unit)}"


def combine(findings, summaries):
    """One CheckResult from (status, text) findings; the worst status wins.

    The message lists what is at that status, or the summaries when Normal.
    """
    worst = max((status for status, _ in findings), key=_ORDER.get, default=CheckStatus.NORMAL)
    if worst is CheckStatus.NORMAL:
        return CheckResult.normal(", ".join(s for s in summaries if s))
    texts = [text for status, text in findings if status is worst and text]
    return CheckResult(worst, "; ".join(texts))
