"""NetBee's BPF loader: parse the object (pure modules), then load and attach through one syscall door.

The names below are exported lazily (PEP 562), so importing a pure module such as
netbee.loader.btf does not drag in ctypes and the kernel-facing modules.
"""
from __future__ import annotations

import importlib
from typing import Any, Dict

_EXPORTS: Dict[str, str] = {
    # pure side
    "ObjectSpec": "elf", "ProgramSpec": "elf", "MapSpec": "elf",
    "Btf": "btf", "BtfKind": "btf", "BtfExt": "btf_ext",
    # kernel side
    "Collection": "collection",
    "Map": "maps", "MapType": "maps",
    "Program": "programs", "LoadedBtf": "programs", "ProgType": "programs", "AttachType": "programs",
    "Link": "links", "attach": "links",
    "RingBufReader": "ringbuf",
    "probe_table": "features", "ensure_memlock": "features",
    # errors
    "NetBeeError": "errors", "BTFError": "errors", "ObjectFileError": "errors",
    "CoreRelocationError": "errors", "SyscallError": "errors", "VerifierError": "errors",
    "NotSupportedError": "errors", "AttachError": "errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'netbee.loader' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"netbee.loader.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list:
    return __all__
