"""Live reconfiguration (`clpcfctrl --push`): check, distribute, apply.

The server where clpcfctrl runs coordinates a push; every running server
(the coordinator included) takes part through the same four requests, sent
over the internal channel (L{OPS}):

  1. C{config_stage}: the configuration directory (L{cpro.config.bundle}) in
     chunks, under a push token;
  2. C{config_prepare}: the server writes it into a staging directory,
     validates it completely against its own running configuration and holds
     it. A server holds one push at a time: a second push is refused while
     one is held. A held push is dropped after L{HOLD_TIMEOUT};
  3. C{config_commit}: the server installs the files into its configuration
     directory (the old clp.conf kept as clp.conf.prev), loads it again from
     there, records the new configuration generation and applies the
     difference (L{IConfigApplier});
  4. C{config_abort}: the held push is dropped; nothing changed;
  5. C{config_finish}: after a new cluster key was committed everywhere,
     the old key is no longer accepted.

A new cluster key is rotated without stopping anything: each server accepts
it as well from step 2 on, signs with it from its commit on, and drops the
old one at step 5, so no server ever refuses another's messages.

If any server refuses at step 2, every server aborts: nothing changes
anywhere, and the refusal comes back with every error and its element path.
Around the commits the coordinator runs the cluster-wide steps the plan needs
(L{cpro.config.diff}): the groups whose resources changed are stopped first
and started again where they ran; a change of the cluster's decisions
(dependencies, policies) is applied between a cluster suspend and resume.
Changes that need a restart of the cluster service (ports, servers) are
installed everywhere but take effect when the daemons restart: the report
says so.

A server that is down during the push gets the new configuration when it
starts: a starting server whose configuration generation is older than the
master's (or a running peer's) adopts the newer configuration (see
L{cpro.services.node}).
"""

import base64
import dataclasses
import inspect
import json
import os
import secrets
import shutil

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import Attribute, Interface

from cpro.cluster.controller import OperationError
from cpro.cluster.operations import OperatorRequests
from cpro.cluster.states import ClusterServiceState
from cpro.config import load_config
from cpro.config.bundle import (CONFIG_NAME, MAX_BYTES, Bundle, BundleError, ConfigFile, install_bundle,
                                 read_bundle)
from cpro.config.diff import Need, diff, plan
from cpro.config.model import ConfigError

log = Logger()

OPS = ("config_stage", "config_prepare", "config_commit", "config_abort", "config_finish")
CHUNK = 30000  # bytes of bundle per config_stage request (base64 keeps it under the channel's limit)
HOLD_TIMEOUT = 120.0  # seconds a prepared push is held waiting for its commit
GENERATION_FILE = "config.generation"


class IConfigApplier(Interface):
    """The running daemon, as live reconfiguration sees it."""

    config = Attribute("the running ClusterConfig")
    keyring = Attribute("the cluster keys (cpro.protocols.keyring.Keyring) its messages are signed and checked with")

    def apply_config(new_config, plan):
        """Swap new_config in, applying what plan (a L{cpro.config.diff.Plan})
        says can be applied live. Returns a Deferred firing a list of lines
        saying what was applied."""


class Generation:
    """The configuration generation of this server: 0 for a configuration
    nobody pushed, then one more at each push. Kept in the state directory
    with the digest it belongs to, so that a file edited by hand (another
    digest) counts as generation 0 again."""

    def __init__(self, state_dir):
        self.path = os.path.join(state_dir, GENERATION_FILE)

    def read(self, digest):
        try:
            with open(self.path) as f:
                data = json.load(f)
            if data.get("digest") == digest and type(data.get("generation")) is int:
                return data["generation"]
        except (OSError, ValueError, AttributeError):
            pass
        return 0

    def write(self, generation, digest):
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"generation": generation, "digest": digest}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


def _problems(error):
    return [str(p) for p in error.errors]


class _Held:
    """A push this server validated and holds until its commit or abort."""

    def __init__(self, token, coordinator, bundle, new_config, plan, timer):
        self.token = token
        self.coordinator = coordinator
        self.bundle = bundle
        self.new_config = new_config
        self.plan = plan
        self.timer = timer


class Reconfiguration:
    """The coordinator of pushes from this server, and this server's part in
    every push (the OPS requests)."""

    def __init__(self, reactor, controller, applier, config_path, state_dir, runner, requests=None):
        self.reactor = reactor
        self.controller = controller  # call(server, op, **args), peer_up, config, local, holders_of
        # Operator requests (group stop/start, cluster suspend/resume) for the cluster-wide steps.
        self.requests = requests if requests is not None else OperatorRequests(controller)
        self.applier = applier
        # None: the daemon was built without a configuration file (tests);
        # pushes are then refused.
        self.config_path = os.path.abspath(config_path) if config_path else None
        self.config_dir = os.path.dirname(self.config_path) if config_path else None
        self.state_dir = os.path.abspath(state_dir)
        self.runner = runner  # runner(fn, *args) -> Deferred: blocking file work off the reactor thread
        self.generations = Generation(state_dir)
        self.generation = self.generations.read(applier.config.digest)
        self._staged = {}  # token -> bytearray of the bundle being received
        self._held = None
        # (token, coordinator) of the push being validated here: a second one
        # is refused while it is, not left to find its staged bytes dropped.
        self._preparing = None
        self._pushing = False

    # -- coordinator -----------------------------------------------------------

    def _require_path(self):
        if self.config_path is None:
            raise OperationError("this daemon was started without a configuration file path")

    @defer.inlineCallbacks
    def pull(self, directory):
        """Write this server's configuration directory into directory."""
        self._require_path()
        bundle = yield self._read(self.config_dir)
        yield self.runner(install_bundle, bundle, directory)
        return {"server": self.controller.local, "generation": self.generation, "directory": directory}

    @defer.inlineCallbacks
    def check(self, directory):
        """What pushing directory would change (nothing is sent anywhere)."""
        self._require_path()
        bundle = yield self._read(directory)
        new_config, warnings = yield self._load_staged(bundle)
        return self._describe(plan(diff(self.applier.config, new_config)), warnings)

    @defer.inlineCallbacks
    def push(self, directory):
        """Distribute directory to every running server and apply it there.
        Fires the report; fails with OperationError (every error, nothing changed)."""
        self._require_path()
        if self._held is not None:
            raise OperationError(self._busy())
        if self._pushing:
            raise OperationError("another configuration push is in progress; try again when it has ended")
        self._pushing = True
        try:
            bundle = yield self._read(directory)
            report = yield self._push(bundle)
        finally:
            self._pushing = False
        return report

    @defer.inlineCallbacks
    def _push(self, bundle):
        c = self.controller
        token = secrets.token_hex(8)
        servers = [s.name for s in c.config.servers]
        targets = [n for n in servers if n == c.local or c.peer_up(n)]
        absent = [n for n in servers if n not in targets]
        blob = json.dumps(bundle.to_wire()).encode()
        prepared, answers = [], {}
        try:
            for server in targets:
                for offset in range(0, len(blob), CHUNK) or [0]:
                    chunk = base64.b64encode(blob[offset:offset + CHUNK]).decode()
                    yield c.call(server, "config_stage", token=token, offset=offset, data=chunk, total=len(blob))
                answers[server] = yield c.call(server, "config_prepare", token=token, coordinator=c.local)
                prepared.append(server)
        except Exception as e:
            yield self._abort_all(prepared, token)
            message = e.args[0] if isinstance(e, OperationError) and e.args else str(e)
            raise OperationError(f"configuration refused by {server}: {message}; nothing was changed") from None
        mine = answers[c.local]
        the_plan = plan(diff(self.applier.config, self._held.new_config))
        generation = max(a["generation"] for a in answers.values()) + 1
        if the_plan.empty:
            yield self._abort_all(prepared, token)
            return dict(mine, applied={}, absent=absent, generation=self.generation, unchanged=True)
        before, after = self._cluster_steps(the_plan)
        applied = {}
        try:
            yield before()
            for server in targets:
                try:
                    r = yield c.call(server, "config_commit", token=token, generation=generation)
                except Exception as e:
                    yield self._abort_all([t for t in targets if t not in applied], token)
                    raise OperationError(
                        f"applying the configuration on {server} failed: {e}; generation {generation} runs on "
                        f"{', '.join(applied) or 'no server'}, the others keep the previous one") from None
                applied[server] = r["applied"]
        finally:
            yield after()
        if the_plan.key_rotation:
            for server in targets:
                try:
                    yield c.call(server, "config_finish", token=token)
                except Exception as e:  # it keeps accepting the old key too until it restarts
                    log.warn("ending the key rotation on {s} failed: {e}", s=server, e=e)
        return dict(mine, applied=applied, absent=absent, generation=generation, unchanged=False)

    @defer.inlineCallbacks
    def _abort_all(self, servers, token):
        for server in servers:
            try:
                yield self.controller.call(server, "config_abort", token=token)
            except Exception as e:
                log.warn("aborting the configuration push on {s} failed: {e}", s=server, e=e)

    def _cluster_steps(self, the_plan):
        """(before, after): what surrounds the commits, as the plan needs."""
        c = self.controller
        requests = self.requests
        restart = []
        for group in the_plan.groups_to_restart:
            holders = c.holders_of(group) if group in c.groups_by_name else []
            restart.append((group, holders[0] if holders else None))
        suspend = the_plan.need is Need.SUSPEND_RESUME and c.service is ClusterServiceState.RUNNING

        @defer.inlineCallbacks
        def before():
            for group, holder in restart:
                if holder is not None:
                    yield requests.group_stop(group)
            if suspend:
                yield requests.cluster("suspend", True)

        @defer.inlineCallbacks
        def after():
            if suspend:
                yield requests.cluster("resume", True)
            for group, holder in restart:
                if holder is not None and group in c.groups_by_name:
                    try:
                        yield requests.group_start(group, holder)
                    except Exception as e:
                        log.warn("starting group {g} on {s} after the push failed: {e}", g=group, s=holder, e=e)

        return before, after

    # -- this server's part ----------------------------------------------------------

    def handle_call(self, op, args):
        """One of OPS, from the coordinator (possibly this server)."""
        handler = {"config_stage": self._stage, "config_prepare": self._prepare,
                   "config_commit": self._commit, "config_abort": self._abort,
                   "config_finish": self._finish}.get(op)
        if handler is None:
            raise OperationError(f"unknown configuration request {op}")
        try:
            inspect.signature(handler).bind(**args)
        except TypeError:
            raise OperationError(f"malformed configuration request {op}") from None
        return handler(**args)

    def _stage(self, token, offset, data, total):
        if (self._held is not None and self._held.token != token) or \
                (self._preparing is not None and self._preparing[0] != token):
            raise OperationError(self._busy())
        if not isinstance(total, int) or not 0 <= total <= 2 * MAX_BYTES:
            raise OperationError("configuration bundle too large")
        buf = self._staged.setdefault(token, bytearray())
        if offset != len(buf):
            raise OperationError("configuration bundle chunks out of order")
        try:
            buf += base64.b64decode(data, validate=True)
        except (ValueError, TypeError):
            raise OperationError("malformed configuration bundle chunk") from None
        if len(buf) > total:
            raise OperationError("configuration bundle larger than announced")
        return {"received": len(buf)}

    @defer.inlineCallbacks
    def _prepare(self, token, coordinator):
        self._require_path()
        if self._held is not None or self._preparing is not None:
            raise OperationError(self._busy())
        blob = self._staged.pop(token, None)
        self._staged.clear()
        if blob is None:
            raise OperationError("no configuration received for this push")
        try:
            bundle = Bundle.from_wire(json.loads(bytes(blob)))
        except (ValueError, BundleError) as e:
            raise OperationError(str(e)) from None
        self._preparing = (token, coordinator)
        try:
            new_config, warnings = yield self._load_staged(bundle)
        finally:
            self._preparing = None
        if self._held is not None:  # a concurrent push got here while we validated
            raise OperationError(self._busy())
        the_plan = plan(diff(self.applier.config, new_config))
        timer = self.reactor.callLater(HOLD_TIMEOUT, self._expire, token)
        self._held = _Held(token, coordinator, bundle, new_config, the_plan, timer)
        if the_plan.key_rotation:  # accept the new key before anyone signs with it
            self.applier.keyring.accept(new_config.key)
        return dict(self._describe(the_plan, warnings), generation=self.generation)

    @defer.inlineCallbacks
    def _commit(self, token, generation):
        held = self._take(token)
        try:
            yield self.runner(install_bundle, held.bundle, self.config_dir)
            new_config, _ = yield self.runner(load_config, self.config_path)
        except (OSError, ConfigError) as e:
            detail = "; ".join(_problems(e)) if isinstance(e, ConfigError) else str(e)
            raise OperationError(f"installing the configuration on {self.controller.local} failed: {detail}") \
                from None
        the_plan = plan(diff(self.applier.config, new_config))
        yield self.runner(self.generations.write, generation, new_config.digest)
        self.generation = generation
        applied = yield self.applier.apply_config(new_config, the_plan)
        log.info("configuration generation {g} applied: {a}", g=generation, a="; ".join(applied))
        return {"applied": applied}

    def _abort(self, token):
        self._staged.pop(token, None)
        if self._held is not None and self._held.token == token:
            held = self._take(token)
            self.applier.keyring.forget(held.new_config.key)
        return {}

    def _finish(self, token):
        """Every server signs with the new key now: accept it alone."""
        self.applier.keyring.settle()
        return {}

    def _take(self, token):
        held = self._held
        if held is None or held.token != token:
            raise OperationError("no configuration push of this token is held (expired?)")
        self._held = None
        if held.timer.active():
            held.timer.cancel()
        return held

    def _expire(self, token):
        if self._held is not None and self._held.token == token:
            log.warn("configuration push from {c} expired before its commit; dropped", c=self._held.coordinator)
            held, self._held = self._held, None
            self.applier.keyring.forget(held.new_config.key)

    def _busy(self):
        coordinator = self._held.coordinator if self._held is not None else self._preparing[1]
        return (f"another configuration push (from {coordinator}) is in progress; "
                "try again when it has ended")

    # -- a server that was down during a push --------------------------------------

    @defer.inlineCallbacks
    def adopt(self, text, generation, source):
        """Install clp.conf text of a newer generation, fetched from the peer
        source, into this server's configuration directory (the old file kept
        as clp.conf.prev). Validated first, as it would be installed; fails
        with OperationError naming every error, and then nothing changed.
        The caller restarts the daemon to run it."""
        self._require_path()
        bundle = Bundle((ConfigFile(CONFIG_NAME, text.encode(), 0o600),))
        try:
            new_config, _ = yield self._load_staged(bundle)
        except OperationError as e:
            raise OperationError(f"the configuration of {source} (generation {generation}) does not load "
                                 f"here: {e}") from None
        yield self.runner(install_bundle, bundle, self.config_dir)
        # The digest of the file as installed (the staged copy had the same text).
        yield self.runner(self.generations.write, generation, new_config.digest)
        self.generation = generation
        return new_config

    # -- helpers ---------------------------------------------------------------

    def _read(self, directory):
        d = self.runner(read_bundle, directory)
        d.addErrback(lambda f: f.trap(BundleError) and _raise(OperationError(str(f.value))))
        return d

    @defer.inlineCallbacks
    def _load_staged(self, bundle):
        """Validate bundle as it would be installed, in a staging directory of
        its own (removed afterwards: a held push keeps its bundle in memory)."""
        staging = os.path.join(self.state_dir, f"config.push.{secrets.token_hex(4)}")

        def load():
            shutil.rmtree(staging, ignore_errors=True)
            install_bundle(bundle, staging)
            return load_config(os.path.join(staging, CONFIG_NAME))

        try:
            new_config, warnings = yield self.runner(load)
        except ConfigError as e:
            raise OperationError("invalid configuration: " + "; ".join(_problems(e))) from None
        finally:
            yield self.runner(shutil.rmtree, staging, True)
        # As it will be once installed: the paths it resolved point into the
        # configuration directory, so that only real changes show in the diff.
        return relocated(new_config, staging, self.config_dir), warnings

    @staticmethod
    def _describe(the_plan, warnings):
        return {"changes": [{"path": c.path, "what": c.what, "need": c.need.name.lower(),
                             "needs": c.need.describe, "group": c.group} for c in the_plan.changes],
                "need": the_plan.need.name.lower() if the_plan.need is not None else None,
                "groups_to_restart": list(the_plan.groups_to_restart),
                "warnings": [str(w) for w in warnings]}


def _raise(exception):
    raise exception


def relocated(value, old_dir, new_dir):
    """value (a configuration model) with every path under old_dir moved under new_dir."""
    if isinstance(value, str):
        if value == old_dir or value.startswith(old_dir + os.sep):
            return new_dir + value[len(old_dir):]
        return value
    if isinstance(value, tuple):
        return tuple(relocated(v, old_dir, new_dir) for v in value)
    if isinstance(value, list):
        return [relocated(v, old_dir, new_dir) for v in value]
    if isinstance(value, dict):
        return {k: relocated(v, old_dir, new_dir) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {f.name: relocated(getattr(value, f.name), old_dir, new_dir)
                   for f in dataclasses.fields(value) if f.init}
        return dataclasses.replace(value, **changes)
    return value
