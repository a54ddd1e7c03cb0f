"""Talking to one server's BMC by IPMI over LAN (RMCP+), for the BMC heartbeat and forced stop.

L{BmcClient} sends the few IPMI commands cpro needs as raw requests through
pyghmi: chassis status, chassis control (power off, on, cycle, reset, NMI),
chassis identify, and the watchdog timer commands that the BMC heartbeat
uses (L{cpro.services.heartbeat.bmchb}). Raw requests on purpose: pyghmi's helpers
first probe the vendor (Get Device ID, sometimes HTTPS to the BMC), which
adds round trips and failure modes a fencing action does not need.

pyghmi is blocking, so every call runs through the injected C{runner}
(the reactor's thread pool in the daemon). A pyghmi call can take seconds
(a dead BMC: about 5 s of login retries), so the Deferred a method returns
is bounded by C{timeout} on the injected clock, and L{BmcClient.busy} says
whether a thread is still inside pyghmi (callers poll at most once at a
time per BMC, so that a dead BMC never fills the thread pool).

pyghmi shares one logged-in session per (BMC, user, password) among all
its Command objects, guarded by a lock, so a Command per call is cheap
(tens of microseconds once logged in) and safe from several threads.
Credentials are passed as bytes: with text credentials pyghmi 1.6 keys its
"session being set up" table inconsistently and a second Command for the
same BMC waits forever for a login that already finished.
"""

import threading
from dataclasses import dataclass
from typing import Optional

from twisted.internet import defer

# Chassis Control (NetFn chassis 0x00, command 0x02) data byte per action.
POWER_ACTIONS = {"off": 0, "on": 1, "cycle": 2, "reset": 3, "nmi": 4}

NETFN_CHASSIS = 0x00
NETFN_APP = 0x06
CMD_CHASSIS_STATUS = 0x01
CMD_CHASSIS_CONTROL = 0x02
CMD_CHASSIS_IDENTIFY = 0x04
CMD_RESET_WATCHDOG = 0x22
CMD_SET_WATCHDOG = 0x24
CMD_GET_WATCHDOG = 0x25

# Watchdog timer use "OEM": leaves the BIOS/OS uses (FRB2, SMS/OS) alone and
# lets a reader tell cpro's timer from anyone else's.
WATCHDOG_USE_OEM = 5
_USE_DONT_LOG = 0x80  # no SEL entry when the timer expires (a peer being down is not a BMC event)
_USE_DONT_STOP = 0x40  # in Set: a running timer keeps running; in Get: the timer is running
_USE_MASK = 0x07
MAX_COUNTDOWN = 0xFFFF  # 100 ms units
MAX_IDENTIFY_SECONDS = 255

# pyghmi requests run one at a time in this process when they can. pyghmi
# hands the answers its I/O thread receives to whichever waiting thread
# polls first; with two requests in flight at once (even to two BMCs) one
# answer is regularly missed and that request waits for pyghmi's retry,
# 0.5 to 1 s later. Serialized, a request to a healthy BMC takes a few ms.
# A request to a dead BMC holds the lock for pyghmi's whole login (about
# 5 s), so the others wait at most PYGHMI_LOCK_WAIT for it and then go
# ahead anyway, accepting the occasional retry.
_PYGHMI_LOCK = threading.Lock()
PYGHMI_LOCK_WAIT = 0.3


class BmcError(Exception):
    """An IPMI request to a BMC failed; the message names the BMC and what failed."""

    def __init__(self, address, what, reason):
        self.address = address
        self.what = what
        self.reason = reason
        super().__init__(f"BMC {address}: {what} failed: {reason}")


@dataclass(frozen=True)
class WatchdogState:
    """A BMC watchdog timer as Get Watchdog Timer reports it (countdowns in seconds)."""

    use: int  # timer use 1..5 (5 = OEM, what cpro sets)
    running: bool
    action: int  # 0 = no action (the only action cpro ever sets)
    initial_tenths: int  # initial countdown, 100 ms units
    present_tenths: Optional[int]  # present countdown, or None when the BMC did not say

    @property
    def initial(self):
        return self.initial_tenths / 10.0

    @property
    def present(self):
        return None if self.present_tenths is None else self.present_tenths / 10.0


def parse_watchdog(data):
    """A L{WatchdogState} from the data bytes of a Get Watchdog Timer answer.

    @raise ValueError: fewer than the 6 bytes up to the initial countdown.
    """
    data = bytes(data)
    if len(data) < 6:
        raise ValueError(f"Get Watchdog Timer answer too short ({len(data)} bytes)")
    present = int.from_bytes(data[6:8], "little") if len(data) >= 8 else None
    return WatchdogState(
        use=data[0] & _USE_MASK,
        running=bool(data[0] & _USE_DONT_STOP),
        action=data[1] & 0x07,
        initial_tenths=int.from_bytes(data[4:6], "little"),
        present_tenths=present,
    )


def pyghmi_command(bmc, userid, password, port):
    """Default command factory: a pyghmi Command (imported late: a daemon without BMCs never loads it)."""
    from pyghmi.ipmi import command

    return command.Command(bmc=bmc, userid=userid, password=password, port=port)


class BmcClient:
    """IPMI requests to one BMC; every method returns a Deferred.

    @param runner: C{runner(fn, *args)} -> Deferred, running fn off the
        reactor thread (L{cpro.system.runners.thread_runner}).
    @param bmc_config: the server's L{cpro.config.model.BmcConfig}.
    @param timeout: seconds each request may take (enforced on C{clock}).
    @param clock: IReactorTime for the timeout; None: no timeout beyond
        pyghmi's own retries (unit tests with an inline runner).
    @param command_factory: C{factory(bmc, userid, password, port)} -> an
        object with pyghmi's C{raw_command(netfn, command, data=...)}.
    """

    def __init__(self, runner, bmc_config, timeout, clock=None, command_factory=None):
        self.config = bmc_config
        self.address = f"{bmc_config.address}:{bmc_config.port}"
        self.timeout = float(timeout)
        self._runner = runner
        self._clock = clock
        self._factory = command_factory or pyghmi_command
        self._threads = 0

    @property
    def busy(self):
        """True while a request is still inside pyghmi (even one whose Deferred timed out)."""
        return self._threads > 0

    # -- chassis ------------------------------------------------------------------

    def power_state(self):
        """Deferred firing 'on' or 'off'."""
        d = self._request("reading the power state", NETFN_CHASSIS, CMD_CHASSIS_STATUS)
        d.addCallback(lambda data: "on" if data and data[0] & 1 else "off")
        return d

    def power(self, action):
        """Chassis control: 'off', 'on', 'cycle', 'reset' or 'nmi'. Deferred firing None once accepted."""
        if action not in POWER_ACTIONS:
            return defer.fail(BmcError(self.address, f"power {action}",
                                       f"unknown action (known: {', '.join(POWER_ACTIONS)})"))
        d = self._request(f"power {action}", NETFN_CHASSIS, CMD_CHASSIS_CONTROL, [POWER_ACTIONS[action]])
        d.addCallback(lambda _: None)
        return d

    def identify(self, seconds):
        """Light the chassis ID lamp for C{seconds} (0 turns it off, at most 255). Deferred firing None."""
        seconds = max(0, min(MAX_IDENTIFY_SECONDS, int(seconds)))
        # Byte 2 "force on" = 0: the interval applies.
        d = self._request(f"identify for {seconds} s", NETFN_CHASSIS, CMD_CHASSIS_IDENTIFY, [seconds, 0])
        d.addCallback(lambda _: None)
        return d

    # -- watchdog timer (the BMC heartbeat) ------------------------------------------

    def watchdog_state(self):
        """Get Watchdog Timer. Deferred firing a L{WatchdogState}."""
        what = "reading the watchdog timer"
        d = self._request(what, NETFN_APP, CMD_GET_WATCHDOG)

        def parse(data):
            try:
                return parse_watchdog(data)
            except ValueError as e:
                raise BmcError(self.address, what, str(e)) from None

        d.addCallback(parse)
        return d

    def watchdog_beat(self, countdown_tenths):
        """Set the watchdog timer (use OEM, action none, the countdown given) and restart it.

        The action is always "no action": this never resets, powers off or
        interrupts the server, whatever the countdown. Deferred firing None.
        """
        countdown = max(1, min(MAX_COUNTDOWN, int(countdown_tenths)))
        set_data = [
            WATCHDOG_USE_OEM | _USE_DONT_STOP | _USE_DONT_LOG,
            0x00,  # timer action: no action, no pre-timeout interrupt
            0x00,  # pre-timeout interval
            1 << WATCHDOG_USE_OEM,  # clear the OEM "expired" flag
            countdown & 0xFF,
            countdown >> 8,
        ]

        def beat(command):
            self._raw(command, "setting the watchdog timer", NETFN_APP, CMD_SET_WATCHDOG, set_data)
            self._raw(command, "resetting the watchdog timer", NETFN_APP, CMD_RESET_WATCHDOG, ())

        d = self._call("watchdog beat", beat)
        d.addCallback(lambda _: None)
        return d

    # -- plumbing --------------------------------------------------------------------

    def _request(self, what, netfn, cmd, data=()):
        return self._call(what, lambda command: self._raw(command, what, netfn, cmd, data))

    def _raw(self, command, what, netfn, cmd, data):
        """One raw request on the calling (worker) thread; returns the answer's data bytes."""
        try:
            answer = command.raw_command(netfn=netfn, command=cmd, data=list(data))
        except BmcError:
            raise
        except Exception as e:
            raise BmcError(self.address, what, _describe(e)) from None
        if not isinstance(answer, dict):
            raise BmcError(self.address, what, f"unexpected answer {answer!r}")
        if "error" in answer:
            code = answer.get("code")
            suffix = f" (completion code 0x{code:02x})" if isinstance(code, int) and code else ""
            raise BmcError(self.address, what, f"{answer['error']}{suffix}")
        return bytes(answer.get("data") or b"")

    def _session(self, what):
        try:
            return self._factory(
                bmc=self.config.address,
                userid=(self.config.user or "").encode("utf-8"),
                password=(self.config.password or "").encode("utf-8"),
                port=self.config.port,
            )
        except Exception as e:
            raise BmcError(self.address, what, f"cannot log in: {_describe(e)}") from None

    def _blocking(self, what, fn):
        locked = _PYGHMI_LOCK.acquire(timeout=PYGHMI_LOCK_WAIT)
        try:
            return fn(self._session(what))
        finally:
            if locked:
                _PYGHMI_LOCK.release()

    def _call(self, what, fn):
        """Run fn(command) through the runner; the returned Deferred is bounded by the timeout."""
        self._threads += 1
        try:
            inner = self._runner(self._blocking, what, fn)
        except Exception as e:
            self._threads -= 1
            return defer.fail(BmcError(self.address, what, _describe(e)))

        def done(result):
            self._threads -= 1
            return result

        inner.addBoth(done)
        # The thread cannot be stopped: the outer Deferred gives up on it
        # (timeout, cancel) while `busy` keeps counting it until it returns.
        outer = defer.Deferred()

        def forward(result):
            if not outer.called:
                outer.callback(result)

        def forward_error(failure):
            if not outer.called:
                if not failure.check(BmcError):
                    failure = BmcError(self.address, what, _describe(failure.value))
                outer.errback(failure)

        inner.addCallbacks(forward, forward_error)
        if self._clock is not None and self.timeout > 0:
            outer.addTimeout(self.timeout, self._clock,
                             onTimeoutCancel=lambda result, timeout: _timed_out(self.address, what, timeout))
        return outer


def _timed_out(address, what, timeout):
    raise BmcError(address, what, f"no answer within {timeout:g} s (BMC unreachable?)")


def _describe(e):
    text = str(e)
    if not text or text == "None":
        # pyghmi raises IpmiException(None) when a login gets no answer.
        return f"{type(e).__name__}: no answer (BMC unreachable, wrong port, or IPMI over LAN disabled)"
    return text
