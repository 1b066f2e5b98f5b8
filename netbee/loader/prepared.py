"""Programs ready for the verifier, apart from the object file and the kernel BTF they came from.

A PreparedObject is what Collection makes of an ObjectSpec before anything reaches the kernel:
the object BTF as this kernel accepts it, the map specs with their global data, and per program
the CO-RE relocated instructions, the BTF attach id and the func/line records in the kernel's
own form. Map fds are the only blanks; Collection fills them at load.

It converts to and from plain JSON-able data (to_doc/from_doc), so a later run can load the same
programs without parsing the ELF file or the kernel BTF and without CO-RE (netbee/prepcache.py).
A function whose body was replaced at link time sits at the end of each program that reaches it
(elf.py's linker puts it there), so with_body() can give it another body: a new filter reuses
everything else.
"""
from __future__ import annotations

import struct
from typing import Any, Dict, List, Optional, Tuple

from netbee.loader import insn as I
from netbee.loader.errors import ObjectFileError
from netbee.loader.map_spec import Globals, MapReloc, MapSpec, read_global, write_global
from netbee.loader.record import Record

FUNC_INFO_SIZE = 8     # struct bpf_func_info
LINE_INFO_SIZE = 16    # struct bpf_line_info


def func_info_records(func_info: Any) -> bytes:
    """struct bpf_func_info records (instruction offsets) of elf.py's FuncInfo (byte offsets)."""
    return b"".join(struct.pack("=II", r.insn_off // 8, r.type_id) for r in func_info)


class PreparedProgram(Record):
    __slots__ = ("name", "kind", "attach_target", "license", "insns", "map_relocs", "attach_btf_id",
                 "func_info", "line_info", "poisoned", "replaced_at")

    def __init__(self, name: str,
                 kind: str, attach_target: str, license: str, insns: bytes,
                 map_relocs: Optional[List[MapReloc]] = None, attach_btf_id: int = 0, func_info: bytes = b"",
                 line_info: bytes = b"", poisoned: Optional[List[Tuple[int, str]]] = None,
                 replaced_at: Optional[Dict[str, int]] = None) -> None:
        self.name = name
        self.kind = kind
        self.attach_target = attach_target
        self.license = license
        self.insns = insns   # relocated; the map_relocs' ld_imm64s still want fds
        self.map_relocs = [] if map_relocs is None else map_relocs
        self.attach_btf_id = attach_btf_id
        self.func_info = func_info   # struct bpf_func_info records
        self.line_info = line_info   # struct bpf_line_info records (string offsets: the object BTF's)
        self.poisoned = [] if poisoned is None else poisoned   # CO-RE fixups that failed
        self.replaced_at = {} if replaced_at is None else replaced_at

    @property
    def func_info_count(self) -> int:
        return len(self.func_info) // FUNC_INFO_SIZE

    @property
    def line_info_count(self) -> int:
        return len(self.line_info) // LINE_INFO_SIZE

    def with_body(self, function: str, body: bytes) -> "PreparedProgram":
        """This program with `function`'s body (one that replace= swapped at link time) made
        `body`; the same program when it never reaches the function."""
        at = self.replaced_at.get(function)
        if at is None:
            return self
        if len(body) % I.INSN_SIZE or not body:
            raise ObjectFileError(f"replacement for {function!r} is not a whole number of instructions")
        if at != max(self.replaced_at.values()):
            raise ObjectFileError(f"program {self.name!r}: {function!r} is not its last function")
        if any(r.insn_index >= at for r in self.map_relocs) or any(i >= at for i, _ in self.poisoned):
            raise ObjectFileError(f"program {self.name!r}: {function!r} has relocations")
        return self.replace(insns=bytes(self.insns[:at * I.INSN_SIZE]) + bytes(body))

    def spliced(self) -> "PreparedProgram":
        """This program as it is best loaded: its last function, when it is a replaced body that
        can be (inline.py), copied into the places that call it. Not for to_doc: with_body needs
        the function in place."""
        if not self.replaced_at:
            return self
        from netbee.loader.inline import moved_indices, splice_last_function

        name, at = max(self.replaced_at.items(), key=lambda kv: kv[1])
        try:
            s = splice_last_function(self.insns, at, self.func_info, self.line_info)
        except ValueError:
            return self   # not a leaf body, or referred to other than by calls: it stays a function
        return self.replace(
            insns=s.insns, func_info=s.func_info, line_info=s.line_info,
            map_relocs=[MapReloc(s.new_index(r.insn_index), r.map_name, r.src, r.offset) for r in self.map_relocs],
            poisoned=moved_indices(self.poisoned, s.new_index),
            replaced_at={n: v for n, v in self.replaced_at.items() if n != name})

    def to_doc(self) -> Dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "attach_target": self.attach_target,
                "license": self.license, "insns": _b64(self.insns),
                "map_relocs": [[r.insn_index, r.map_name, r.src, r.offset] for r in self.map_relocs],
                "attach_btf_id": self.attach_btf_id, "func_info": _b64(self.func_info),
                "line_info": _b64(self.line_info), "poisoned": [list(p) for p in self.poisoned],
                "replaced_at": dict(self.replaced_at)}

    @classmethod
    def from_doc(cls, d: Dict[str, Any]) -> "PreparedProgram":
        p = cls(str(d["name"]), str(d["kind"]), str(d["attach_target"]), str(d["license"]),
                _unb64(d["insns"]), [MapReloc(int(i), str(m), int(s), int(o)) for i, m, s, o in d["map_relocs"]],
                int(d["attach_btf_id"]), _unb64(d["func_info"]), _unb64(d["line_info"]),
                [(int(i), str(why)) for i, why in d["poisoned"]],
                {str(k): int(v) for k, v in d["replaced_at"].items()})
        n = len(p.insns) // I.INSN_SIZE
        if (not n or len(p.insns) % I.INSN_SIZE or len(p.func_info) % FUNC_INFO_SIZE
                or len(p.line_info) % LINE_INFO_SIZE
                or any(not 0 <= r.insn_index < n - 1 for r in p.map_relocs)
                or any(not 0 <= v < n for v in p.replaced_at.values())):
            raise ValueError(f"prepared program {p.name!r} is inconsistent")
        return p


class PreparedObject(Record):
    __slots__ = ("license", "btf_raw", "maps", "globals", "programs", "warnings")

    def __init__(self, license: str,
                 btf_raw: Optional[bytes], maps: Dict[str, MapSpec], globals: Globals,
                 programs: Dict[str, PreparedProgram], warnings: Optional[List[str]] = None) -> None:
        self.license = license
        self.btf_raw = btf_raw   # the object BTF as loaded (sanitized for this kernel), or None
        self.maps = maps
        self.globals = globals
        self.programs = programs
        self.warnings = [] if warnings is None else warnings

    def set_global(self, name: str, value: bytes) -> None:
        write_global(self.maps, self.globals, name, value)

    def get_global(self, name: str) -> bytes:
        return read_global(self.maps, self.globals, name)

    def with_body(self, function: str, body: bytes) -> "PreparedObject":
        """Every program with `function`'s body made `body` (see PreparedProgram.with_body)."""
        return PreparedObject(self.license, self.btf_raw, self.maps, self.globals,
                              {n: p.with_body(function, body) for n, p in self.programs.items()},
                              list(self.warnings))

    def to_doc(self) -> Dict[str, Any]:
        return {"license": self.license, "btf": None if self.btf_raw is None else _b64(self.btf_raw),
                "maps": {n: dict(m.fields(), data=None if m.data is None else _b64(m.data))
                         for n, m in self.maps.items()},
                "globals": {n: list(g) for n, g in self.globals.items()},
                "programs": [p.to_doc() for p in self.programs.values()],
                "warnings": list(self.warnings)}

    @classmethod
    def from_doc(cls, d: Dict[str, Any]) -> "PreparedObject":
        """ValueError/TypeError/KeyError on a document that is not one of to_doc's."""
        maps = {}
        for name, m in d["maps"].items():
            m = dict(m)
            data = m.pop("data")
            maps[str(name)] = MapSpec(**m, data=None if data is None else _unb64(data))
        globals_ = {str(n): (str(m), int(o), int(s)) for n, (m, o, s) in d["globals"].items()}
        for n, (m, o, s) in globals_.items():
            if m not in maps or o < 0 or s <= 0 or o + s > maps[m].value_size:
                raise ValueError(f"global {n!r} lies outside its map")
        programs = {}
        for pd in d["programs"]:
            p = PreparedProgram.from_doc(pd)
            if any(r.map_name not in maps for r in p.map_relocs):
                raise ValueError(f"prepared program {p.name!r} uses an unknown map")
            programs[p.name] = p
        btf = d["btf"]
        return cls(str(d["license"]), None if btf is None else _unb64(btf), maps, globals_, programs,
                   [str(w) for w in d["warnings"]])


# (base64 is imported where used: only the caches' documents need it, not a start without them)
def _b64(data: bytes) -> str:
    import base64
    return base64.b64encode(bytes(data)).decode("ascii")


def _unb64(text: str) -> bytes:
    import base64
    return base64.b64decode(text.encode("ascii"), validate=True)
