"""ELF BPF object -> ObjectSpec: programs (linked with their subprograms), maps, global data.

Pure: reads bytes, returns editable specs; nothing here touches the kernel. Every
malformed input ends as ObjectFileError (or BTFError for a bad .BTF), converted
at one boundary (_malformed). An object can be read first and linked later
(UnlinkedObject), when which programs are wanted is not known yet.
"""
from __future__ import annotations

import io
import struct
from bisect import bisect_left
from contextlib import contextmanager
from typing import Dict, Iterable, Iterator, List, Mapping, Optional, Set, Tuple

from netbee.loader import insn as I
from netbee.loader.btf import Btf, BtfKind, Datasec, VarSecInfo
from netbee.loader.btf_ext import BtfExt, CoreRelo, FuncInfo, LineInfos
from netbee.loader.errors import BTFError, NetBeeError, ObjectFileError
from netbee.loader.kfunc import KfuncCall
from netbee.loader.map_spec import Globals, MapReloc, MapSpec, read_global, write_global  # noqa: F401 (re-exported)
from netbee.loader.record import Record

EM_BPF = 247
SHF_EXECINSTR = 0x4
SHF_COMPRESSED = 0x800
R_BPF_64_64 = 1        # ld_imm64
R_BPF_64_32 = 10       # call

MAP_TYPE_ARRAY = 2
# Global data becomes one array map value; the kernel refuses values this big anyway,
# and a corrupt .bss size must not make us allocate gigabytes.
_MAX_DATA_SECTION = 1 << 26
BPF_F_RDONLY_PROG = 0x80

# section prefix -> program kind; longest prefixes first (kprobe.multi before kprobe)
_SECTION_KINDS: List[Tuple[str, str]] = [
    ("kprobe.multi", "kprobe.multi"),
    ("kretprobe.multi", "kretprobe.multi"),
    ("kprobe", "kprobe"),
    ("kretprobe", "kretprobe"),
    ("fentry", "fentry"),
    ("fexit", "fexit"),
    ("tp_btf", "tp_btf"),
    ("raw_tracepoint", "raw_tp"),
    ("raw_tp", "raw_tp"),
    ("tracepoint", "tracepoint"),
    ("tp", "tracepoint"),
    ("netfilter", "netfilter"),
    ("socket", "socket"),
]

# Symbol and relocation tables are read in bulk with struct (pyelftools parses one record at a
# time through construct: 50 ms of the tracer's start for ~1,400 records, ~2 ms this way).
_SYM = struct.Struct("<IBBHQQ")     # Elf64_Sym
_REL = struct.Struct("<QQ")         # Elf64_Rel
_SHN_LORESERVE = 0xFF00             # section indexes from here on are special (ABS, COMMON...)
_SYM_TYPES = {0: "STT_NOTYPE", 1: "STT_OBJECT", 2: "STT_FUNC", 3: "STT_SECTION", 4: "STT_FILE",
              5: "STT_COMMON", 6: "STT_TLS"}
_SYM_BINDS = {0: "STB_LOCAL", 1: "STB_GLOBAL", 2: "STB_WEAK"}

# The members a BTF-defined map may have in SEC(".maps"); others are refused.
_MAP_INT_FIELDS = ("type", "max_entries", "map_flags", "key_size", "value_size", "numa_node",
                   "pinning", "map_extra")


class ProgramSpec(Record):
    __slots__ = ("name", "section", "kind", "attach_target", "insns", "map_relocs", "func_info", "line_info",
                 "core_relos", "license", "subprograms", "replaced_at", "kfunc_calls")

    def __init__(self, name: str,
                 section: str, kind: str, attach_target: str, insns: bytearray,
                 map_relocs: Optional[List[MapReloc]] = None, func_info: Optional[List[FuncInfo]] = None,
                 line_info: Optional[LineInfos] = None, core_relos: Optional[List[CoreRelo]] = None,
                 license: str = "", subprograms: Optional[List[str]] = None,
                 replaced_at: Optional[Dict[str, int]] = None, kfunc_calls: Optional[List[KfuncCall]] = None) -> None:
        self.name = name
        self.section = section
        self.kind = kind
        self.attach_target = attach_target
        self.insns = insns
        self.map_relocs = [] if map_relocs is None else map_relocs
        self.func_info = [] if func_info is None else func_info   # insn_off: bytes from program start
        self.line_info = LineInfos() if line_info is None else line_info   # raw records, decoded on read
        self.core_relos = [] if core_relos is None else core_relos
        self.license = license
        self.subprograms = [] if subprograms is None else subprograms   # appended, in order
        # function whose body replace= swapped -> its first instruction; such functions come last,
        # after every other subprogram, so another body can take the place of this one (prepared.py)
        self.replaced_at = {} if replaced_at is None else replaced_at
        self.kfunc_calls = [] if kfunc_calls is None else kfunc_calls   # resolved per kernel (kfunc.py)

    @property
    def insn_count(self) -> int:
        return len(self.insns) // I.INSN_SIZE


class _Func(Record):
    __slots__ = ("name", "sec", "start", "end", "is_program")

    def __init__(self, name: str, sec: int, start: int, end: int, is_program: bool) -> None:
        self.name = name
        self.sec = sec
        self.start = start   # instruction index within the section
        self.end = end
        self.is_program = is_program


class _Reloc(Record):
    __slots__ = ("type", "sym_name", "sym_type", "sym_shndx", "sym_value")

    def __init__(self, type: int, sym_name: str, sym_type: str, sym_shndx: int, sym_value: int) -> None:
        self.type = type
        self.sym_name = sym_name
        self.sym_type = sym_type
        self.sym_shndx = sym_shndx
        self.sym_value = sym_value


def section_kind(section: str) -> Optional[Tuple[str, str]]:
    """(kind, attach_target) for a program section name, or None."""
    head, _, target = section.partition("/")
    for prefix, kind in _SECTION_KINDS:
        if head == prefix:
            return kind, target
    return None


class ObjectSpec:
    """A parsed BPF object. Edit (set_global, programs' insns) before loading."""

    def __init__(self) -> None:
        self.programs: Dict[str, ProgramSpec] = {}
        self.maps: Dict[str, MapSpec] = {}
        self.license = ""
        self.btf: Optional[Btf] = None
        self.btf_ext: Optional[BtfExt] = None
        self.globals: Globals = {}   # name -> (map name, offset, size)
        self.kern_version = 0
        self.replaced: Set[str] = set()   # functions whose body from_bytes(replace=...) swapped

    @classmethod
    def from_path(cls, path: str, programs: Optional[Iterable[str]] = None,
                  replace: Optional[Mapping[str, bytes]] = None) -> "ObjectSpec":
        return UnlinkedObject.from_path(path).link(programs, replace)

    @classmethod
    def from_bytes(cls, data: bytes, what: str = "BPF object",
                   programs: Optional[Iterable[str]] = None,
                   replace: Optional[Mapping[str, bytes]] = None) -> "ObjectSpec":
        """programs: link only these (a subset the caller will load; names the object lacks are
        simply absent from .programs). Linking is most of the parse: the tracer loads ~10 of
        the prebuilt object's 52 programs.

        replace: function name -> encoded instructions that stand for its body in every program
        that reaches it (code generated at load time). The function keeps its BTF func_info and
        one line_info record at its first instruction (the kernel wants one there); its own
        relocations, CO-RE relocations and other line records go, and what it called is linked
        only if something else calls it. The body must be self-contained: no BPF-to-BPF call,
        no function address, no map reference (nothing would relocate them). Names the object
        lacks are skipped: `.replaced` holds those that were found."""
        return UnlinkedObject(data, what).link(programs, replace)

    def set_global(self, name: str, value: bytes) -> None:
        """Write a global variable's initial value (e.g. a `const volatile` config) before load."""
        write_global(self.maps, self.globals, name, value)

    def get_global(self, name: str) -> bytes:
        return read_global(self.maps, self.globals, name)


class UnlinkedObject:
    """An object file read (sections, symbols, BTF, maps, functions, relocations) but not yet
    linked into programs: which programs a caller wants may be known only later (the tracer
    learns it from the kernel's BTF meanwhile). link() once."""

    def __init__(self, data: bytes, what: str = "BPF object") -> None:
        self.what = what
        self._parser: Optional[_Parser] = None
        with _malformed(what):
            self._parser = _Parser(bytes(data), what)
            try:
                self._parser.read()
            except BaseException:
                self._parser.release()
                raise

    @classmethod
    def from_path(cls, path: str) -> "UnlinkedObject":
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise ObjectFileError(f"cannot read BPF object {path}: {e.strerror or e}") from e
        return cls(data, what=str(path))

    @property
    def btf(self) -> Optional[Btf]:
        """The object's BTF, as the linked ObjectSpec will have it (linking does not change it)."""
        if self._parser is None:
            raise ValueError("UnlinkedObject.btf after link()")
        return self._parser.spec.btf

    def kernel_lookups(self) -> Tuple[Set[str], Set[str]]:
        """(names, prefixes) the kernel's BTF will be searched for when any of this object's
        programs is prepared for a kernel: CO-RE candidates (core.candidate_lookups) and the
        kernel functions it calls (kfunc.resolve)."""
        from netbee.loader.core import candidate_lookups

        parser = self._parser
        if parser is None:
            raise ValueError("UnlinkedObject.kernel_lookups() after link()")
        spec = parser.spec
        names: Set[str] = set(parser.ksym_funcs())
        prefixes: Set[str] = set()
        if spec.btf is not None and spec.btf_ext is not None:
            relos = [r for per_section in spec.btf_ext.core_relos.values() for r in per_section]
            core_names, prefixes = candidate_lookups(spec.btf, relos)
            names |= core_names
        return names, prefixes

    def link(self, programs: Optional[Iterable[str]] = None,
             replace: Optional[Mapping[str, bytes]] = None) -> ObjectSpec:
        """The ObjectSpec with these programs linked (ObjectSpec.from_bytes says what the
        arguments mean)."""
        parser, self._parser = self._parser, None
        if parser is None:
            raise ValueError("UnlinkedObject.link() called twice")
        try:
            with _malformed(self.what):
                return parser.link(None if programs is None else set(programs), dict(replace or {}))
        finally:
            parser.release()


@contextmanager
def _malformed(what: str) -> Iterator[None]:
    """The one boundary where pyelftools/construct/struct failures become ObjectFileError."""
    try:
        yield
    except NetBeeError:
        raise
    except RecursionError as e:
        raise ObjectFileError(f"{what}: malformed object (nesting too deep)") from e
    except Exception as e:
        raise ObjectFileError(f"{what}: malformed ELF object: {type(e).__name__}: {e}") from e


class _Parser:
    def __init__(self, data: bytes, what: str) -> None:
        from elftools.elf.elffile import ELFFile

        self.data = data
        self.what = what
        self.only: Optional[Set[str]] = None
        self.replace: Dict[str, bytes] = {}
        if data[:4] != b"\x7fELF":
            raise ObjectFileError(f"{what}: not an ELF file")
        self.elf = ELFFile(io.BytesIO(data))
        self.spec = ObjectSpec()

    def release(self) -> None:
        """Let go of the file's bytes now: pyelftools' objects reference each other, so
        without this the data would wait for the cycle collector."""
        self.elf.stream.close()
        self.data, self.code = b"", {}

    def fail(self, msg: str) -> ObjectFileError:
        return ObjectFileError(f"{self.what}: {msg}")

    # ------------------------------------------------------------------ top level
    def read(self) -> None:
        """Everything that does not depend on which programs are wanted."""
        elf = self.elf
        if elf.elfclass != 64 or not elf.little_endian:
            raise self.fail("only 64-bit little-endian BPF objects are supported")
        if elf["e_machine"] not in ("EM_BPF", EM_BPF):
            raise self.fail(f"not a BPF object (machine {elf['e_machine']})")
        self._check_sections()
        self._read_symbols()
        spec = self.spec
        lic = self._section_by_name("license")
        if lic is not None:
            spec.license = lic.data().split(b"\0", 1)[0].decode("utf-8", "replace")
        ver = self._section_by_name("version")
        if ver is not None and len(ver.data()) >= 4:
            spec.kern_version = int.from_bytes(ver.data()[:4], "little")
        btf_sec = self._section_by_name(".BTF")
        if btf_sec is not None:
            try:
                spec.btf = Btf.parse(btf_sec.data())
                self._fixup_datasecs()
                ext = self._section_by_name(".BTF.ext")
                if ext is not None:
                    spec.btf_ext = BtfExt.parse(ext.data(), spec.btf)
            except BTFError as e:
                raise BTFError(f"{self.what}: {e}") from e
        self._read_maps()
        self._read_global_data()
        self._read_functions()
        self._read_relocations()

    def link(self, only: Optional[Set[str]], replace: Dict[str, bytes]) -> ObjectSpec:
        self.only, self.replace = only, replace
        self._check_replacements()
        self._link_programs()
        return self.spec

    def _check_sections(self) -> None:
        self.sections = []
        n = self.elf.num_sections()
        if n > 0xFFFF:
            raise self.fail(f"too many sections ({n})")
        size = len(self.data)
        for idx in range(n):
            sec = self.elf.get_section(idx)
            if sec["sh_type"] != "SHT_NOBITS" and sec["sh_size"] and (
                    sec["sh_offset"] > size or sec["sh_size"] > size - sec["sh_offset"]):
                raise self.fail(f"section {idx} ({sec.name!r}) lies beyond the end of the file")
            if sec["sh_flags"] & SHF_COMPRESSED:
                raise self.fail(f"section {sec.name!r} is compressed (unsupported)")
            self.sections.append(sec)
        self.by_name = {s.name: i for i, s in enumerate(self.sections)}

    def _section_by_name(self, name: str):
        idx = self.by_name.get(name)
        return None if idx is None else self.sections[idx]

    def _section_bytes(self, sec) -> bytes:
        """A section's contents (_check_sections made sure they lie within the file)."""
        off = sec["sh_offset"]
        return self.data[off:off + sec["sh_size"]]

    def _read_symbols(self) -> None:
        self.symbols: List[Tuple[str, str, str, int, int, int]] = []   # name, type, bind, shndx, value, size
        symtab = self._section_by_name(".symtab")
        if symtab is None or symtab["sh_type"] != "SHT_SYMTAB":
            raise self.fail("no symbol table (.symtab): was the object stripped?")
        if symtab["sh_entsize"] != _SYM.size:
            raise self.fail(f"bad symbol entry size {symtab['sh_entsize']}")
        # (pyelftools checked, making the section, that its string table exists and that the
        # size is a whole number of entries)
        names = self._section_bytes(self.sections[symtab["sh_link"]])
        table = self._section_bytes(symtab)
        append = self.symbols.append
        for name_off, info, _other, shndx, value, size in _SYM.iter_unpack(table):
            if name_off >= len(names) and name_off:
                raise self.fail(f"a symbol's name lies outside its string table (offset {name_off})")
            end = names.find(b"\0", name_off)
            name = names[name_off:end if end >= 0 else len(names)].decode("utf-8", "replace")
            if shndx >= _SHN_LORESERVE:
                shndx = -1
            append((name, _SYM_TYPES.get(info & 0xF, f"STT_{info & 0xF}"),
                    _SYM_BINDS.get(info >> 4, f"STB_{info >> 4}"), shndx, value, size))

    # ------------------------------------------------------------------ BTF fixups
    def _fixup_datasecs(self) -> None:
        """clang leaves DATASEC sizes and variable offsets at 0; the ELF knows them."""
        btf = self.spec.btf
        assert btf is not None
        offsets: Dict[Tuple[int, str], int] = {}
        for name, typ, _bind, shndx, value, _size in self.symbols:
            if typ == "STT_OBJECT" and shndx > 0:
                offsets[(shndx, name)] = value
        for tid in range(1, len(btf)):
            t = btf.type(tid)
            if t.kind != BtfKind.DATASEC:
                continue
            idx = self.by_name.get(t.name)
            if idx is None:
                continue   # .kconfig/.ksyms externs: nothing to fix here
            sec = self.sections[idx]
            new_vars = []
            for v in t.vars:
                var = btf.type(v.type)
                off = offsets.get((idx, var.name))
                if off is None:
                    raise self.fail(f"BTF variable {var.name!r} of {t.name!r} has no symbol")
                new_vars.append(VarSecInfo(v.type, off, v.size))
            btf.replace(tid, Datasec(t.name, sec["sh_size"], new_vars))

    def _datasec_id(self, name: str) -> int:
        btf = self.spec.btf
        if btf is None:
            return 0
        ids = btf.find(name, BtfKind.DATASEC)
        return ids[0] if ids else 0

    # ------------------------------------------------------------------ maps
    def _read_maps(self) -> None:
        idx = self.by_name.get(".maps")
        if idx is None:
            if self.by_name.get("maps") is not None:
                raise self.fail("legacy SEC(\"maps\") map definitions are not supported; use SEC(\".maps\")")
            return
        btf = self.spec.btf
        if btf is None:
            raise self.fail("SEC(\".maps\") needs BTF (.BTF section missing)")
        sec_id = self._datasec_id(".maps")
        if not sec_id:
            raise self.fail("no DATASEC '.maps' in the object's BTF")
        self.map_at: Dict[int, str] = {}
        for v in btf.type(sec_id).vars:
            var = btf.type(v.type)
            if var.kind != BtfKind.VAR:
                raise self.fail(f".maps entry {v.type} is not a variable")
            m = self._map_from_btf(var.name, var.type)
            self.spec.maps[m.name] = m
            self.map_at[v.offset] = m.name

    def _map_from_btf(self, name: str, type_id: int) -> MapSpec:
        btf = self.spec.btf
        assert btf is not None
        st = btf.type(btf.resolve(type_id))
        if st.kind != BtfKind.STRUCT:
            raise self.fail(f"map {name!r}: definition is not a struct")
        ints: Dict[str, int] = {}
        key_id = value_id = 0
        for m in st.members:
            mt = btf.type(btf.resolve(m.type))
            if m.name in _MAP_INT_FIELDS:
                # __uint(name, val) is `int (*name)[val]`: the value is the array length
                arr = btf.type(btf.resolve(mt.type)) if mt.kind == BtfKind.PTR else None
                if arr is None or arr.kind != BtfKind.ARRAY:
                    raise self.fail(f"map {name!r}: field {m.name!r} is not __uint()")
                ints[m.name] = arr.nelems
            elif m.name in ("key", "value"):
                if mt.kind != BtfKind.PTR:
                    raise self.fail(f"map {name!r}: field {m.name!r} is not __type()")
                if m.name == "key":
                    key_id = mt.type
                else:
                    value_id = mt.type
            elif m.name == "values":
                raise self.fail(f"map {name!r}: map-in-map (values) is not supported")
            else:
                raise self.fail(f"map {name!r}: unknown field {m.name!r}")
        if "type" not in ints:
            raise self.fail(f"map {name!r}: no map type")
        key_size = btf.sizeof(key_id) if key_id else ints.get("key_size", 0)
        value_size = btf.sizeof(value_id) if value_id else ints.get("value_size", 0)
        for what, explicit, got in (("key", ints.get("key_size"), key_size),
                                    ("value", ints.get("value_size"), value_size)):
            if explicit is not None and explicit != got:
                raise self.fail(f"map {name!r}: {what}_size {explicit} disagrees with its type ({got})")
        return MapSpec(name, ints["type"], key_size, value_size, ints.get("max_entries", 0),
                       ints.get("map_flags", 0), None, key_id, value_id, ".maps",
                       ints.get("pinning", 0), ints.get("numa_node", 0), ints.get("map_extra", 0))

    # ------------------------------------------------------------------ global data
    def _read_global_data(self) -> None:
        self.data_maps: Dict[int, str] = {}
        for idx, sec in enumerate(self.sections):
            name = sec.name
            if not _is_data_section(name) or not sec["sh_flags"] & 0x2:  # SHF_ALLOC
                continue
            size = sec["sh_size"]
            if size == 0:
                continue
            if size > _MAX_DATA_SECTION:
                raise self.fail(f"section {name!r} is implausibly large ({size} bytes)")
            if sec["sh_type"] == "SHT_NOBITS":
                data = bytes(size)
            else:
                data = sec.data()
            flags = BPF_F_RDONLY_PROG if name.startswith(".rodata") else 0
            self.spec.maps[name] = MapSpec(name, MAP_TYPE_ARRAY, 4, size, 1, flags, data, 0,
                                           self._datasec_id(name), name)
            self.data_maps[idx] = name
        for name, typ, _bind, shndx, value, size in self.symbols:
            if typ == "STT_OBJECT" and shndx in self.data_maps and size:
                m = self.spec.maps[self.data_maps[shndx]]
                if value + size > m.value_size:
                    raise self.fail(f"global {name!r} lies outside its section")
                self.spec.globals[name] = (m.name, value, size)

    # ------------------------------------------------------------------ code
    def _read_functions(self) -> None:
        self.code: Dict[int, bytes] = {}
        for idx, sec in enumerate(self.sections):
            if sec["sh_type"] == "SHT_PROGBITS" and sec["sh_flags"] & SHF_EXECINSTR and sec["sh_size"]:
                if sec["sh_size"] % I.INSN_SIZE:
                    raise self.fail(f"section {sec.name!r} is not a whole number of instructions")
                self.code[idx] = sec.data()
        per_sec: Dict[int, List[Tuple[int, int, str, str]]] = {}
        for name, typ, bind, shndx, value, size in self.symbols:
            if typ != "STT_FUNC" or shndx not in self.code:
                continue
            if value % I.INSN_SIZE or size % I.INSN_SIZE:
                raise self.fail(f"function {name!r} is not instruction-aligned")
            per_sec.setdefault(shndx, []).append((value // 8, size // 8, name, bind))
        self.funcs: Dict[int, List[_Func]] = {}
        self._special: Dict[int, List[int]] = {}
        self._ksym_funcs: Optional[Set[str]] = None
        self._ext_keys: Dict[Tuple[int, str], Tuple[List[int], bool]] = {}
        for idx, entries in per_sec.items():
            entries.sort()
            n = len(self.code[idx]) // 8
            sec_name = self.sections[idx].name
            out = []
            for k, (start, size, name, bind) in enumerate(entries):
                end = start + size if size else (entries[k + 1][0] if k + 1 < len(entries) else n)
                if end > n or start >= n:
                    raise self.fail(f"function {name!r} runs past section {sec_name!r}")
                is_prog = sec_name != ".text" and bind in ("STB_GLOBAL", "STB_WEAK")
                out.append(_Func(name, idx, start, end, is_prog))
            self.funcs[idx] = out

    def _check_replacements(self) -> None:
        if not self.replace:
            return
        names = {f.name for funcs in self.funcs.values() for f in funcs}
        # like `programs`, a name the object lacks is skipped (an older object keeps its own
        # body); .replaced tells the caller which ones took effect
        self.replace = {n: b for n, b in self.replace.items() if n in names}
        self.spec.replaced = set(self.replace)
        for name, body in self.replace.items():
            if not body or len(body) % I.INSN_SIZE:
                raise self.fail(f"replacement for {name!r} is not a whole number of instructions")
            for k, ins in I.iter_insns(body):
                if ins.is_pseudo_call or ins.opcode == I.OP_LD_IMM64 and ins.src:
                    raise self.fail(f"replacement for {name!r}: instruction {k} needs a relocation "
                                    "(calls and map or function references are not supported)")

    def ext_records(self, table: Dict[str, list], sec: str, lo: int, hi: int) -> list:
        """The .BTF.ext records of `sec` with lo <= insn_off < hi (bisected; cached per table)."""
        records = table.get(sec)
        if not records:
            return []
        key = (id(table), sec)
        entry = self._ext_keys.get(key)
        if entry is None:
            keys = [r.insn_off for r in records]
            entry = self._ext_keys[key] = (keys, keys == sorted(keys))
        keys, is_sorted = entry
        if not is_sorted:
            return [r for r in records if lo <= r.insn_off < hi]
        return records[bisect_left(keys, lo):bisect_left(keys, hi)]

    def special_slots(self, sec: int) -> List[int]:
        """Slots of a code section holding a call or an ld_imm64 (cached per section)."""
        cached = self._special.get(sec)
        if cached is None:
            ops = self.code[sec][0::8]
            cached = [i for i, op in enumerate(ops) if op == I.OP_CALL or op == I.OP_LD_IMM64]
            # the second half of an ld_imm64 is data, never an instruction of its own
            out, skip = [], -1
            for i in cached:
                if i == skip:
                    continue
                out.append(i)
                if ops[i] == I.OP_LD_IMM64:
                    skip = i + 1
            cached = self._special[sec] = out
        return cached

    def ksym_funcs(self) -> Set[str]:
        """Names of the extern functions the object's BTF lists in its .ksyms DATASEC."""
        if self._ksym_funcs is None:
            btf, names = self.spec.btf, set()
            if btf is not None:
                for sec in btf.find(".ksyms", BtfKind.DATASEC):
                    for v in btf.type(sec).vars:
                        t = btf.type(v.type)
                        if t.kind == BtfKind.FUNC and t.linkage == 2:
                            names.add(t.name)
            self._ksym_funcs = names
        return self._ksym_funcs

    def _func_at(self, sec: int, insn: int) -> Optional[_Func]:
        for f in self.funcs.get(sec, ()):
            if f.start <= insn < f.end:
                return f
        return None

    def _read_relocations(self) -> None:
        self.relocs: Dict[int, Dict[int, _Reloc]] = {}
        for sec in self.sections:
            if sec["sh_type"] != "SHT_REL":
                continue
            target = sec["sh_info"]
            if target not in self.code:
                continue   # relocations of .BTF, .BTF.ext, debug info: not ours to apply
            if sec["sh_entsize"] != 16:
                raise self.fail(f"bad relocation entry size in {sec.name!r}")
            table: Dict[int, _Reloc] = {}
            data = self._section_bytes(sec)
            if len(data) % _REL.size:
                raise self.fail(f"the size of {sec.name!r} is not a whole number of relocations")
            for off, info in _REL.iter_unpack(data):
                sym_idx = info >> 32
                if sym_idx >= len(self.symbols):
                    raise self.fail(f"relocation in {sec.name!r} names symbol {sym_idx}, which does not exist")
                name, typ, _bind, shndx, value, _size = self.symbols[sym_idx]
                if off % 8 or off >= len(self.code[target]):
                    raise self.fail(f"relocation at offset {off} of {self.sections[target].name!r} "
                                    f"against {name!r} is not on an instruction")
                table[off // 8] = _Reloc(info & 0xFFFFFFFF, name, typ, shndx, value)
            self.relocs[target] = table

    # ------------------------------------------------------------------ linking
    def _link_programs(self) -> None:
        ext = self.spec.btf_ext
        seen: Set[str] = set()
        for idx, funcs in self.funcs.items():
            sec_name = self.sections[idx].name
            progs = [f for f in funcs if f.is_program]
            if not progs:
                continue
            kind = section_kind(sec_name)
            if kind is None:
                raise self.fail(f"section {sec_name!r}: unknown program type")
            for f in progs:
                if f.name in seen:
                    raise self.fail(f"two programs are named {f.name!r}")
                seen.add(f.name)
                if self.only is None or f.name in self.only:
                    self.spec.programs[f.name] = _Linker(self, f, ext).link(sec_name, kind[0], kind[1])


class _Linker:
    """Builds one program: its own code, then every subprogram it reaches, appended
    depth-first in the order libbpf uses, with calls and relocations rebased. Functions whose
    body is replaced come after all of those (their callers are fixed up when they are placed)."""

    def __init__(self, parser: _Parser, main: _Func, ext: Optional[BtfExt]) -> None:
        self.p = parser
        self.ext = ext
        self.insns = bytearray()
        self.placed: Dict[Tuple[int, int], int] = {}   # (section, function start) -> program index
        self.spec = ProgramSpec(main.name, "", "", "", self.insns, license=parser.spec.license,
                                line_info=LineInfos(btf=parser.spec.btf))
        self.main = main
        # replaced functions still to place: (section, start) -> (function, slots that call it)
        self.deferred: Dict[Tuple[int, int], Tuple[_Func, List[int]]] = {}

    def link(self, section: str, kind: str, target: str) -> ProgramSpec:
        s = self.spec
        s.section, s.kind, s.attach_target = section, kind, target
        self._append(self.main)
        for key, (callee, slots) in self.deferred.items():
            self._append(callee)
            for pos in slots:
                I.set_imm(self.insns, pos, self.placed[key] - pos - 1)
        s.map_relocs.sort(key=lambda r: r.insn_index)
        return s

    def _append(self, f: _Func) -> None:
        base = len(self.insns) // 8
        self.placed[(f.sec, f.start)] = base
        if f is not self.main:
            self.spec.subprograms.append(f.name)
        body = self.p.replace.get(f.name)
        if body is not None:
            self.spec.replaced_at[f.name] = base
            self.insns += body
            self._carry_ext_replaced(f, base)
            return
        self.insns += self.p.code[f.sec][f.start * 8:f.end * 8]
        self._carry_ext(f, base)
        relocs = self.p.relocs.get(f.sec, {})
        # only relocated slots and calls/ld_imm64 can need work; visit them in order
        todo = sorted({i for i in relocs if f.start <= i < f.end}
                      | {i for i in self.p.special_slots(f.sec) if f.start <= i < f.end})
        for i in todo:
            self._fix(f, base, i, relocs.get(i))

    def _carry_ext(self, f: _Func, base: int) -> None:
        if self.ext is None:
            return
        sec = self.p.sections[f.sec].name
        lo, hi = f.start * 8, f.end * 8
        shift = (base - f.start) * 8
        s, ext = self.spec, self.p.ext_records
        lines = self.ext.line_info.get(sec)
        if lines:
            # raw words sliced and shifted in bulk: no record is decoded (see LineInfos)
            s.line_info.extend(lines.between(lo, hi, shift))
        if not shift:
            # a program at the start of its section (the usual case) keeps its records: they
            # are read-only data
            s.func_info.extend(ext(self.ext.func_info, sec, lo, hi))
            s.core_relos.extend(ext(self.ext.core_relos, sec, lo, hi))
            return
        s.func_info.extend(FuncInfo(r.insn_off + shift, r.type_id)
                           for r in ext(self.ext.func_info, sec, lo, hi))
        s.core_relos.extend(CoreRelo(r.insn_off + shift, r.type_id, r.access_str, r.kind)
                            for r in ext(self.ext.core_relos, sec, lo, hi))

    def _carry_ext_replaced(self, f: _Func, base: int) -> None:
        """A replaced body keeps the function's BTF identity (its func_info record) and the
        line record of its first instruction, moved to where the body now starts."""
        if self.ext is None:
            return
        sec = self.p.sections[f.sec].name
        lo = f.start * 8
        self.spec.func_info.extend(FuncInfo(base * 8, r.type_id)
                                   for r in self.p.ext_records(self.ext.func_info, sec, lo, lo + 1))
        lines = self.ext.line_info.get(sec)
        if lines:
            first = lines.between(lo, lo + 1, (base - f.start) * 8)[0:1]
            if not len(first):
                # no record at the start: the next one of the function stands there instead
                rest = lines.between(lo, f.end * 8)[0:1]
                if len(rest):
                    first = [rest[0].replace(insn_off=base * 8)]
            self.spec.line_info.extend(first)

    def _fix(self, f: _Func, base: int, i: int, rel: Optional[_Reloc]) -> None:
        pos = base + (i - f.start)
        ins = I.decode(self.insns, pos)
        if rel is None:
            if ins.is_pseudo_call:
                # a call clang resolved itself: to a function of the same section
                self._call(f, pos, f.sec, i + ins.imm + 1, "call")
            elif ins.is_pseudo_func or ins.src in (I.BPF_PSEUDO_MAP_FD, I.BPF_PSEUDO_MAP_VALUE) and ins.is_ld_imm64:
                raise self.p.fail(f"{self._where(f, i)}: ld_imm64 with src {ins.src} but no relocation")
            return
        where = f"{self._where(f, i)} (relocation against {rel.sym_name or 'section'!r})"
        if ins.is_call and rel.type == R_BPF_64_32:
            if rel.sym_shndx == 0:
                self._kfunc_call(pos, rel, where)
                return
            if ins.src != I.BPF_PSEUDO_CALL:
                raise self.p.fail(f"{where}: relocated call is not a BPF-to-BPF call")
            self._check_code_sym(rel, where)
            self._call(f, pos, rel.sym_shndx, rel.sym_value // 8 + ins.imm + 1, where)
            return
        if not ins.is_ld_imm64 or rel.type != R_BPF_64_64:
            raise self.p.fail(f"{where}: unsupported relocation type {rel.type} on opcode 0x{ins.opcode:02x}")
        if i + 1 >= f.end:
            raise self.p.fail(f"{where}: ld_imm64 cut off at the end of the function")
        shndx = rel.sym_shndx
        if shndx <= 0:
            raise self.p.fail(f"{where}: extern symbols (.kconfig/.ksyms) are not supported")
        if shndx in self.p.code:
            self._check_code_sym(rel, where)
            if ins.imm % 8:
                raise self.p.fail(f"{where}: function address not instruction-aligned")
            I.set_src(self.insns, pos, I.BPF_PSEUDO_FUNC)
            self._call(f, pos, shndx, (rel.sym_value + ins.imm) // 8, where)
            return
        if shndx == self.p.by_name.get(".maps"):
            name = self.p.map_at.get(rel.sym_value) if rel.sym_type != "STT_SECTION" else None
            if name is None:
                raise self.p.fail(f"{where}: no map at offset {rel.sym_value} of .maps")
            I.set_src(self.insns, pos, I.BPF_PSEUDO_MAP_FD)
            I.set_imm(self.insns, pos, 0)
            self.spec.map_relocs.append(MapReloc(pos, name, I.BPF_PSEUDO_MAP_FD, 0))
            return
        data = self.p.data_maps.get(shndx)
        if data is not None:
            offset = ins.imm + rel.sym_value
            if not 0 <= offset <= self.p.spec.maps[data].value_size:
                raise self.p.fail(f"{where}: offset {offset} outside {data!r}")
            I.set_src(self.insns, pos, I.BPF_PSEUDO_MAP_VALUE)
            I.set_imm(self.insns, pos, 0)
            I.set_imm(self.insns, pos + 1, offset)
            self.spec.map_relocs.append(MapReloc(pos, data, I.BPF_PSEUDO_MAP_VALUE, offset))
            return
        raise self.p.fail(f"{where}: relocation into section {self.p.sections[shndx].name!r} is not supported")

    def _kfunc_call(self, pos: int, rel: _Reloc, where: str) -> None:
        """A call to an undefined symbol: a kernel function declared `extern ... __ksym`, which
        the object's BTF lists as an extern FUNC. Its target is the kernel's (kfunc.resolve)."""
        if rel.sym_name not in self.p.ksym_funcs():
            raise self.p.fail(f"{where}: call to a function defined nowhere in the object and not "
                              "declared a kernel function (extern ... __ksym)")
        I.set_src(self.insns, pos, I.BPF_PSEUDO_KFUNC_CALL)
        I.set_imm(self.insns, pos, 0)
        self.spec.kfunc_calls.append(KfuncCall(pos, rel.sym_name))

    def _check_code_sym(self, rel: _Reloc, where: str) -> None:
        if rel.sym_shndx not in self.p.code or rel.sym_type not in ("STT_FUNC", "STT_SECTION", "STT_NOTYPE"):
            raise self.p.fail(f"{where}: target is not code")

    def _call(self, f: _Func, pos: int, sec: int, target: int, where: str) -> None:
        callee = self.p._func_at(sec, target)
        if callee is None:
            raise self.p.fail(f"{where}: call target {target} in section "
                              f"{self.p.sections[sec].name!r} is not inside a function")
        key = (callee.sec, callee.start)
        if target != callee.start and callee.name in self.p.replace:
            raise self.p.fail(f"{where}: jumps into the middle of {callee.name!r}, whose body is replaced")
        if key not in self.placed:
            if callee.name in self.p.replace:
                self.deferred.setdefault(key, (callee, []))[1].append(pos)
                return
            self._append(callee)
        dest = self.placed[key] + (target - callee.start)
        I.set_imm(self.insns, pos, dest - pos - 1)

    def _where(self, f: _Func, i: int) -> str:
        return f"program {self.main.name!r}, function {f.name!r} in {self.p.sections[f.sec].name!r} insn {i}"


def _is_data_section(name: str) -> bool:
    for base in (".rodata", ".data", ".bss"):
        if name == base or name.startswith(base + "."):
            return True
    return False
