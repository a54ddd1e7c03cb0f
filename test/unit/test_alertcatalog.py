"""The alert catalogue (cpro.alertcatalog): one entry per (module, id), every
template formats with its fields, every call site of cpro/ raises alerts
through it, and docs/operations.md lists it."""

import ast
import os
import string

from twisted.trial import unittest
from zope.interface.verify import verifyObject

import cpro
from cpro import alertcatalog as catalog
from cpro.alertcatalog import AlertEntry
from cpro.cluster.states import Level
from cpro.interfaces import IAlertSink
from cpro.testing.fakes import FakeAlerts

PACKAGE = os.path.dirname(cpro.__file__)
OPERATIONS_MD = os.path.join(os.path.dirname(PACKAGE), "docs", "operations.md")
MODULES = {"pm", "nm", "cl", "rc", "rm"}


def named_alerts():
    """name -> AlertEntry: the catalogue's public constants."""
    return {name: value for name, value in vars(catalog).items()
            if isinstance(value, AlertEntry) and not name.startswith("_")}


def sample_fields(entry):
    """A value for each field: a number where the template gives a format spec."""
    values = {}
    for _, name, spec, _ in string.Formatter().parse(entry.template):
        if name is not None:
            values[name] = 1.5 if spec else f"<{name}>"
    return values


def source_files():
    for folder, dirs, files in os.walk(PACKAGE):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            if name.endswith(".py"):
                yield os.path.join(folder, name)


def dotted(node):
    """'self.alerts' for the expression self.alerts ('' for anything else)."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = dotted(node.value)
        return f"{head}.{node.attr}" if head else ""
    return ""


def is_text(node):
    """A string literal, an f-string or text built from them."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, ast.JoinedStr):
        return True
    if isinstance(node, ast.BinOp):
        return is_text(node.left) or is_text(node.right)
    return False


def alert_calls(tree):
    """(kind, call) for every call that raises an alert: 'emit' on an alert
    sink (self.alerts, self._alerts, ...; not twisted's log.emit) and the
    controller's 'alert' helper."""
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        if node.func.attr == "emit" and "alert" in dotted(node.func.value).split(".")[-1].lower():
            yield "emit", node
        elif node.func.attr == "alert":
            yield "alert", node


def bypasses(kind, call):
    """Why this call does not go through the catalogue, or None."""
    # Fields may be built from text (reason=f"server {s} down"); the message may not.
    if any(is_text(arg) for arg in call.args):
        return "writes its text inline"
    if kind == "emit" and not (len(call.args) == 1 and isinstance(call.args[0], ast.Starred)):
        return "does not emit(*entry.format(...))"
    if kind == "alert" and (not call.args or isinstance(call.args[0], ast.Constant)):
        return "does not name a catalogue entry"
    return None


def catalogue_uses(tree):
    """(entry name, keyword names or None for **fields, line) for each
    catalog.NAME.format/text(...) and alert(catalog.NAME, ...)."""
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        target = None
        if node.func.attr in ("format", "text"):
            target = node.func.value
        elif node.func.attr == "alert" and node.args:
            target = node.args[0]
        if not (isinstance(target, ast.Attribute) and dotted(target.value) == "catalog"):
            continue
        names = [kw.arg for kw in node.keywords]
        yield target.attr, (None if None in names else set(names)), node.lineno


class CatalogueTests(unittest.SynchronousTestCase):
    def test_one_entry_per_module_and_id(self):
        seen = {}
        for entry in catalog.entries():
            self.assertIn(entry.module, MODULES)
            self.assertNotIn(entry.key, seen, f"{entry.key} is in the catalogue twice")
            seen[entry.key] = entry
            self.assertIs(catalog.lookup(entry.module, entry.event_id), entry)
        self.assertGreater(len(seen), 80)

    def test_variants_belong_to_an_entry(self):
        for entry in catalog.every_alert():
            if entry.variant:
                main = catalog.lookup(entry.module, entry.event_id)
                self.assertIsNotNone(main, f"variant {entry} has no entry")
                self.assertIn(entry, catalog.variants(main))

    def test_no_sentence_twice(self):
        # The same message written twice becomes one entry.
        sentences = [(e.key, e.level, e.template) for e in catalog.every_alert()]
        self.assertEqual(len(sentences), len(set(sentences)))

    def test_every_constant_is_catalogued(self):
        self.assertEqual(sorted(named_alerts().values(), key=id), sorted(catalog.every_alert(), key=id))

    def test_lookup_of_unknown_id(self):
        self.assertIsNone(catalog.lookup("nm", 9999))
        self.assertIs(catalog.lookup("nm", "2"), catalog.SERVER_STOPPED)

    def test_templates_format_with_their_fields(self):
        for name, entry in named_alerts().items():
            for literal, field, spec, conversion in string.Formatter().parse(entry.template):
                if field is not None:
                    self.assertTrue(field.isidentifier(), f"{name}: field {field!r} is not a plain name")
                    self.assertIsNone(conversion, f"{name}: {field!r} has a conversion")
            message = entry.text(**sample_fields(entry))
            self.assertNotIn("{", message, name)
            for field in entry.fields:
                self.assertIn(str(sample_fields(entry)[field]).rstrip("0"), message, f"{name}: {field}")

    def test_a_missing_field_still_raises_the_alert(self):
        # An alert is often raised on a failure path that must go on.
        raised = catalog.FORCED_STOP_STARTED.format(server="srv2")
        self.assertEqual((raised.module, raised.event_id, raised.level), ("nm", 40, Level.WARNING))
        self.assertIn("srv2", raised.message)

    def test_format_feeds_any_alert_sink(self):
        sink = FakeAlerts()
        verifyObject(IAlertSink, sink)
        sink.emit(*catalog.SERVER_STOPPED.format(server="srv1"))
        sink.emit(*catalog.MONITOR_DELAY.format(monitor="genw1", timeout=60.0, duration=49.5, ratio=80))
        self.assertEqual(sink.alerts, [
            ("nm", 2, "WARNING", "Server srv1 has been stopped."),
            ("rm", 71, "WARNING", "Detected a monitor delay in monitoring genw1. (timeout=60 s "
                                  "actual-time=49.500 s delay warning rate=80%)"),
        ])

    def test_variants_keep_their_own_text_and_level(self):
        self.assertEqual(tuple(catalog.MANUAL_FAILOVER.format(group="g1")),
                         ("rc", 61, Level.WARNING, "Group g1 is not failed over (manual failover)."))
        self.assertEqual(tuple(catalog.NO_DESTINATION.format(group="g1")),
                         ("rc", 61, Level.ERROR, "There is no appropriate destination for the group g1."))

    def test_the_catalogue_is_a_leaf(self):
        # It must be importable from every layer without a cycle.
        for path in (catalog.__file__, os.path.join(PACKAGE, "cluster", "states.py"),
                     os.path.join(PACKAGE, "cluster", "__init__.py")):
            with open(path, encoding="utf-8") as f:
                tree = ast.parse(f.read())
            imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
            imported |= {a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
            inside = {m for m in imported if m and m.split(".")[0] == "cpro"}
            allowed = {"cpro.cluster.states"} if path == catalog.__file__ else set()
            self.assertEqual(inside, allowed, path)


class CallSiteTests(unittest.SynchronousTestCase):
    """A source scan: a new call site cannot bypass the catalogue."""

    def parsed(self):
        for path in source_files():
            with open(path, encoding="utf-8") as f:
                yield os.path.relpath(path, PACKAGE), ast.parse(f.read(), path)

    def test_no_alert_text_outside_the_catalogue(self):
        found, offenders = 0, []
        for path, tree in self.parsed():
            for kind, call in alert_calls(tree):
                found += 1
                why = bypasses(kind, call)
                if why:
                    offenders.append(f"{path}:{call.lineno}: {why}")
        self.assertEqual(offenders, [])
        self.assertGreater(found, 80)  # the scan sees the call sites

    def test_the_scan_catches_an_inline_alert(self):
        tree = ast.parse(
            "self.alerts.emit('nm', 2, Level.WARNING, f'Server {s} has been stopped.')\n"
            "self._alerts.emit(module, 2, level, message)\n"
            "self.alert('nm', 1, Level.INFO, 'Server up.')\n"
            "self.log.emit(LogLevel.info, 'not an alert {x}', x=1)\n"
            "self.alerts.emit(*catalog.SERVER_STOPPED.format(server=s))\n"
            "self.alert(catalog.SERVER_STARTED, server=s)\n")
        verdicts = [bypasses(kind, call) for kind, call in alert_calls(tree)]
        self.assertEqual([v is not None for v in verdicts], [True, True, True, False, False])

    def test_call_sites_give_the_declared_fields(self):
        entries = named_alerts()
        wrong = []
        for path, tree in self.parsed():
            for name, given, line in catalogue_uses(tree):
                if name not in entries:
                    wrong.append(f"{path}:{line}: no entry {name}")
                elif given is not None and given != entries[name].fields:
                    wrong.append(f"{path}:{line}: {name} takes {sorted(entries[name].fields)}, "
                                 f"given {sorted(given)}")
        self.assertEqual(wrong, [])

    def test_every_entry_is_raised_somewhere(self):
        used = set()
        for path, tree in self.parsed():
            if path == "alertcatalog.py":
                continue
            used |= {node.attr for node in ast.walk(tree)
                     if isinstance(node, ast.Attribute) and dotted(node.value) == "catalog"}
        self.assertEqual(sorted(set(named_alerts()) - used), [])


class DocumentationTests(unittest.SynchronousTestCase):
    def test_operations_guide_lists_the_catalogue(self):
        # Regenerate with: python -m cpro.alertcatalog
        with open(OPERATIONS_MD, encoding="utf-8") as f:
            text = f.read()
        self.assertTrue(catalog.markdown_table() in text,
                        "the alert table of docs/operations.md is not the catalogue's: "
                        "regenerate it with python -m cpro.alertcatalog")
