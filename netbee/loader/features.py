"""What the running kernel can do, found by trying: tiny programs, maps, BTF blobs and attachments.

Every probe runs at most once per process (cached) and releases what it created. probe_table()
is what `netbee --probe` prints.
"""
from __future__ import annotations

import functools
import os
import struct
from typing import Callable, Dict, FrozenSet, List, Optional, Tuple

from netbee.loader import syscall as sc
from netbee.loader.errors import NetBeeError, NotSupportedError, SyscallError, VerifierError

Probe = Tuple[bool, str]

KPROBE_PMU = "/sys/bus/event_source/devices/kprobe"
VMLINUX_BTF = "/sys/kernel/btf/vmlinux"
# common, never-inlined functions to try a fentry/kprobe.multi attachment on
ATTACH_CANDIDATES = ("ktime_get_coarse_real_ts64", "do_sys_openat2", "ip_rcv", "vfs_read")

_RET0 = struct.pack("<BBhi", 0xB7, 0, 0, 0) + struct.pack("<BBhi", 0x95, 0, 0, 0)

HELPERS: Dict[str, int] = {
    "map_lookup_elem": 1, "ktime_get_ns": 5, "get_current_pid_tgid": 14, "get_current_comm": 16,
    "get_stackid": 27, "get_stack": 67, "probe_read_kernel": 113, "probe_read_kernel_str": 115,
    "ktime_get_boot_ns": 125, "ringbuf_output": 130, "ringbuf_reserve": 131, "ringbuf_submit": 132,
    "ktime_get_coarse_ns": 160, "get_func_ip": 173, "skb_load_bytes": 26,
}


def _errtext(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def _cached(fn: Callable[..., Probe]) -> Callable[..., Probe]:
    return functools.lru_cache(maxsize=None)(fn)


# --- program types -----------------------------------------------------------------------------------
def _load(kind: str, insns: bytes = _RET0, **kw: object) -> "object":
    from netbee.loader.programs import Program
    return Program(f"nbprobe_{kind.replace('.', '_')}", kind, insns, **kw)


@_cached
def prog_type(kind: str) -> Probe:
    """A two-instruction program of this kind loads (kinds needing a BTF target: see fentry/tp_btf)."""
    try:
        _load(kind).close()
        return True, "loads"
    except NetBeeError as e:
        return False, _errtext(e)


def _kernel_btf() -> "object":
    # Not cached here: Btf.load_kernel shares one parse while any caller holds it, and a
    # cached copy would keep ~9 MB alive for the whole trace after the tracer let go of its own.
    from netbee.loader.btf import Btf
    return Btf.load_kernel()


# FUNC ids of the running kernel's BTF by name (None: not there), as _first_func found them or as
# a caller remembered them for this kernel: finding one costs a parse of the whole kernel BTF
# (~100 ms), which a start that has the prepared code at hand otherwise never needs.
_btf_func_ids: Dict[str, Optional[int]] = {}


def known_btf_func_ids() -> Dict[str, Optional[int]]:
    """What _first_func has learned (or was told) about the kernel BTF's FUNC ids."""
    return dict(_btf_func_ids)


def remember_btf_func_ids(ids: Dict[str, Optional[int]]) -> None:
    """Take FUNC ids of THIS kernel's BTF (from a cache keyed by its content); malformed entries
    are ignored, so a bad cache costs a parse, never a wrong answer."""
    for name, tid in ids.items():
        if isinstance(name, str) and (tid is None or (type(tid) is int and tid > 0)):
            _btf_func_ids.setdefault(name, tid)


def _first_func(candidates: Tuple[str, ...]) -> Optional[Tuple[str, int]]:
    kbtf = None
    for name in candidates:
        if name not in _btf_func_ids:
            if kbtf is None:
                kbtf = _kernel_btf()
            from netbee.loader.btf import BtfKind
            ids = kbtf.find(name, BtfKind.FUNC)
            _btf_func_ids[name] = ids[0] if ids else None
        tid = _btf_func_ids[name]
        if tid is not None:
            return name, tid
    return None


@_cached
def tracing(kind: str) -> Probe:
    """fentry/fexit: load AND attach to a common function (this host loads some and refuses attach)."""
    from netbee.loader.links import attach
    try:
        target = _first_func(ATTACH_CANDIDATES)
        if target is None:
            return False, "none of the probe functions is in the kernel BTF"
        prog = _load(kind, attach_target=target[0], attach_btf_id=target[1])
    except NetBeeError as e:
        return False, "load refused: " + _errtext(e)
    try:
        attach(prog).close()
        return True, f"attached to {target[0]}"
    except NetBeeError as e:
        return False, "attach refused: " + _errtext(e)
    finally:
        prog.close()  # type: ignore[attr-defined]


@_cached
def tp_btf() -> Probe:
    from netbee.loader.links import attach
    from netbee.loader.programs import resolve_attach_btf_id
    try:
        btf_id = resolve_attach_btf_id(_kernel_btf(), "tp_btf", "sched_switch")
        prog = _load("tp_btf", attach_target="sched_switch", attach_btf_id=btf_id)
    except NetBeeError as e:
        return False, _errtext(e)
    try:
        attach(prog).close()
        return True, "attached to sched_switch"
    except NetBeeError as e:
        return False, "attach refused: " + _errtext(e)
    finally:
        prog.close()  # type: ignore[attr-defined]


def _member_offset(kbtf: "object", struct_name: str, member: str) -> Optional[int]:
    """Byte offset of a member of a kernel struct, looking inside anonymous structs and unions."""
    from netbee.loader.btf import BtfKind

    ids = kbtf.find(struct_name, BtfKind.STRUCT)  # type: ignore[attr-defined]
    return _member_offset_in(kbtf, ids[0], 0, member) if ids else None


def _member_offset_in(kbtf: "object", tid: int, base: int, member: str) -> Optional[int]:
    # (a function of its own, not a closure calling itself: that is a reference cycle, which
    # kept the kernel BTF it holds alive until the cycle collector ran)
    t = kbtf.type(tid)  # type: ignore[attr-defined]
    for m in getattr(t, "members", ()):
        if m.name == member:
            return base + m.bit_offset // 8
        if not m.name:
            inner = kbtf.resolve(m.type)  # type: ignore[attr-defined]
            found = _member_offset_in(kbtf, inner, base + m.bit_offset // 8, member)
            if found is not None:
                return found
    return None


@_cached
def direct_packet_reads() -> Probe:
    """A tp_btf program may read packet bytes with plain loads through skb->head (the kernel types a
    pointer-to-bytes field of a BTF pointer as read-only untrusted memory: 6.18 does, 6.12 not).
    The verifier answers at load; nothing is attached (tp_btf() attaches to sched_switch, and
    turning a tracepoint on patches the kernel's text: 0.3-20 ms on a first start). A kernel
    without tp_btf programs refuses this load too."""
    from netbee.loader.programs import resolve_attach_btf_id
    try:
        kbtf = _kernel_btf()
        head = _member_offset(kbtf, "sk_buff", "head")
        if head is None:
            return False, "struct sk_buff has no member head in the kernel BTF"
        btf_id = resolve_attach_btf_id(kbtf, "tp_btf", "netif_receive_skb")
    except NetBeeError as e:
        return False, _errtext(e)
    insns = (struct.pack("<BBhi", 0x79, 0x11, 0, 0)           # r1 = *(u64 *)(r1 + 0): the skb
             + struct.pack("<BBhi", 0x79, 0x11, head, 0)      # r1 = skb->head
             + struct.pack("<BBhi", 0x71, 0x10, 14, 0)        # r0 = *(u8 *)(r1 + 14)
             + _RET0)
    try:
        _load("tp_btf", insns, attach_target="netif_receive_skb", attach_btf_id=btf_id).close()
        return True, "plain loads through skb->head accepted"
    except NetBeeError as e:
        return False, "refused: " + _errtext(e)


@_cached
def kprobe_pmu() -> Probe:
    if os.path.isdir(KPROBE_PMU):
        return True, KPROBE_PMU
    return False, f"{KPROBE_PMU} missing"


@_cached
def tracefs_kprobe_events() -> Probe:
    from netbee.loader import tracefs
    try:
        path = tracefs.kprobe_events_path()
    except NotSupportedError as e:
        return False, e.detail
    return (True, path) if os.access(path, os.W_OK) else (False, f"{path} not writable")


@_cached
def kprobe() -> Probe:
    """Some way to attach kprobes: the PMU or tracefs kprobe_events."""
    pmu, tfs = kprobe_pmu(), tracefs_kprobe_events()
    if pmu[0] or tfs[0]:
        return True, "; ".join(d for ok, d in (pmu, tfs) if ok)
    return False, f"{pmu[1]}; {tfs[1]}"


@_cached
def kprobe_multi() -> Probe:
    from netbee.loader.links import attach_kprobe_multi
    ok, why = prog_type("kprobe")
    if not ok:
        return False, "kprobe programs unavailable: " + why
    target = _first_func(ATTACH_CANDIDATES)
    if target is None:
        return False, "no probe function found"
    try:
        prog = _load("kprobe.multi")
    except NetBeeError as e:
        return False, _errtext(e)
    try:
        attach_kprobe_multi(prog, [target[0]]).close()
        return True, f"attached to {target[0]}"
    except NetBeeError as e:
        return False, _errtext(e)
    finally:
        prog.close()  # type: ignore[attr-defined]


# --- maps and helpers --------------------------------------------------------------------------------
MAP_PROBES: Dict[str, Tuple[int, int, int, int]] = {  # type, key, value, entries
    "hash": (1, 4, 8, 1), "array": (2, 4, 8, 1), "percpu_array": (6, 4, 8, 1),
    "stack_trace": (7, 4, 8 * 8, 1), "lru_hash": (9, 4, 8, 1), "ringbuf": (27, 0, 0, 4096),
}


@_cached
def map_type(name: str) -> Probe:
    from netbee.loader.maps import Map
    mtype, k, v, n = MAP_PROBES[name]
    try:
        Map("nbprobe_" + name, mtype, k, v, n).close()
        return True, "created"
    except NetBeeError as e:
        return False, _errtext(e)


@_cached
def mmapable_array() -> Probe:
    """BPF_F_MMAPABLE arrays (5.5+): global .data/.bss readable from user space without syscalls."""
    from netbee.loader.maps import F_MMAPABLE, Map, MapType
    try:
        Map("nbprobe_mmap", MapType.ARRAY, 4, 8, 1, F_MMAPABLE).close()
        return True, "created"
    except NetBeeError as e:
        return False, _errtext(e)


def _mov(dst: int, imm: int) -> bytes:
    return struct.pack("<BBhi", 0xB7, dst, 0, imm)


@_cached
def helper(name: str, kind: str = "raw_tp") -> Probe:
    """The verifier knows this helper for this program kind. The arguments are nonsense on
    purpose: the helper lookup comes before argument checks, so any other complaint means yes."""
    ok, why = prog_type(kind)
    if not ok:
        return False, f"{kind} programs unavailable"
    insns = b"".join(_mov(r, 0) for r in range(1, 6)) + struct.pack("<BBhi", 0x85, 0, 0, HELPERS[name]) + _RET0
    try:
        _load(kind, insns, log_level=1).close()
        return True, "accepted"
    except VerifierError as e:
        refusals = ("invalid func", "unknown func", "cannot use helper")
        lines = [ln for ln in e.log.splitlines() if any(r in ln for r in refusals)]
        if lines:
            return False, lines[0].strip()
        return True, "known (arguments refused, as intended)"
    except NetBeeError as e:
        return False, _errtext(e)


# --- BTF ---------------------------------------------------------------------------------------------
@_cached
def vmlinux_btf() -> Probe:
    if os.path.exists(VMLINUX_BTF):
        return True, VMLINUX_BTF
    return False, f"{VMLINUX_BTF} missing (kernel built without CONFIG_DEBUG_INFO_BTF)"


def _btf_blob(feature: str) -> bytes:
    from netbee.loader import btf as B
    b = B.Btf()
    i = b.add_type(B.Int("int", 4, B.INT_SIGNED, 0, 32))
    if feature in ("func", "func_global"):
        proto = b.add_type(B.FuncProto(i, []))
        b.add_type(B.Func("f", proto, 1 if feature == "func_global" else 0))
    elif feature in ("datasec", "qmark_datasec"):
        v = b.add_type(B.Var("v", i, 1))
        b.add_type(B.Datasec("?.data" if feature == "qmark_datasec" else ".data", 4, [B.VarSecInfo(v, 0, 4)]))
    elif feature == "float":
        b.add_type(B.Float("float", 4))
    elif feature == "decl_tag":
        v = b.add_type(B.Var("v", i, 1))
        b.add_type(B.DeclTag("tag", v, -1))
    elif feature == "type_tag":
        t = b.add_type(B.TypeTag("tag", i))
        b.add_type(B.Ptr(t))
    elif feature == "enum64":
        b.add_type(B.Enum64("e", 8, False, [B.EnumValue("E", 1 << 40)]))
    return b.to_bytes()


@_cached
def btf_kind(feature: str) -> Probe:
    from netbee.loader.programs import LoadedBtf
    try:
        LoadedBtf(_btf_blob(feature)).close()
        return True, "loads"
    except NetBeeError as e:
        return False, _errtext(e)


@functools.lru_cache(maxsize=None)
def btf_features() -> FrozenSet[str]:
    """Names (btf.FEATURES) of the BTF kinds this kernel accepts, for btf.sanitize()."""
    from netbee.loader.btf import FEATURES
    return frozenset(f for f in FEATURES if btf_kind(f)[0])


# --- RLIMIT_MEMLOCK ------------------------------------------------------------------------------------
def memcg_accounting() -> bool:
    """Kernels since 5.11 charge BPF memory to the memory cgroup, not RLIMIT_MEMLOCK; the helper
    ktime_get_coarse_ns arrived in the same release, so its presence tells us (libbpf's test)."""
    return helper("ktime_get_coarse_ns", "socket")[0]


def ensure_memlock() -> str:
    """Raise RLIMIT_MEMLOCK where the kernel still charges it. Returns what was done."""
    if memcg_accounting():
        return "not needed (memcg accounting)"
    import resource
    try:
        sc.setrlimit_memlock(resource.RLIM_INFINITY)
    except SyscallError as e:
        raise NotSupportedError(
            "loading BPF programs", "this kernel (before 5.11) charges BPF memory to RLIMIT_MEMLOCK and "
            f"raising it failed ({e}); run as root with CAP_SYS_RESOURCE or raise `ulimit -l`") from None
    return "raised to unlimited"


# --- by name (the test harness's requires_kernel features, and the tracer) ------------------------------
FEATURES: Dict[str, Callable[[], Probe]] = {
    "kprobe": kprobe,
    "kprobe_pmu": kprobe_pmu,
    "tracefs_kprobe": tracefs_kprobe_events,
    "kprobe_multi": kprobe_multi,
    "fentry": lambda: tracing("fentry"),
    "fexit": lambda: tracing("fexit"),
    "tp_btf": tp_btf,
    "raw_tp": lambda: prog_type("raw_tp"),
    "tracepoint": lambda: prog_type("tracepoint"),
    "netfilter": lambda: prog_type("netfilter"),
    "ringbuf": lambda: map_type("ringbuf"),
    "btf": vmlinux_btf,
    "direct_packet_reads": direct_packet_reads,
}


def has(feature: str) -> Probe:
    """(available, detail) for a feature name of FEATURES; KeyError for unknown names."""
    return FEATURES[feature]()


# --- the table -------------------------------------------------------------------------------------------
def probe_table() -> List[Tuple[str, bool, str]]:
    rows: List[Tuple[str, bool, str]] = []
    # Several probes look at the kernel BTF; holding one parse for the whole table lets them
    # share it (_kernel_btf does not cache, so a trace does not keep it).
    try:
        held = _kernel_btf() if os.path.exists(VMLINUX_BTF) else None
    except NetBeeError:
        held = None  # the probes that need it say why

    def add(name: str, res: Probe) -> None:
        rows.append((name, res[0], res[1]))
    add("BTF: /sys/kernel/btf/vmlinux", vmlinux_btf())
    for kind in ("kprobe", "tracepoint", "raw_tp", "netfilter"):
        add(f"program type: {kind}", prog_type(kind))
    add("program type: tracing (tp_btf)", tp_btf())
    add("program type: tracing (fentry)", tracing("fentry"))
    add("program type: tracing (fexit)", tracing("fexit"))
    add("plain loads of packet bytes (tp_btf)", direct_packet_reads())
    add("attach: kprobe (any way)", kprobe())
    add("attach: kprobe PMU", kprobe_pmu())
    add("attach: tracefs kprobe_events", tracefs_kprobe_events())
    add("attach: kprobe.multi", kprobe_multi())
    for name in MAP_PROBES:
        add(f"map type: {name}", map_type(name))
    add("map flag: mmapable array", mmapable_array())
    for name in ("get_stack", "ringbuf_output", "ringbuf_reserve", "probe_read_kernel", "ktime_get_ns"):
        add(f"helper: {name} (raw_tp)", helper(name))
    add("helper: ringbuf_output (netfilter)", helper("ringbuf_output", "netfilter"))
    add("helper: get_func_ip (kprobe)", helper("get_func_ip", "kprobe"))
    for feat in ("func", "func_global", "datasec", "float", "decl_tag", "type_tag", "enum64"):
        add(f"BTF kind: {feat}", btf_kind(feat))
    mem = memcg_accounting()
    add("memory: memcg accounting (no RLIMIT_MEMLOCK)", (mem, "5.11+" if mem else "RLIMIT_MEMLOCK applies"))
    del held   # kept alive until here on purpose
    return rows
