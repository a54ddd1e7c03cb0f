"""The cluster node: one MultiService wiring every part of a cpro server.

Children, in start order: alert log, internal communication, heartbeats,
admin port. The controller (cluster/controller.py) decides; this module only
connects events to it and its requests to the services. Bindings happen in
`bind()`, called before the reactor runs, so that a port in use ends the
daemon with a documented exit code instead of a traceback.
"""

import errno
import os
import sys
import time

from twisted.application import service
from twisted.internet import defer, error
from twisted.logger import Logger

from cpro import alertcatalog as catalog
from cpro import crashnote, exitcodes, plugins
from cpro.cluster import configcheck
from cpro.cluster.controller import ClusterController, MembershipEvents
from cpro.cluster.group import LocalGroup
from cpro.cluster.membership import Membership
from cpro.cluster.states import ClusterServiceState
from cpro.config.diff import Need
from cpro.protocols.heartbeat import StateDigest, new_incarnation
from cpro.protocols.keyring import Keyring
from cpro.resources.ledger import LEDGER_NAME, Ledger, cleanup_leftovers, default_removers, release
from cpro.system.runners import thread_runner
from cpro.services.admin import AdminHandler, AdminService
from cpro.services.alerts import AlertBindError, AlertLog
from cpro.services.heartbeat.service import HeartbeatBindError, HeartbeatService
from cpro.services.internal import InternalService
from cpro.services.monitors import MonitorService
from cpro.services.partition.build import build_partition
from cpro.services.reconfig import OPS as RECONFIG_OPS
from cpro.services.reconfig import Reconfiguration
from cpro.system.osactions import OSActions

log = Logger()


class ClusterNode(service.MultiService):
    def __init__(self, reactor, config, local, state_dir, admin_endpoint, autostart=True, after_crash=False,
                 config_path=None):
        super().__init__()
        self.reactor = reactor
        self.config = config
        self.local = local
        self.state_dir = state_dir
        self.admin_endpoint = admin_endpoint
        self.autostart = autostart
        self.after_crash = after_crash  # rejoin without auto-starting groups (see recover_from_crash)
        self.exit_code = None
        self.incarnation = new_incarnation(time.time())
        token = str(self.incarnation)
        log_dir = os.path.join(state_dir, "log")
        os.makedirs(log_dir, exist_ok=True)

        # Not a child service: it binds in bind(), before the others start,
        # and stops last so that the shutdown is still recorded.
        # The cluster keys: one, or the old and the new during a rotation (clpcfctrl --push).
        self.keyring = Keyring(config.key)
        self.alerts = AlertLog(reactor, config, local, log_dir, token, keyring=self.keyring)
        self.os_actions = OSActions(reactor, config.os_actions, self.alerts, local)
        # What the resources hold while active: if this daemon crashes, the
        # next one removes it before the peers hear of it (resources/ledger.py).
        self.ledger = Ledger(os.path.join(state_dir, LEDGER_NAME))
        self.removers = default_removers(reactor)
        self._recovery = None
        self._stopping = False

        self.log_dir = log_dir
        groups = {g.name: self._build_group(config, g) for g in config.groups}
        self.controller = ClusterController(reactor, config, local, groups, None, self.alerts,
                                            self.os_actions, token)
        self.internal = InternalService(reactor, config, local, token, self.controller, self.alerts,
                                        keyring=self.keyring)
        self.internal.on_config_mismatch = self._config_mismatch
        self.internal.setServiceParent(self)
        self.controller.peers = self.internal
        self.controller.on_state_change = self._state_changed

        peers = [s.name for s in config.servers if s.name != local]
        self.membership = Membership(reactor, local, peers, {p: config.shared_paths(local, p) for p in peers},
                                     config.hb_timeout, MembershipEvents(self.controller, self.internal.refresh),
                                     self.incarnation)
        self.controller.membership = self.membership
        self.heartbeat = HeartbeatService(reactor, config, local, self.incarnation, self._digest, self._on_beat,
                                          self._on_alive, keyring=self.keyring)
        self.heartbeat.setServiceParent(self)
        # Between a peer's loss and its failover: NP resolution and forced stop.
        self.controller.partition = build_partition(reactor, config, local, self.alerts, thread_runner(reactor),
                                                    self.heartbeat.paths)
        self.controller.on_network_partition = self._network_partition_action
        # Monitors run while the cluster service is Running (MonitorService.sync,
        # called on every state change); stopping the service stops them.
        self.monitors = MonitorService(reactor, config, local, self.controller, self.alerts, state_dir, log_dir,
                                       self.os_actions)
        self.monitors.setServiceParent(self)
        self.controller.monitors = self.monitors
        # The admin endpoint listens once the services run (listen_admin) and
        # stops before them (stopService); the operator request dispatch is its handler.
        # Live reconfiguration (clpcfctrl --push): this server's part in every
        # push, and the coordinator of the pushes asked for here.
        self.reconfig = Reconfiguration(reactor, self.controller, self, config_path, state_dir,
                                        thread_runner(reactor))
        self.controller.config_generation = self.reconfig.generation
        self.controller.call_handlers.update(dict.fromkeys(RECONFIG_OPS, self.reconfig.handle_call))
        self.admin = AdminService(reactor, admin_endpoint, AdminHandler(self))
        self.admin.setServiceParent(self)
        self._fetching = set()
        self._adopting = False

    def _build_group(self, config, group):
        rcfgs = {n: config.resource(n) for n in group.resources}
        # The group resource factory signature (cpro.interfaces.IGroupResource).
        resources = {n: plugins.RESOURCE_TYPES.get(r.type).factory(self.reactor, r, self.log_dir, ledger=self.ledger)
                     for n, r in rcfgs.items()}
        return LocalGroup(group, rcfgs, resources, self.local, self.alerts, lambda: self.controller.notify_changed())

    # -- live reconfiguration (IConfigApplier) ------------------------------------

    def apply_config(self, new, plan):
        """Run with configuration new from now on, as far as plan says it can
        be applied live; the coordinator has stopped the groups to restart and
        suspended the cluster where the plan needs it. Returns a Deferred
        firing the lines that say what was applied."""
        if plan.need is Need.SERVICE_RESTART:
            return defer.succeed(["installed; it takes effect when the cluster daemon restarts "
                                  "(ports, servers, heartbeat paths or the cluster name changed)"])
        old, controller = self.config, self.controller
        groups = {}
        for g in new.groups:
            current = controller.groups.get(g.name)
            rcfgs = {n: new.resource(n) for n in g.resources}
            if current is None or g.name in plan.groups_to_restart or tuple(g.resources) != current.config.resources:
                groups[g.name] = self._build_group(new, g)
            else:
                current.reconfigure(g, rcfgs)
                groups[g.name] = current
        self.config = new
        # A new key: signed with from now on; the old one is still accepted
        # until every server signs with the new one (config_finish).
        self.keyring.switch(new.key)
        controller.reconfigure(new, groups, self.reconfig.generation)
        if new.hb_timeout != old.hb_timeout:
            self.membership.reset_timeout(new.hb_timeout)
        if new.hb_interval != old.hb_interval:
            self.heartbeat.set_interval(new.hb_interval)
        self.monitors.reconfigure(new)
        self.os_actions.reconfigure(new.os_actions)
        self.alerts.reconfigure(new)
        self.internal.reconfigure(new)
        self._state_changed()
        return defer.succeed([f"{c.what}: {c.need.describe}" for c in plan.changes])

    # -- startup ---------------------------------------------------------------

    def bind(self):
        """Bind every port now; raises exitcodes.StartupError."""
        try:
            self.heartbeat.start_listening()
        except HeartbeatBindError as e:
            raise _bind_error(e, str(e)) from e
        try:
            self.internal.listen()
        except error.CannotListenError as e:
            raise _bind_error(e.socketError, f"internal communication port {e.interface}:{e.port}: "
                                             f"{e.socketError}") from e
        try:
            self.alerts.startService()
        except AlertBindError as e:
            raise _bind_error(e.__cause__.socketError if e.__cause__ else e, str(e)) from e

    @defer.inlineCallbacks
    def listen_admin(self):
        try:
            yield self.admin.listen()
        except Exception as e:
            raise _bind_error(e, f"admin endpoint {self.admin_endpoint}: {e}") from e

    def startService(self):
        # The leftovers of a crashed predecessor go first: the children start
        # the heartbeats and internal links that tell the peers about this
        # incarnation, and a peer that fails over on hearing of it must not
        # find our old address still up.
        self._recovery = self.recover_from_crash()
        self._recovery.addCallback(lambda _: self._start_services())
        self._recovery.addErrback(self._fatal)

    def _start_services(self):
        if self._stopping:
            return None
        super().startService()
        self.controller.partition.start_checks(self.config.network_partition.check_interval)
        d = self.listen_admin()
        d.addCallback(lambda _: self.controller.start_service() if self.autostart else None)
        d.addErrback(self._fatal)
        return d

    @defer.inlineCallbacks
    def recover_from_crash(self):
        """Report a crash of the previous daemon, remove what it left (ledger)
        and, if it crashed or did not stop cleanly, make this incarnation
        rejoin without auto-starting groups (the peers have failed them over,
        or the operator decides). Never fails."""
        had_leftovers = bool(self.ledger.leftovers())
        self.ledger.claim()  # the supervisor reads our pid in it: we got this far
        notes = crashnote.take_notes(self.state_dir)
        for note in notes:
            self.alerts.emit(*catalog.DAEMON_CRASHED.format(**crashnote.alert_fields(note)))
        report = yield cleanup_leftovers(self.reactor, self.ledger, self.removers)
        if report.found or report.stale:
            entry = (catalog.LEFTOVERS_NOT_ALL_REMOVED if report.failed else
                     catalog.LEFTOVERS_CLEANED if report.found else catalog.STALE_LEFTOVERS_DROPPED)
            self.alerts.emit(*entry.format(server=self.local, summary=report.summary()))
        if self.after_crash or any(crashnote.same_boot(n, self.ledger.boot) for n in notes):
            self.controller.skip_auto_start_once("the previous cluster daemon ended abnormally")
        elif had_leftovers:
            self.controller.skip_auto_start_once("the previous cluster daemon did not stop cleanly")
        return report

    def _when_recovered(self):
        d = defer.Deferred()

        def fire(result):
            d.callback(None)
            return result

        self._recovery.addBoth(fire)
        return d

    def _fatal(self, failure):
        err = failure.value
        code = getattr(err, "code", exitcodes.INTERNAL_ERROR)
        log.failure("cpro cannot run", failure)
        self.exit(code, str(err))

    def restart_in_place(self, reason):
        """Run this daemon again from the start, in this process (same pid, so
        a supervisor keeps watching it): for a server that has not started its
        service yet and must run another configuration."""
        log.warn("restarting the cluster daemon: {reason}", reason=reason)
        try:
            os.write(2, f"cpro: restarting: {reason}\n".encode())
        except OSError:
            pass
        argv = list(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv])
        self.reactor.callLater(0, _reexec, argv,
                               lambda e: self.exit(exitcodes.INTERNAL_ERROR, f"restarting the daemon failed: {e}"))

    def exit(self, code, message):
        """End the daemon with a documented exit code."""
        self.exit_code = code
        log.error("cpro: {message} (exit code {code})", message=message, code=code)
        # twistd has redirected sys.stderr into the log by now: write to the real one.
        try:
            os.write(2, f"cpro: {message}\n".encode())
        except OSError:
            pass
        if self.reactor.running:
            self.reactor.stop()

    @defer.inlineCallbacks
    def stopService(self):
        self._stopping = True
        if self._recovery is not None and not self.running:
            yield self._when_recovered()
        if not self.running:  # stopped during the clean-up: the services never started
            if self.alerts.running:
                yield self.alerts.stopService()
            return
        if self.controller.service not in (ClusterServiceState.STOPPED,):
            try:
                yield self.controller.stop_service(move_groups=True)
            except Exception:
                log.failure("stopping the cluster service failed")
        self.membership.stop()
        self.controller.partition.stop()
        # No new admin sessions before anything they act on stops (the
        # children stop together; admin, the last child, would only be first).
        yield self.admin.stopService()
        yield super().stopService()
        if self.alerts.running:
            yield self.alerts.stopService()

    # -- events ----------------------------------------------------------------

    def _digest(self):
        return StateDigest(config=self.config.digest, placement=self.controller.version,
                           service=self.controller.service.value)

    def _state_changed(self):
        self.monitors.sync()
        # Pushed at once, not coalesced: a request that follows a change on the
        # same link (stop here, then "start it" there) must find the peer's
        # view already updated, or the peer refuses a group we still seem to hold.
        if self.running:
            self.internal.broadcast_state(self.controller.local_report())
            self.heartbeat.send_now()

    def _on_beat(self, path, packet):
        self.membership.beat(packet.sender, path, packet.incarnation)
        if packet.digest.config != self.config.digest:
            return
        if self.controller.peer_digest(packet.sender, str(packet.incarnation), packet.digest.placement) \
                and packet.sender not in self._fetching:
            self._fetching.add(packet.sender)
            self.internal.refresh(packet.sender).addBoth(lambda _: self._fetching.discard(packet.sender))

    @defer.inlineCallbacks
    def _network_partition_action(self, action):
        """This server is the one cut off: release what it holds at once (the
        healthy side takes it after its takeover wait), stop the cluster
        service and, for actions 2 and 3, shut down or reboot the OS."""
        report = yield release(self.reactor, self.ledger.entries(), self.removers, grace=0.0,
                               addresses_first=True)
        self.alerts.emit(*catalog.EMERGENCY_RELEASE.format(server=self.local, summary=report.summary()))
        try:
            yield self.controller.stop_service(move_groups=False)
        except Exception:
            log.failure("stopping the cluster service after a network partition")
        if action == 2:
            yield self.os_actions.run("shutdown", "network partition")
        elif action == 3:
            yield self.os_actions.run("reboot", "network partition")

    def _on_alive(self, path, server, incarnation, age):
        self.membership.beat(server, path, incarnation, age)

    @defer.inlineCallbacks
    def _config_mismatch(self, server, detail, via, peer_run=None):
        """A server that does not run its service yet refuses to run with another
        configuration than the master's or, while the master is down, than a
        running peer's or an earlier-started peer's (cpro.cluster.configcheck)."""
        if via is None:
            return
        master = self.config.master.name
        who = configcheck.refusal(self.local, self.controller.service, self.incarnation, master,
                                  self.membership.is_up(master), server, peer_run)
        if who is None:
            return
        if configcheck.newer_configuration(self.reconfig.generation, peer_run) and not self._adopting:
            # This server was down during a push: it takes the newer
            # configuration and starts again with it, instead of refusing.
            self._adopting = True
            try:
                digest, text = yield self.internal.fetch_config(via)
                yield self.reconfig.adopt(text, peer_run.generation, server)
            except Exception as e:
                log.error("adopting the newer configuration of {s} failed: {e}", s=server, e=e)
                detail = f"{detail}; adopting its newer configuration failed: {e}"
            else:
                self.restart_in_place(f"configuration generation {peer_run.generation} adopted from {server}")
                return
        saved = os.path.join(self.state_dir, f"clp.conf.{server}")
        try:
            digest, text = yield self.internal.fetch_config(via)
            with open(saved, "w") as f:
                f.write(text)
            where = f"its copy is saved in {saved}"
        except Exception as e:
            where = f"fetching its copy failed: {e}"
        self.exit(exitcodes.CONFIG_MISMATCH,
                  f"the configuration differs from that of {who} ({detail}); refusing to run; {where}")


def _reexec(argv, on_failure):
    try:
        os.execv(sys.executable, argv)
    except OSError as e:
        on_failure(e)


def _bind_error(exc, message):
    err = getattr(exc, "errno", None)
    if err in (errno.EACCES, errno.EPERM):
        return exitcodes.StartupError(exitcodes.PERMISSION_DENIED, message)
    return exitcodes.StartupError(exitcodes.ADDRESS_IN_USE, message)
