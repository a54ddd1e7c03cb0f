"""The plug-in registry (cpro.plugins)."""

import sys
import types

from twisted.trial.unittest import SynchronousTestCase

from cpro import plugins


class RegistryTests(SynchronousTestCase):
    def setUp(self):
        self.module = types.ModuleType("cpro_test_plugin_module")
        self.registry = plugins.Registry("widget type", ("cpro_test_plugin_module",))
        registry = self.registry

        def load():  # what importing the module does: register its type
            @registry.register("knob", "dial", schema={"size": 3})
            class Knob:
                pass

            self.module.Knob = Knob

        self.module_loader = load
        sys.modules.pop("cpro_test_plugin_module", None)
        self.addCleanup(sys.modules.pop, "cpro_test_plugin_module", None)

    def install_module(self):
        class Finder:
            @staticmethod
            def find_spec(name, path=None, target=None):
                import importlib.util
                if name != "cpro_test_plugin_module":
                    return None
                loader = self

                class Loader:
                    def create_module(self, spec):
                        return loader.module

                    def exec_module(self, module):
                        loader.module_loader()

                return importlib.util.spec_from_loader(name, Loader())

        sys.meta_path.insert(0, Finder)
        self.addCleanup(sys.meta_path.remove, Finder)

    def test_built_in_modules_are_imported_on_first_use(self):
        self.install_module()
        plugin = self.registry.get("dial")
        self.assertEqual((plugin.name, plugin.kind, plugin.schema), ("dial", "widget type", {"size": 3}))
        self.assertIs(plugin.factory, self.module.Knob)
        self.assertEqual(self.registry.names(), ["dial", "knob"])
        self.assertIn("knob", self.registry)

    def test_unknown_type_names_the_kind_and_the_known_types(self):
        self.install_module()
        with self.assertRaises(plugins.UnknownType) as e:
            self.registry.get("lever")
        self.assertEqual(str(e.exception), "unknown widget type 'lever' (known: dial, knob)")
        self.assertNotIn("lever", self.registry)

    def test_two_factories_for_one_name_are_refused(self):
        self.registry.register("knob")(object)
        self.assertRaises(ValueError, self.registry.register("knob"), dict)
