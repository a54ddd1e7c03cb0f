"""The shapes of the configuration schemas that type modules declare.

A group resource type or a monitor type lives in one module (under
L{cpro.resources}) that registers itself with L{cpro.plugins} together with
its schema: what cpro.config needs to read, check and build the type's part
of clp.conf without naming the type. The schemas are values of the classes
below; their functions are given the loader (L{cpro.config.validate}), which
offers:

- C{report}, C{error(path, message)}, C{warning(path, message)}: findings,
  each with the element path at fault;
- C{base_dir}: the directory of clp.conf (relative scripts, logs);
- C{servers}, C{groups}, C{resources}: what was read, as namespaces
  (cross-checks run once every section is read);
- C{address(text, path, what)}, C{check_executable(path, node_path, what)},
  C{resource_integer(type, section, prefix, tag)}: shared readers.

Defaults and ranges stay in the one table (L{cpro.config.defaults}), keyed
by element path with the type name first (C{exec/parameters/act/sync}), so
that docs/configuration.md prints one table.
"""

from dataclasses import dataclass
from typing import Callable, Optional


@dataclass(frozen=True)
class ResourceSchema:
    """The clp.conf part of a group resource type (C{<resource><TYPE name=...>}).

    - C{read(loader, node, r)}: read the resource's own elements (its
      C{<parameters>}) from node (a L{cpro.config.xmltree.Node}) into r, a
      namespace with name, type, path and group, recording every problem
      with its element path and finishing what it read. The loader reads
      what every type shares (act/deact recovery, depend) afterwards.
    - C{check(loader, resources)}: cross-checks once every section is read,
      given every resource of this type (r.group is None for one in no
      group): duplicates, files that must exist, subnets...
    - C{build(r)}: the C{params} value of its L{cpro.config.model.ResourceConfig}.
    """

    read: Callable
    build: Callable
    check: Optional[Callable] = None


@dataclass(frozen=True)
class Param:
    """One type-specific monitor parameter: <parameters><KEY> and the params dict key KEY."""

    key: str
    kind: str  # int, flag, seconds, text, choice, nic, abspath, ip_list, name_list, disk_list
    limits: object = None  # (low, high) for numbers, a tuple of words for choice
    required: bool = False
    # ip_list / name_list: (element, leaf) of the original's list@i form,
    # e.g. <list id="0"><ip>...</ip></list> is ("list", "ip").
    xml: tuple = None


@dataclass(frozen=True)
class MonitorSchema:
    """The clp.conf part of a monitor type (C{<monitor><TYPE name=...>}).

    - C{params}: its L{Param}s under C{<parameters>} (and C{<server><parameters>});
      their defaults are C{TYPE/parameters/KEY} in the defaults table.
    - C{target_type}: the group resource type its C{<target>} must be, for
      types that watch one resource only while it is active (polling/timing 1
      is then implied and required); None for the others.
    - C{check_target(loader, m, resource)}: a further rule on that target.
    - C{check_parameters(loader, m)}: type-specific rules once the parameters
      are read and defaulted (L{cpro.config.monitors.all_parameters} yields
      the main and per-server sets); may rewrite values (resolve a path).
    - C{check_monitors(loader, mine, monitors)}: cross-checks between
      monitors once each one's target and relation are resolved: mine are
      this type's, monitors every one by name (mtw: its members).
    - C{polling(cluster, m, interval, timeout)}: the (interval, timeout) in
      seconds the monitor really polls with, given the cluster settings as
      read (userw with usehb: the heartbeat's); None keeps its own.
    - C{per_server}: whether C{<server name=...><parameters>} overrides exist.
    - C{default_relation}: the relation kind assumed when neither
      relation/type nor relation/name is given.
    - C{event_fed}: the type is not polled: it reports results when events
      arrive (an L{cpro.interfaces.IEventMonitor}, built with a C{report}
      callback). C{polling/reconfirmation} still counts error reports before
      recovery; C{polling/interval} only paces a dummy failure's errors;
      C{polling/timeout} and C{firstmonwait} are not used.
    """

    params: tuple = ()
    target_type: Optional[str] = None
    check_target: Optional[Callable] = None
    check_parameters: Optional[Callable] = None
    check_monitors: Optional[Callable] = None
    polling: Optional[Callable] = None
    per_server: bool = True
    default_relation: Optional[str] = None
    event_fed: bool = False
