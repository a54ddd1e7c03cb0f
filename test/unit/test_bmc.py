"""Tests for cpro.system.ipmi: IPMI requests, answers and error mapping (fake pyghmi commands)."""

from twisted.internet import defer, task
from twisted.trial.unittest import SynchronousTestCase

from cpro.config.model import BmcConfig
from cpro.system.runners import run_inline
from cpro.system.ipmi import (
    POWER_ACTIONS,
    WATCHDOG_USE_OEM,
    BmcClient,
    BmcError,
    WatchdogState,
    parse_watchdog,
)


class FakeBmc:
    """A BMC as pyghmi's Command sees it: raw requests answered from a little state.

    @ivar requests: every (netfn, command, data) received, in order.
    @ivar logins: (bmc, userid, password, port) of every Command made.
    @ivar login_error: exception raised when a Command is made (unreachable, bad password).
    @ivar raise_on: {(netfn, command): exception} raised by raw_command.
    @ivar refuse: {(netfn, command): (code, message)} answered as an IPMI error.
    @ivar report_present: whether Get Watchdog Timer includes the present countdown.
    """

    def __init__(self):
        self.power = "on"
        self.requests = []
        self.logins = []
        self.login_error = None
        self.raise_on = {}
        self.refuse = {}
        self.off_takes = 0  # further status reads that still say "on" after a power off
        self.wd_use = 0
        self.wd_action = 0
        self.wd_initial = 0
        self.wd_present = 0
        self.wd_running = False
        self.report_present = True

    def factory(self, bmc, userid, password, port):
        self.logins.append((bmc, userid, password, port))
        if self.login_error is not None:
            raise self.login_error
        return self

    def raw_command(self, netfn, command, data=(), **kwargs):
        data = list(data)
        self.requests.append((netfn, command, data))
        key = (netfn, command)
        if key in self.raise_on:
            raise self.raise_on[key]
        if key in self.refuse:
            code, message = self.refuse[key]
            return {"netfn": netfn + 1, "command": command, "code": code, "data": bytearray(),
                    "error": message}
        answer = bytearray()
        if key == (0x00, 0x01):
            on = self.power == "on"
            if self.off_takes and self.power == "off":
                self.off_takes -= 1
                on = True
            answer = bytearray([1 if on else 0, 0, 0])
        elif key == (0x00, 0x02):
            self.power = {0: "off", 1: "on", 2: "on", 3: "on", 4: self.power}[data[0]]
        elif key == (0x06, 0x24):
            self.wd_use = data[0] & 0x07
            self.wd_action = data[1] & 0x07
            self.wd_initial = data[4] | data[5] << 8
        elif key == (0x06, 0x22):
            self.wd_running = True
            self.wd_present = self.wd_initial
        elif key == (0x06, 0x25):
            answer = bytearray([self.wd_use | (0x40 if self.wd_running else 0), self.wd_action, 0, 0,
                                self.wd_initial & 0xFF, self.wd_initial >> 8])
            if self.report_present:
                answer += bytearray([self.wd_present & 0xFF, self.wd_present >> 8])
        return {"netfn": netfn + 1, "command": command, "code": 0, "data": answer}


BMC = BmcConfig(address="192.0.2.10", port=623, user="admin", password="secret")


class BmcClientTests(SynchronousTestCase):
    def setUp(self):
        self.bmc = FakeBmc()
        self.client = BmcClient(run_inline, BMC, timeout=5, command_factory=self.bmc.factory)

    def test_power_state(self):
        self.assertEqual(self.successResultOf(self.client.power_state()), "on")
        self.bmc.power = "off"
        self.assertEqual(self.successResultOf(self.client.power_state()), "off")
        self.assertEqual(self.bmc.requests[-1], (0x00, 0x01, []))

    def test_credentials_are_bytes(self):
        """pyghmi 1.6 hangs on a second login with text credentials; bytes avoid it."""
        self.successResultOf(self.client.power_state())
        self.assertEqual(self.bmc.logins, [("192.0.2.10", b"admin", b"secret", 623)])

    def test_power_actions(self):
        for action, byte in POWER_ACTIONS.items():
            self.assertIsNone(self.successResultOf(self.client.power(action)))
            self.assertEqual(self.bmc.requests[-1], (0x00, 0x02, [byte]))
        self.assertEqual(POWER_ACTIONS["nmi"], 4)  # "pulse diagnostic interrupt"
        self.assertEqual(POWER_ACTIONS["cycle"], 2)

    def test_unknown_action(self):
        failure = self.failureResultOf(self.client.power("explode"), BmcError)
        self.assertIn("unknown action", str(failure.value))
        self.assertEqual(self.bmc.requests, [])

    def test_identify(self):
        self.successResultOf(self.client.identify(30))
        self.assertEqual(self.bmc.requests[-1], (0x00, 0x04, [30, 0]))
        self.successResultOf(self.client.identify(1000))
        self.assertEqual(self.bmc.requests[-1], (0x00, 0x04, [255, 0]))

    def test_ipmi_error_names_bmc_and_code(self):
        self.bmc.refuse[(0x00, 0x02)] = (0xCC, "Invalid data field in request")
        failure = self.failureResultOf(self.client.power("nmi"), BmcError)
        message = str(failure.value)
        self.assertIn("192.0.2.10:623", message)
        self.assertIn("power nmi", message)
        self.assertIn("0xcc", message)
        self.assertEqual(failure.value.address, "192.0.2.10:623")

    def test_login_failure(self):
        self.bmc.login_error = Exception("Incorrect password provided")
        failure = self.failureResultOf(self.client.power_state(), BmcError)
        self.assertIn("cannot log in: Incorrect password provided", str(failure.value))
        self.assertFalse(self.client.busy)

    def test_unreachable(self):
        """pyghmi says IpmiException(None) when a login gets no answer."""
        self.bmc.login_error = Exception(None)
        failure = self.failureResultOf(self.client.power("off"), BmcError)
        self.assertIn("no answer", str(failure.value))

    def test_exception_inside_request(self):
        self.bmc.raise_on[(0x00, 0x01)] = TypeError("can't concat str to bytearray")
        failure = self.failureResultOf(self.client.power_state(), BmcError)
        self.assertIn("reading the power state failed: can't concat", str(failure.value))

    def test_runner_failure_is_bmc_error(self):
        def broken_runner(fn, *args):
            raise RuntimeError("thread pool stopped")

        client = BmcClient(broken_runner, BMC, 5, command_factory=self.bmc.factory)
        failure = self.failureResultOf(client.power_state(), BmcError)
        self.assertIn("thread pool stopped", str(failure.value))
        self.assertFalse(client.busy)

    def test_watchdog_beat_never_sets_an_action(self):
        self.successResultOf(self.client.watchdog_beat(300))
        (netfn1, cmd1, data1), (netfn2, cmd2, data2) = self.bmc.requests
        self.assertEqual((netfn1, cmd1), (0x06, 0x24))
        self.assertEqual(data1[0] & 0x07, WATCHDOG_USE_OEM)
        self.assertEqual(data1[1], 0x00)  # no action, no pre-timeout interrupt
        self.assertEqual(data1[4] | data1[5] << 8, 300)
        self.assertEqual((netfn2, cmd2, data2), (0x06, 0x22, []))

    def test_watchdog_beat_clamps_countdown(self):
        self.successResultOf(self.client.watchdog_beat(10 ** 6))
        data = self.bmc.requests[0][2]
        self.assertEqual(data[4] | data[5] << 8, 0xFFFF)

    def test_watchdog_state(self):
        self.bmc.wd_use, self.bmc.wd_initial, self.bmc.wd_present = 5, 300, 250
        self.bmc.wd_running = True
        state = self.successResultOf(self.client.watchdog_state())
        self.assertEqual(state, WatchdogState(use=5, running=True, action=0, initial_tenths=300,
                                              present_tenths=250))
        self.assertEqual((state.initial, state.present), (30.0, 25.0))

    def test_watchdog_state_without_present(self):
        """ipmi_sim's answer stops after the initial countdown."""
        self.bmc.report_present = False
        self.bmc.wd_initial = 123
        state = self.successResultOf(self.client.watchdog_state())
        self.assertIsNone(state.present_tenths)
        self.assertIsNone(state.present)
        self.assertEqual(state.initial_tenths, 123)

    def test_malformed_watchdog_answer(self):
        self.assertRaises(ValueError, parse_watchdog, b"\x05\x00")

        class Short(FakeBmc):
            def raw_command(self, netfn, command, data=(), **kwargs):
                return {"code": 0, "data": bytearray(b"\x05")}

        client = BmcClient(run_inline, BMC, 5, command_factory=Short().factory)
        failure = self.failureResultOf(client.watchdog_state(), BmcError)
        self.assertIn("too short", str(failure.value))


class BmcClientTimeoutTests(SynchronousTestCase):
    """A request that pyghmi keeps for longer than the timeout (a hung session)."""

    def setUp(self):
        self.clock = task.Clock()
        self.pending = []

        def parked_runner(fn, *args):
            d = defer.Deferred()
            self.pending.append((d, fn, args))
            return d

        self.bmc = FakeBmc()
        self.client = BmcClient(parked_runner, BMC, timeout=2, clock=self.clock,
                                command_factory=self.bmc.factory)

    def finish_thread(self):
        d, fn, args = self.pending.pop(0)
        d.callback(fn(*args))

    def test_times_out_and_stays_busy_until_the_thread_returns(self):
        d = self.client.power_state()
        self.assertNoResult(d)
        self.assertTrue(self.client.busy)
        self.clock.advance(2)
        failure = self.failureResultOf(d, BmcError)
        self.assertIn("no answer within 2 s", str(failure.value))
        self.assertTrue(self.client.busy)
        self.finish_thread()  # the late answer is dropped
        self.assertFalse(self.client.busy)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_answer_in_time_cancels_the_timer(self):
        d = self.client.power_state()
        self.finish_thread()
        self.assertEqual(self.successResultOf(d), "on")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cancel(self):
        d = self.client.power("off")
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.finish_thread()
        self.assertFalse(self.client.busy)
