"""Standard modules that libraries import at their top but netbee does not use on its way to
`tracing`, loaded on first use instead of at import.

construct (netbee.abi) imports pdb, inspect and traceback for its Debugger and Probe, hashlib
and pickle for compiled parsers; pyelftools' bundled construct (the object's reader) imports
pdb, inspect, traceback and, through pprint, dataclasses; netbee.filter imports ipaddress for
the addresses a filter may name (~2.8 ms, for a filter without any). Loading them is ~8 ms of
the tracing process's start and ~8 ms of the child that reads the object
(netbee.loader.background_parse), both on the path to `tracing`. A stand-in in sys.modules makes `import pdb` cheap; the first
attribute asked of it (`pdb.post_mortem`, `from pdb import Pdb`) loads the real module, which
then takes the stand-in's place.

(importlib.util.LazyLoader would not do: on Python 3.11 the next `import pdb` reads the
module's __spec__, which loads it.)
"""
from __future__ import annotations

import importlib
import sys
import types

DEFERRED = ("pdb", "inspect", "traceback", "dataclasses", "hashlib", "pickle", "ipaddress")


class LoadedOnUse(types.ModuleType):
    """Stands in sys.modules for a module not loaded yet; the first attribute asked of it loads
    the real module, which takes its place."""

    def __getattr__(self, attr: str):
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        return getattr(importlib.import_module(self.__name__), attr)


def defer(names: tuple = DEFERRED) -> None:
    """Put a stand-in for each of `names` not imported yet (a module already loaded stays)."""
    for name in names:
        sys.modules.setdefault(name, LoadedOnUse(name))


def loaded(name: str) -> bool:
    """Whether the real module `name` is loaded (a stand-in does not count)."""
    return name in sys.modules and not isinstance(sys.modules[name], LoadedOnUse)
