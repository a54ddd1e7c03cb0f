"""The client-side outage computation of the lab's TCP prober."""

from twisted.trial.unittest import SynchronousTestCase

from cpro.testing.lab.probe import outage


def rows(spec, start=100.0, step=0.01):
    """spec: one char per probe: 'a'/'b' served by server a/b, '.' failed."""
    return [(start + i * step, c != ".", c if c != "." else "-") for i, c in enumerate(spec)]


class OutageTests(SynchronousTestCase):
    def test_gap_between_last_failure_start_and_first_success(self):
        r = rows("aaaa.....bbb")
        seconds, before, after = outage(r, fault_time=100.035)
        self.assertAlmostEqual(seconds, 0.05)
        self.assertEqual((before, after), ("a", "b"))

    def test_no_failure_is_no_outage(self):
        self.assertEqual(outage(rows("aaabbb"), 100.02), (0.0, "a", "a"))

    def test_never_recovered(self):
        self.assertEqual(outage(rows("aa...."), 100.015), (None, "a", None))

    def test_failures_before_the_fault_do_not_count(self):
        r = rows("a..aaa...bb")
        seconds, before, after = outage(r, fault_time=100.055)
        self.assertAlmostEqual(seconds, 0.03)
        self.assertEqual(after, "b")
