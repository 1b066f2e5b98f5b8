"""The tracer: choose a backend, fill nb_config, load and attach the programs, yield decoded events.

The pieces that need no kernel (backend choice, kallsyms lookup, netfilter bracket priorities, blind
spots from `nft -j list chains`) are plain functions so they can be tested on their own.
"""
from __future__ import annotations

import errno
import json
import os
import struct
import sys
import time
from collections import Counter
from typing import TYPE_CHECKING, Callable, Dict, Iterable, Iterator, Sequence

from netbee import netns as _netns
from netbee.loader.errors import AttachError, NetBeeError, NotSupportedError, SyscallError
from netbee.loader.record import FrozenRecord, Record
from netbee.prebuilt import default_object_path
from netbee.resolvers.kallsyms import SymbolNames

if TYPE_CHECKING:
    from netbee.loader.background_parse import BackgroundParse
    from netbee.nft_listing import ChainListing

BACKENDS = ("fentry", "kprobe", "tracepoint")
PF_INET = 2
PF_INET6 = 10
NF_HOOKS = ("PRE_ROUTING", "LOCAL_IN", "FORWARD", "LOCAL_OUT", "POST_ROUTING")
NF_HOOK_BY_NFT_NAME = {"prerouting": 0, "input": 1, "forward": 2, "output": 3, "postrouting": 4}
INT_MIN = -(1 << 31)
INT_MAX = (1 << 31) - 1
# The kernel refuses INT_MIN/INT_MAX themselves (ERANGE); these are the outermost usable slots.
BRACKET_ENTRY_PRIO = INT_MIN + 1
BRACKET_EXIT_PRIO = INT_MAX - 1
BRACKET_MAX_STEPS = 64
DEFAULT_RINGBUF_BYTES = 1 << 22
READ_BATCH = 1024


# --- backend choice ------------------------------------------------------------------------------
def choose_backend(requested: str, fentry_ok: bool, kprobe_ok: bool) -> str:
    """auto: fentry where the kernel lets it attach, else kprobe, else tracepoint; or the forced one."""
    if requested not in ("auto",) + BACKENDS:
        raise NotSupportedError(f"backend {requested!r}", "choose auto, fentry, kprobe or tracepoint")
    if requested == "auto":
        return "fentry" if fentry_ok else "kprobe" if kprobe_ok else "tracepoint"
    if requested == "fentry" and not fentry_ok:
        raise NotSupportedError("the fentry backend", "this kernel refuses fentry/fexit programs")
    if requested == "kprobe" and not kprobe_ok:
        raise NotSupportedError("the kprobe backend", "no kprobe PMU and no tracefs kprobe_events")
    return requested


# --- netfilter bracket ---------------------------------------------------------------------------
def bracket_attach(attach: Callable[[int], object], start: int, step: int,
                   max_steps: int = BRACKET_MAX_STEPS) -> tuple[object, int]:
    """Call attach(priority) from start, stepping by step while the slot is taken (EBUSY).

    Returns (link, priority used). Any error other than EBUSY is raised at once.
    """
    prio = start
    last: Exception | None = None
    for _ in range(max_steps):
        try:
            return attach(prio), prio
        except SyscallError as e:
            if e.errno != errno.EBUSY:
                raise
            last = e
        except AttachError as e:
            cause = e.__cause__
            if not (isinstance(cause, SyscallError) and cause.errno == errno.EBUSY):
                raise
            last = e
        prio += step
    raise AttachError(f"netfilter priority {start}", f"{max_steps} priorities in a row are taken: {last}")


class NftChain(FrozenRecord):
    __slots__ = ("family", "table", "name", "hook", "prio")

    def __init__(self, family: str, table: str, name: str, hook: str, prio: int) -> None:
        self.family = family
        self.table = table
        self.name = name
        self.hook = hook
        self.prio = prio


def parse_nft_chains(text: str) -> list[NftChain]:
    """Base chains from `nft -j list chains` (regular chains have no hook and are skipped)."""
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise NetBeeError(f"cannot parse `nft -j list chains` output: {e}") from e
    out = []
    for item in doc.get("nftables", []):
        c = item.get("chain") if isinstance(item, dict) else None
        if not c or "hook" not in c:
            continue
        out.append(NftChain(c.get("family", "?"), c.get("table", "?"), c.get("name", "?"),
                            c["hook"], int(c.get("prio", 0))))
    return out


def blind_spots(chains: Iterable[NftChain], brackets: dict[tuple[int, int], tuple[int, int]],
                ns_name: str) -> list[str]:
    """Chains the bracket cannot see around: outside [entry, exit] of their hook, or on a hook that
    cannot be bracketed at all (netdev ingress/egress, bridge, arp)."""
    fams = {"ip": (PF_INET,), "ip6": (PF_INET6,), "inet": (PF_INET, PF_INET6)}
    out = []
    for c in chains:
        where = f"netns {ns_name}: nft chain {c.family} {c.table} {c.name} (hook {c.hook}, priority {c.prio})"
        hook = NF_HOOK_BY_NFT_NAME.get(c.hook)
        if c.family not in fams or hook is None:
            out.append(f"{where}: hook not bracketed by netbee")
            continue
        for pf in fams[c.family]:
            rng = brackets.get((pf, hook))
            if rng is None:
                out.append(f"{where}: no bracket attached at {NF_HOOKS[hook]} pf {pf}")
            elif not rng[0] < c.prio < rng[1]:
                side = "before the entry" if c.prio <= rng[0] else "after the exit"
                out.append(f"{where}: runs {side} probe (bracket {rng[0]}..{rng[1]}), verdicts there are unseen")
                break
    return out


def nft_chains_in(ns: "_netns.Netns") -> list[NftChain] | None:
    """Base chains of ns, or None when nft is not installed (it is optional at run time)."""
    import shutil
    import subprocess

    nft = shutil.which("nft")
    if nft is None:
        return None
    # fork() copies the calling thread's namespaces, so nft runs inside ns.
    try:
        with _netns.entered(ns):
            res = subprocess.run([nft, "-j", "list", "chains"], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, timeout=10)
    except subprocess.SubprocessError as e:
        raise NetBeeError(f"nft -j list chains in netns {ns.name}: {e}") from None
    if res.returncode != 0:
        raise NetBeeError(f"nft -j list chains in netns {ns.name} failed: {res.stderr.strip()}")
    return parse_nft_chains(res.stdout)


# --- options, reports, counters ------------------------------------------------------------------
class TraceOptions(Record):
    __slots__ = ("backend", "netns", "rules", "want_stack", "btf_path", "ringbuf_bytes", "object_path",
                 "wakeup_bytes", "verbose", "filter_interpreter", "filter_dynamic", "any_filter_programs",
                 "cache", "prepared_cache")

    def __init__(self, backend: str = "auto", netns: list[str] | None = None, rules: list | None = None,
                 want_stack: bool = False, btf_path: str | None = None,
                 ringbuf_bytes: int = DEFAULT_RINGBUF_BYTES, object_path: str | None = None,
                 wakeup_bytes: int = 0, verbose: bool = False, filter_interpreter: bool = False,
                 filter_dynamic: bool = False, any_filter_programs: bool = False,
                 cache: object = None, prepared_cache: object = None) -> None:
        self.backend = backend
        self.netns = netns                      # NAME | PATH | "all"; None = the current namespace
        self.rules = [] if rules is None else rules   # netbee.filter.Rule, postfix
        self.want_stack = want_stack
        self.btf_path = btf_path
        self.ringbuf_bytes = ringbuf_bytes
        self.object_path = object_path          # None: the prebuilt object shipped with netbee
        self.wakeup_bytes = wakeup_bytes        # 0: a quarter of the ring buffer
        self.verbose = verbose                  # keep verifier logs
        # run the object's C filter interpreter instead of code generated from the rules (tests,
        # comparisons)
        self.filter_interpreter = filter_interpreter
        # the rules in a writable global the programs read at run time (bpf/src/nb_filter.h): the
        # loaded programs do not depend on the filter, so the program cache reuses one set for every
        # filter and a new filter starts without the verifier; runs the interpreter, never codegen
        self.filter_dynamic = filter_dynamic
        # with a cache: a filter whose own programs are not cached starts on the cached programs for
        # any filter (filter_dynamic) while its own load in the background for the next run; a fresh
        # load also prepares the programs for any filter in the background
        self.any_filter_programs = any_filter_programs
        # netbee.progcache.ProgramCache: reuse the programs an earlier run of the same command loaded,
        # and keep this run's for the next; None: always load afresh, pin nothing
        self.cache = cache
        # netbee.prepcache.PreparedCache: relocated programs and hook plan of an earlier run on this
        # kernel (any filter, any boot), so a fresh load skips BTF, ELF and CO-RE; None: not used
        self.prepared_cache = prepared_cache


class StartReport(Record):
    __slots__ = ("backend", "attached", "skipped", "blind_spots", "netns", "timings", "brackets")

    def __init__(self, backend: str,
                 attached: list[str] | None = None, skipped: list[tuple[str, str]] | None = None,
                 blind_spots: list[str] | None = None, netns: list[str] | None = None,
                 timings: dict[str, float] | None = None,
                 brackets: dict[str, dict[tuple[int, int], tuple[int, int]]] | None = None) -> None:
        self.backend = backend
        self.attached = [] if attached is None else attached
        self.skipped = [] if skipped is None else skipped
        self.blind_spots = [] if blind_spots is None else blind_spots
        self.netns = [] if netns is None else netns
        self.timings = {} if timings is None else timings   # phase -> seconds
        self.brackets = {} if brackets is None else brackets


def hook_counts(records: Sequence[bytes]) -> Dict[str, int]:
    """Events per hook (by Event.func) in a batch of raw records, without decoding them: a
    RecordBlock's hook bytes are counted in C."""
    from netbee.decode import HOOK_BYTES, HOOK_OFFSET, func_name

    counts: Counter = Counter()
    low, high = (HOOK_OFFSET, HOOK_OFFSET + 1) if sys.byteorder == "little" else (HOOK_OFFSET + 1, HOOK_OFFSET)
    column = getattr(records, "column", None)
    if column is not None and not column(high).strip(b"\0"):
        counts.update(column(low))      # every hook id below 256: one byte of each record says it
    else:
        counts.update(int.from_bytes(raw, sys.byteorder) for raw in map(HOOK_BYTES, records))
    named: Dict[str, int] = {}
    for hook, n in counts.items():
        name = func_name(hook)
        named[name] = named.get(name, 0) + n
    return named


class Counters(Record):
    __slots__ = ("filtered", "submitted", "lost", "received", "per_hook")

    def __init__(self, filtered: int = 0,
                 submitted: int = 0, lost: int = 0, received: int = 0,
                 per_hook: dict[str, int] | None = None) -> None:
        self.filtered = filtered
        self.submitted = submitted
        self.lost = lost
        self.received = received
        self.per_hook = {} if per_hook is None else per_hook


class _Planned(Record):
    """One program to load and attach: which hook it serves and where it goes."""
    __slots__ = ("prog", "hook", "kind", "target", "priority")

    def __init__(self, prog: str,
                 hook: str, kind: str, target: str = "", priority: int | None = None) -> None:
        self.prog = prog   # program name in the object
        self.hook = hook   # hook display name (reports, per-hook counts)
        self.kind = kind   # kprobe, kretprobe, fentry, fexit, tp_btf, netfilter
        self.target = target   # resolved kernel symbol or tracepoint; "" for netfilter
        self.priority = priority


def _resolve_target(t, backend: str, kbtf, kallsyms: "SymbolNames | None") -> tuple[str | None, str]:
    """(symbol, "") when the target exists on this kernel, else (None, why)."""
    from netbee.loader.btf import BtfKind

    if t.kind == "netfilter":
        return "", ""
    if t.kind == "tp_btf":
        name = t.symbols[0]
        if kbtf.find("btf_trace_" + name):
            return name, ""
        return None, f"no tracepoint {name} in the kernel BTF"
    tried = []
    for sym in t.symbols:
        if t.kind in ("fentry", "fexit"):
            # The verifier needs the function's BTF; a compiler clone (foo.constprop.0) has none.
            if kallsyms is not None and kallsyms.lookup(sym) != sym:
                tried.append(f"{sym} (not in kallsyms)")
                continue
            if not kbtf.find(sym, BtfKind.FUNC):
                tried.append(f"{sym} (no BTF FUNC)")
                continue
            return sym, ""
        found = kallsyms.lookup(sym) if kallsyms is not None else None
        if found:
            return found, ""
        tried.append(f"{sym} (not in kallsyms: inlined or absent)")
    return None, "no candidate on this kernel: " + ", ".join(tried)


def _btf_names(t) -> list[str]:
    """The kernel BTF names _resolve_target may look up for target t."""
    if t.kind == "tp_btf":
        return ["btf_trace_" + t.symbols[0]]
    if t.kind in ("fentry", "fexit"):
        return list(t.symbols)
    return []


def plan_hooks(backend: str, kbtf, kallsyms: "SymbolNames | None") -> tuple[list[_Planned], list[tuple[str, str]]]:
    """For each hook the backend can observe, the first alternative whose every target resolves.

    Hooks the backend cannot observe at all are not listed; those whose candidates are all absent
    on this kernel are returned as skipped with the reason.
    """
    from netbee import hooks

    plan: list[_Planned] = []
    skipped: list[tuple[str, str]] = []
    # every BTF name the plan may ask for, found in one pass over the kernel's types
    kbtf.prefetch(n for hook in hooks.hooks_for(backend) for alt in hook.alternatives(backend)
                  for t in alt for n in _btf_names(t))
    for hook in hooks.hooks_for(backend):
        reasons = []
        for alt in hook.alternatives(backend):
            resolved = []
            for t in alt:
                sym, why = _resolve_target(t, backend, kbtf, kallsyms)
                if sym is None:
                    reasons.append(why)
                    break
                resolved.append(_Planned(t.program, hook.func, t.kind, sym, t.priority))
            else:
                plan += resolved
                break
        else:
            skipped.append((hook.func, "; ".join(reasons) or "no attach target"))
    return plan, skipped


def _replacements(body: bytes | None) -> dict[str, bytes] | None:
    """ObjectSpec's replace= for the filter compiled to BPF (None: the object's own filter)."""
    if body is None:
        return None
    from netbee import filter_codegen

    return {filter_codegen.FUNCTION: body}


def _check_ringbuf_size(n: int) -> None:
    import mmap

    if n < mmap.PAGESIZE or n & (n - 1):
        raise NetBeeError(f"ring buffer size {n} must be a power of two of at least {mmap.PAGESIZE} bytes")


def _timed_collection_class():
    """Collection with its phases timed (object BTF, maps, programs) without touching collection.py."""
    from netbee.loader.collection import Collection

    class TimedCollection(Collection):
        def __init__(self, *a, timings: dict[str, float], **kw) -> None:
            self._timings = timings
            super().__init__(*a, **kw)

        def _timed(self, key: str, fn, *a):
            t = time.perf_counter()
            try:
                return fn(*a)
            finally:
                self._timings[key] = self._timings.get(key, 0.0) + time.perf_counter() - t

        def _load_btf(self, *a):
            return self._timed("object_btf_load", super()._load_btf, *a)

        def _create_maps(self, *a):
            return self._timed("maps", super()._create_maps, *a)

        def _prepare_program(self, *a):
            # CO-RE relocation and the BTF attach target, per program (pure Python).
            return self._timed("core", super()._prepare_program, *a)

        def _load_programs(self, *a):
            # CO-RE and the verifier for every program, overlapped (wall time, not the sum).
            return self._timed("core_and_load", super()._load_programs, *a)

    return TimedCollection


def _TimedCollection(*a, **kw):
    return _timed_collection_class()(*a, **kw)


class _NsLinks(Record):
    __slots__ = ("ns", "links", "brackets")

    def __init__(self, ns: "_netns.Netns",
                 links: list | None = None,
                 brackets: dict[tuple[int, int], tuple[int, int]] | None = None) -> None:
        self.ns = ns
        self.links = [] if links is None else links
        self.brackets = {} if brackets is None else brackets


class Tracer:
    """Load, attach, read. Every fd and link is released by close(), also after a failed start()."""

    def __init__(self, opts: TraceOptions | None = None, parse_ahead: BackgroundParse | None = None,
                 chains_ahead: Iterable[ChainListing] = ()) -> None:
        """parse_ahead: the object already being read in a child (netbee.cli starts one before
        it imports this module, for a start that will parse the object whatever happens);
        used if it reads the object and BTF this start needs, and let go by start().
        chains_ahead: the nftables chains of namespaces being listed since the command began
        (netbee.cli), used for the blind spots of those traced; let go by start()."""
        self.opts = opts or TraceOptions()
        self.report: StartReport | None = None
        self._coll = None
        self._links: list = []                 # global (namespace-independent) links
        self._ns: dict[int, _NsLinks] = {}     # netns inode -> its netfilter links
        self._nf_progs: list[tuple[int, object]] = []  # (starting priority, netfilter program)
        self._watcher: _netns.NetnsWatcher | None = None
        self._reader = None
        self._received = 0
        self._per_hook: dict[str, int] = {}
        self._closed = False
        self._cache = None                     # the locked progcache.Entry, released by close()
        self._parse_ahead: BackgroundParse | None = None   # the object read in a child, during start()
        self._given_ahead = parse_ahead
        self._chains_ahead: dict[int, ChainListing] = {c.inode: c for c in chains_ahead}
        self._fresh_facts: dict = {}
        self._object_btf: bytes | None = None   # the object's BTF sanitized by the object's reader
        self.cache_status = "off"              # what the program cache did (shown by -v)
        self.prepared_status = "off"           # what the prepared cache did, on a fresh load
        self.background_status = "none"        # what the background load did (_load_for_later)
        self._background = None
        self._pending_background: TraceOptions | None = None
        # enum skb_drop_reason of the BTF the programs were loaded against, once started (None:
        # unknown); a run with cached programs has them without reading the kernel BTF
        self.drop_reason_values: dict[str, int] | None = None

    # -- context manager ---------------------------------------------------------------------------
    def __enter__(self) -> "Tracer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release links first (they pin programs and namespaces), then the reader, maps, programs."""
        if self._closed:
            return
        self._closed = True
        self._drop_chains_ahead()
        for nsl in list(self._ns.values()):
            self._close_links(nsl.links)
        self._ns.clear()
        self._close_links(self._links)
        for obj in (self._reader, self._coll):
            if obj is not None:
                try:
                    obj.close()
                except Exception:
                    pass
        self._reader = self._coll = None
        if self._cache is not None:
            self._cache.release()
            self._cache = None
        if self._given_ahead is not None:   # (a start never made)
            self._given_ahead.close()
            self._given_ahead = None

    @staticmethod
    def _close_links(links: list) -> None:
        while links:
            link = links.pop()
            try:
                link.close()
            except Exception:
                pass

    # -- start -------------------------------------------------------------------------------------
    def start(self) -> StartReport:
        if self._closed or self._coll is not None:
            raise NetBeeError("a Tracer starts once; make a new one")
        try:
            return self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> StartReport:
        _check_ringbuf_size(self.opts.ringbuf_bytes)
        timings: dict[str, float] = {}
        t0 = last = time.perf_counter()
        cpu0 = time.process_time()  # user+system CPU: what the wall time would be on an idle machine
        times0 = os.times()         # the same split: user (Python) and system (mostly the verifier)

        def lap(name: str | None) -> None:
            """Time since the last lap goes to name (None: to nothing, the caller timed it)."""
            nonlocal last
            now = time.perf_counter()
            if name is not None:
                timings[name] = timings.get(name, 0.0) + (now - last)
            last = now

        if self.opts.cache is None and self.opts.prepared_cache is None:
            # Nothing cached to reuse: the object is parsed whatever happens, so a child reads it
            # meanwhile, from now on (netbee/loader/background_parse.py). (With the caches, a miss
            # is known only after the feature probes: parsed here then, as most of the overlap
            # would be lost and the child would cost the starts that hit.)
            given = self._given_ahead
            if given is not None and given.reads(self._object_path(), self.opts.btf_path):
                self._parse_ahead = given
            else:
                from netbee.loader.background_parse import BackgroundParse
                self._parse_ahead = BackgroundParse(self._object_path(), self.opts.btf_path)
            lap("object_fork")
        if self._given_ahead is not None and self._given_ahead is not self._parse_ahead:
            self._given_ahead.close()   # not what this start reads
        self._given_ahead = None
        try:
            return self._start_timed(timings, lap, t0, cpu0, times0)
        finally:
            if self._parse_ahead is not None:
                self._parse_ahead.close()
                self._parse_ahead = None

    def _start_timed(self, timings: dict[str, float], lap: Callable[[str | None], None], t0: float,
                     cpu0: float, times0: os.times_result) -> StartReport:
        from netbee.filter import field_mask

        cfg = self._config_bytes()
        fields = field_mask(self.opts.rules or [])
        lap("config_bytes")  # mostly the first import of netbee.abi (construct)
        # (a dynamic set's programs do not depend on the rules: they are written at each start)
        entry = self._cache_entry(cfg, 0 if self.opts.filter_dynamic else fields)
        lap("cache_lookup")
        loaded = self._open_cached(entry) if entry is not None and entry.meta is not None else None
        if loaded is None and entry is not None and self._any_filter_wanted():
            loaded = self._open_any_filter(entry)
        if loaded is not None:
            lap("cache_open")
        else:
            loaded = self._load_fresh(cfg, fields, timings, lap)
            if entry is not None:
                self._cache_store(entry, *loaded)
                lap("cache_store")
                if self._any_filter_wanted():
                    self._load_for_later(self.opts.replace(filter_dynamic=True))
        coll, backend, plan, skipped = loaded
        attached: list[str] = []
        failed_hooks: set[str] = set()
        nf_progs = []
        for p in plan:
            if p.kind == "netfilter":
                prio = p.priority if p.priority is not None else BRACKET_ENTRY_PRIO
                nf_progs.append((prio, coll.programs[p.prog]))
                continue
            try:
                self._links.append(self._attach_one(coll.programs[p.prog], p))
            except NetBeeError as e:
                skipped.append((p.hook, _reason(e)))
                failed_hooks.add(p.hook)
        lap("attach")
        # A hook made of several programs (nf_hook_slow entry + return) counts only when all attached.
        nf_hooks = {p.hook for p in plan if p.kind == "netfilter"}
        for p in plan:
            if p.hook not in nf_hooks and p.hook not in failed_hooks and p.hook not in attached:
                attached.append(p.hook)
        report = StartReport(backend=backend, attached=attached, skipped=skipped, timings=timings)
        self.report = report
        self._nf_progs = nf_progs
        if nf_progs:
            nf_hook = next(p.hook for p in plan if p.kind == "netfilter")
            self._watcher = _netns.NetnsWatcher(self.opts.netns)
            for ns in self._watcher.current.values():
                self._attach_netns(ns, report)
            if self._ns and nf_hook not in failed_hooks:
                attached.append(nf_hook)
            lap("attach_netfilter")
        if not attached:
            raise AttachError("every hook", "; ".join(f"{h}: {r}" for h, r in skipped) or "nothing to attach")
        if self._reader is None:
            self._reader = self._open_reader(coll)
        lap("ringbuf")
        timings["ready"] = time.perf_counter() - t0
        timings["ready_cpu"] = time.process_time() - cpu0
        times1 = os.times()
        timings["ready_cpu_user"] = times1.user - times0.user
        timings["ready_cpu_system"] = times1.system - times0.system
        for nsl in self._ns.values():
            report.blind_spots += self._blind_spots(nsl)
        self._drop_chains_ahead()
        lap("blind_spots")
        timings["total"] = time.perf_counter() - t0
        return report

    def _load_fresh(self, cfg: bytes, fields: int, timings: dict[str, float], lap: Callable[[str], None]):
        """Plan the hooks, relocate and load the programs: (collection, backend, plan, skipped).
        Planning and relocation come from the prepared cache when it has them."""
        body = None
        if not self.opts.filter_interpreter and not self.opts.filter_dynamic:
            # the rules as straight-line BPF in place of the interpreter (an object without
            # the function keeps its own filter)
            from netbee import filter_codegen
            body = filter_codegen.compile_rules(self.opts.rules or [])
        if self._parse_ahead is None and self.opts.prepared_cache is not None and not self._prepared_may_hit():
            # The first run on this kernel (or of this netbee or object): the object will be
            # parsed, so a child reads it while the features are probed, as without the caches.
            from netbee.loader.background_parse import BackgroundParse
            self._parse_ahead = BackgroundParse(self._object_path(), self.opts.btf_path)
            lap("object_fork")
        parse = self._parse_ahead   # (start() lets it go)
        held = None
        if self.opts.prepared_cache is None and self.opts.btf_path is None and self.opts.backend != "tracepoint":
            # No cached ids for the backend probe: it and the plan share one parse (~80 ms each).
            from netbee.loader.btf import Btf
            try:
                held = Btf.load_kernel()
            except NetBeeError:
                pass   # the plan reports it
        backend = self._choose_backend()
        if parse is not None:
            # every program the backend may plan: the child links them while the plan is made
            # (on any kernel the plan keeps most of them), and the plan's are kept
            from netbee import hooks
            parse.request(hooks.programs_for(backend), _replacements(body))
        lap("features")
        slot = self._prepared_slot(backend)
        lap("prepared_lookup")
        hit = self._read_prepared(slot, body) if slot is not None else None
        while True:
            if hit is not None:
                spec, plan, skipped, drops, direct_reads = hit
                kbtf = None
                lap("prepared_read")
            else:
                spec, kbtf, plan, skipped = self._plan_and_parse(backend, body, lap, parse)
                parse = None   # (its answer is taken: a second pass parses here)
                held = None
                drops = None
                from netbee.loader import features
                # (the probe reads the kernel BTF, which is at hand now and not on a prepared load)
                direct_reads = features.has("direct_packet_reads")[0]
            spec.set_global("cfg", cfg)
            spec.set_global("self_pid", struct.pack("<I", os.getpid()))
            if self.opts.filter_dynamic:
                if "dyn_filter" not in spec.globals:
                    raise NetBeeError("the BPF object has no dyn_filter: it cannot run a dynamic filter")
                spec.set_global("filter_dynamic", struct.pack("<I", 1))
                spec.set_global("dyn_filter", self._dyn_filter_bytes())
            if "filter_fields" in spec.globals:
                # which fields the filter needs before it can run (ports cost a header read)
                spec.set_global("filter_fields", struct.pack("<I", fields))
            if "direct_packet_reads" in spec.globals and direct_reads:
                # packet headers by plain loads instead of a helper call per header (bpf/src/nb_parse.h)
                spec.set_global("direct_packet_reads", struct.pack("<I", 1))
            lap("config")
            try:
                coll, loaded_plan, load_skipped = self._load(spec, kbtf, plan, timings)
            except NetBeeError as e:
                if hit is None:
                    raise
                # The key covers the kernel, so this should not happen; if it does, the slow
                # way decides (and reports what is really wrong).
                slot[0].discard(slot[1])
                self.prepared_status = f"miss (dropped an entry the kernel refused: {_reason(e)})"
                hit = None
                continue
            break
        self._coll = coll
        lap(None)  # the collection timed its own phases (object_btf_load, maps, core, core_and_load)
        if hit is None:
            # Of the kernel BTF the trace needs only the drop reason names: remember those, and
            # let the object file and the kernel BTF (~10 MB) go before the ring buffer is mapped.
            from netbee.loader.btf import Btf
            try:
                drops = Btf.kernel_enum_values("skb_drop_reason", self.opts.btf_path)
            except NetBeeError:
                pass  # the drop reason resolver reports a missing enum itself
            if slot is not None and not load_skipped:
                # (a program the verifier refused may be refused for this filter only: not kept)
                self._store_prepared(slot, coll, backend, plan, skipped, drops, direct_reads)
                lap("prepared_store")
        self.drop_reason_values = drops
        # what a later run needs to reuse these programs (_cache_store)
        self._fresh_facts = {"self_pid": list(spec.globals["self_pid"]), "drop_reasons": drops,
                             "dyn_filter": list(spec.globals["dyn_filter"]) if self.opts.filter_dynamic else None,
                             "maps": {name: _reset_rule(mspec, name) for name, mspec in spec.maps.items()
                                      if name in coll.maps}}
        coll.release_sources()
        del spec, kbtf
        from netbee.loader.syscall import release_free_heap
        release_free_heap()   # the freed megabytes leave the resident set before the ring is mapped
        lap("release_sources")
        return coll, backend, loaded_plan, skipped + load_skipped

    def _plan_and_parse(self, backend: str, body: bytes | None, lap: Callable[[str], None],
                        parse: "BackgroundParse | None" = None):
        """The slow way: kernel BTF, hook plan, ELF object. (spec, kernel BTF, plan, skipped)
        parse: the object being read ahead in a child (_load_fresh), or None to parse it here."""
        from netbee.loader.btf import Btf
        from netbee.loader.elf import ObjectSpec

        kbtf = Btf.load_kernel(self.opts.btf_path)
        lap("kernel_btf")
        # Tracepoints are found in the BTF alone; kprobe/fentry symbols also need kallsyms.
        kallsyms = SymbolNames.load() if backend != "tracepoint" else None
        lap("kallsyms")
        early = parse.kernel_strings_now() if parse is not None else None
        if early is not None:
            # the child's searches for CO-RE: their types are found in the plan's pass
            kbtf.use_known_positions(*early, find_types=False)
        plan, skipped = plan_hooks(backend, kbtf, kallsyms)
        # The first few BTF look-ups build the kernel BTF's name index: most of this phase's cost.
        lap("btf_index_and_plan")
        # Only the planned programs are linked (~10 of the object's ~50).
        wanted = {p.prog for p in plan}
        if parse is not None:
            spec = parse.result()
            self._object_btf = parse.object_btf
            for name in set(spec.programs) - wanted:
                del spec.programs[name]
            if parse.kernel_strings is not None:
                # the child's searches of the kernel's strings for CO-RE, made meanwhile
                kbtf.use_known_positions(*parse.kernel_strings)
        else:
            spec = ObjectSpec.from_path(self._object_path(), programs=wanted, replace=_replacements(body))
        missing = sorted(wanted - set(spec.programs))
        if missing:
            raise NetBeeError(f"the BPF object lacks program(s) {', '.join(missing)}: object and netbee/hooks.py disagree")
        # (with a child parsing the object, what is left here: waiting for it, if it was slower
        # than the steps above, and reading its answer)
        lap("object_parse")
        return spec, kbtf, plan, skipped

    def _object_path(self) -> str:
        return self.opts.object_path or default_object_path()

    # -- prepared cache (netbee/prepcache.py) ------------------------------------------------------
    def _prepared_slot(self, backend: str):
        """(cache, key, key text) of the prepared cache for this object, kernel and backend."""
        cache = self.opts.prepared_cache
        if cache is None:
            return None
        from netbee import __version__, prepcache, progcache

        try:
            parts = {"netbee": __version__, "code": progcache.code_identity(), "object": self._object_identity(),
                     "kernel": prepcache.kernel_identity(self.opts.btf_path),
                     # kprobe/fentry targets may live in modules; tracepoints come from vmlinux's BTF
                     "modules": _module_names() if backend != "tracepoint" else None,
                     "backend": backend, "filter_interpreter": self.opts.filter_interpreter,
                     "filter_dynamic": self.opts.filter_dynamic}
        except OSError:
            return None   # no kernel BTF: the slow way says so properly
        return (cache, *progcache.make_key(parts))

    def _prepared_may_hit(self) -> bool:
        """Whether the prepared cache has an entry for this start under any backend it may
        choose (the choice is made later, after the feature probes)."""
        backends = BACKENDS if self.opts.backend == "auto" else (self.opts.backend,)
        for backend in backends:
            slot = self._prepared_slot(backend)
            if slot is None:
                return True   # cannot tell: no child
            cache, key, _text = slot
            if os.path.exists(cache.path(key)):
                return True
        return False

    def _read_prepared(self, slot, body: bytes | None):
        """(prepared object with this filter's body, plan, skipped, drop reasons, whether packet
        bytes are read by plain loads) or None."""
        from netbee.loader.prepared import PreparedObject

        cache, key, text = slot
        doc = cache.load(key, text)
        if doc is None:
            self.prepared_status = "miss"
            return None
        try:
            obj = PreparedObject.from_doc(doc["object"])
            plan = [_Planned(**p) for p in doc["plan"]]
            skipped = [(str(h), str(why)) for h, why in doc["skipped"]]
            drops = doc["drop_reasons"]
            direct_reads = bool(doc["direct_packet_reads"])
            if not {p.prog for p in plan} <= set(obj.programs):
                raise ValueError("the plan names programs it lacks")
            if body is not None:
                from netbee import filter_codegen
                obj = obj.with_body(filter_codegen.FUNCTION, body)
        except (NetBeeError, KeyError, TypeError, ValueError) as e:
            self.prepared_status = f"miss (dropped an unusable entry: {_reason(e)})"
            cache.discard(key)
            return None
        self.prepared_status = "hit"
        return obj, plan, skipped, drops, direct_reads

    def _store_prepared(self, slot, coll, backend: str, plan: list, skipped: list, drops,
                        direct_reads: bool) -> None:
        cache, key, text = slot
        doc = {"backend": backend, "plan": [p.fields() for p in plan], "skipped": [list(s) for s in skipped],
               "drop_reasons": drops, "direct_packet_reads": direct_reads,
               "object": coll.prepared_object().to_doc()}
        try:
            cache.store(key, text, doc)
        except OSError as e:
            self.prepared_status += f", not stored ({_reason(e)})"
            return
        self.prepared_status += ", stored"

    # -- programs for any filter (filter_dynamic) ---------------------------------------------------
    def _any_filter_wanted(self) -> bool:
        o = self.opts
        return o.any_filter_programs and o.cache is not None and not (o.filter_dynamic or o.filter_interpreter)

    def _open_any_filter(self, entry):
        """Start on the cached programs for any filter with this run's rules written into them,
        and load this filter's own programs in the background for the next run (they run faster:
        compiled rules). None, with entry still this run's, when there are none to reuse."""
        from netbee import progcache

        own = self.opts
        self.opts = own.replace(filter_dynamic=True)   # what runs, as the rest of the run sees it
        cfg = self._config_bytes()
        key, _text = progcache.make_key(self._cache_key_parts(cfg, 0))
        if not os.path.exists(own.cache.meta_path(key)):   # (not even a lock file left behind)
            self.opts = own
            return None
        self._cache = None
        any_entry = self._cache_entry(cfg, 0)
        loaded = None
        if any_entry is not None and any_entry.meta is not None:
            loaded = self._open_cached(any_entry)
        if loaded is None:
            if any_entry is not None:
                any_entry.release()
            self.opts, self._cache, self.cache_status = own, entry, "miss"
            return None
        entry.release()
        self.cache_status = "miss; started on the programs for any filter (hit)"
        self._load_for_later(own)
        return loaded

    def _load_for_later(self, opts: TraceOptions) -> None:
        """Load and cache, unattached, the programs of opts in a background thread at low
        priority, once start_background() is called (after the start, so that it takes no CPU
        from it); the process may exit before it ends (the cache then has no entry: nothing lost)."""
        what = "the programs for any filter" if opts.filter_dynamic else "this filter's own programs"
        self.background_status = f"loading {what} for the next run"
        self._pending_background = opts

    def start_background(self) -> None:
        """Start the background load that start() decided on, if any (the CLI calls this once its
        `tracing` line is out)."""
        import threading

        opts, self._pending_background = self._pending_background, None
        if opts is None or self._closed:
            return

        def job() -> None:
            try:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
            except OSError:
                pass
            try:
                with Tracer(opts.replace(any_filter_programs=False)) as t:
                    self.background_status = t.load_into_cache()
            except Exception as e:   # a thread has nobody to raise to: reported by -v
                self.background_status = f"failed ({_reason(e) if isinstance(e, NetBeeError) else repr(e)})"

        self._background = threading.Thread(target=job, name="netbee-load-for-later", daemon=True)
        self._background.start()

    def wait_background(self, timeout: float | None = None) -> bool:
        """Wait for the background load (_load_for_later), starting it if start_background() was
        not called; whether none is running any more."""
        self.start_background()
        if self._background is not None:
            self._background.join(timeout)
            return not self._background.is_alive()
        return True

    def load_into_cache(self) -> str:
        """Load this command's programs into the program cache without attaching them, so that
        a later run starts from the cache. Returns what the cache did."""
        from netbee.filter import field_mask

        cfg = self._config_bytes()
        fields = field_mask(self.opts.rules or [])
        entry = self._cache_entry(cfg, 0 if self.opts.filter_dynamic else fields)
        if entry is None:   # another netbee holds that entry, or the cache is unusable
            why = "in use by another netbee" if self.cache_status.startswith("in use") else self.cache_status
            return f"skipped ({why})"
        if entry.meta is not None:
            return "already cached"
        loaded = self._load_fresh(cfg, fields, {}, lambda name: None)
        self._cache_store(entry, *loaded)
        return self.cache_status

    # -- program cache (netbee/progcache.py) -------------------------------------------------------
    def _cache_entry(self, cfg: bytes, fields: int):
        """This command's cache entry, locked; None when not caching or another netbee has it."""
        cache = self.opts.cache
        if cache is None:
            self.cache_status = "off"
            return None
        from netbee import progcache
        from netbee.loader import pinning

        try:
            pinning.ensure_bpffs(cache.bpffs_root)
            entry = cache.acquire(*progcache.make_key(self._cache_key_parts(cfg, fields)))
        except (NetBeeError, OSError) as e:
            self.cache_status = f"off ({_reason(e)})"
            return None
        if entry is None:
            self.cache_status = "in use by another netbee: loaded a private copy"
            return None
        self._cache = entry
        self.cache_status = "miss"
        return entry

    def _cache_key_parts(self, cfg: bytes, fields: int) -> dict:
        """Everything the loaded programs depend on. The boot covers the kernel and its BTF;
        modules can add kprobe targets."""
        from netbee import __version__, progcache

        parts = {"netbee": __version__, "code": progcache.code_identity(), "boot": progcache.boot_id(),
                 "modules": _module_names(), "object": self._object_identity(),
                 "backend": self.opts.backend, "config": cfg.hex(), "filter_fields": fields,
                 "filter_interpreter": self.opts.filter_interpreter, "filter_dynamic": self.opts.filter_dynamic,
                 "ringbuf": self.opts.ringbuf_bytes}
        if self.opts.btf_path:
            bst = os.stat(self.opts.btf_path)
            parts["btf"] = [os.path.abspath(self.opts.btf_path), bst.st_size, bst.st_mtime_ns, bst.st_ino]
        return parts

    def _object_identity(self) -> list:
        from netbee import progcache

        if self.opts.object_path is None and progcache.archive_identity() is not None:
            return ["packaged in the archive"]  # extracted afresh each run: code identity covers it
        obj = os.path.abspath(self._object_path())
        st = os.stat(obj)
        return [obj, st.st_size, st.st_mtime_ns, st.st_ino]

    def _open_cached(self, entry):
        """The entry's programs and maps with the per-run state reset, or None (entry dropped)
        when they are gone or unusable: (objects, backend, plan, skipped)."""
        meta = entry.meta
        try:
            self._coll = entry.open([(p["name"], p["kind"], p["target"], p["btf_id"])
                                     for p in meta["programs"]], list(meta["maps"]))
            writes = [(meta["self_pid"], os.getpid().to_bytes(meta["self_pid"][2], sys.byteorder))]
            if self.opts.filter_dynamic:
                writes.append((meta["dyn_filter"], self._dyn_filter_bytes()))
            self._reset_maps(self._coll, meta["maps"], writes)
            plan = [_Planned(**p) for p in meta["plan"]]
            skipped = [(h, why) for h, why in meta["skipped"]]
            backend = meta["backend"]
        except (NetBeeError, OSError, KeyError, TypeError, ValueError) as e:
            for obj in (self._reader, self._coll):
                if obj is not None:
                    obj.close()
            self._reader = self._coll = None
            entry.discard()
            self.cache_status = f"miss (dropped an unusable entry: {_reason(e)})"
            return None
        self.drop_reason_values = meta.get("drop_reasons")
        self.cache_status = "hit"
        return self._coll, backend, plan, skipped

    def _reset_maps(self, objs, rules: dict, writes: list) -> None:
        """Per-run state back to a fresh load's, before anything is attached: counters and scratch
        zeroed, global data rewritten with this run's values (writes: ([map, offset, size], bytes):
        its pid, a dynamic filter's rules), the ring buffer's old records skipped."""
        from netbee.loader.maps import MapType, possible_cpus

        for name, rule in rules.items():
            m = objs.maps[name]
            if rule == "ring":
                self._reader = self._open_reader(objs)
                self._reader.cursor.skip_all()
                continue
            if rule == "keep":
                continue
            value = bytearray(bytes.fromhex(rule).ljust(m.value_size, b"\0"))
            for (map_name, off, size), data in writes:
                if map_name == name:
                    value[off:off + size] = data
            for key in range(m.max_entries):
                if m.type == MapType.PERCPU_ARRAY:
                    m.update_percpu(key, [bytes(value)] * possible_cpus())
                elif m.type == MapType.ARRAY:
                    m.update(key, bytes(value))
                else:
                    raise NetBeeError(f"cached map {name} of type {m.type} cannot be reset")

    def _cache_store(self, entry, coll, backend: str, plan: list, skipped: list) -> None:
        """Pin what this run loaded for the next run with the same key (failure only reported)."""
        facts = self._fresh_facts
        meta = {"backend": backend, "plan": [p.fields() for p in plan], "skipped": [list(s) for s in skipped],
                "programs": [{"name": n, "kind": p.kind, "target": p.attach_target, "btf_id": p.attach_btf_id}
                             for n, p in coll.programs.items()],
                "maps": facts["maps"], "self_pid": facts["self_pid"], "dyn_filter": facts["dyn_filter"],
                "drop_reasons": facts["drop_reasons"]}
        try:
            evicted = entry.store(coll.programs, coll.maps, meta)
        except (NetBeeError, OSError) as e:
            entry.discard()
            self.cache_status += f", not stored ({_reason(e)})"
            return
        self.cache_status += ", stored" + (f" (evicted {len(evicted)} old)" if evicted else "")

    def _load(self, spec, kbtf, plan: list["_Planned"], timings: dict[str, float]):
        """Load the planned programs; one the verifier rejects is dropped with its hook, then retry.

        Returns (collection, plan that loaded, skipped entries).
        """
        from netbee.loader import features
        from netbee.loader.errors import VerifierError

        features.ensure_memlock()
        skipped: list[tuple[str, str]] = []
        log_level = 1 if self.opts.verbose else 0
        for _ in range(len(plan) + 1):
            names = list(dict.fromkeys(p.prog for p in plan))
            # (prepared programs come with their targets: kbtf is None then)
            overrides = {p.prog: {"attach_target": p.target} for p in plan
                         if p.kind not in ("netfilter",) and p.target} if kbtf is not None else {}
            try:
                coll = _TimedCollection(spec, kernel_btf=kbtf, programs=names, overrides=overrides,
                                        map_sizes={"events": self.opts.ringbuf_bytes}, log_level=log_level,
                                        btf_raw=self._object_btf if kbtf is not None else None,
                                        timings=timings)
                return coll, plan, skipped
            except VerifierError as e:
                bad_hooks = {p.hook for p in plan if p.prog == e.program}
                if not bad_hooks:
                    raise
                why = "verifier rejected " + e.program + (": " + e.log.strip().splitlines()[-1]
                                                          if e.log.strip() else "")
                skipped += [(h, why) for h in sorted(bad_hooks)]
                plan = [p for p in plan if p.hook not in bad_hooks]
                if not plan:
                    raise
        raise NetBeeError("loading kept failing")  # pragma: no cover - the loop always returns

    def _attach_one(self, prog, p: "_Planned"):
        from netbee.loader import links

        return links.attach(prog)

    # -- netfilter bracket per namespace -----------------------------------------------------------
    def _attach_netns(self, ns: "_netns.Netns", report: StartReport) -> None:
        """Entry and exit programs on every (pf, hook) of ns; a failure skips this namespace only."""
        from netbee.loader import links

        nsl = _NsLinks(ns)
        try:
            with _netns.entered(ns):
                for pf in (PF_INET, PF_INET6):
                    for hook in range(len(NF_HOOKS)):
                        used = {}
                        for start, prog in self._nf_progs:
                            # Entry probes sit at the low end and step up; exit probes step down.
                            step = 1 if start < 0 else -1
                            link, prio = bracket_attach(
                                lambda p, prog=prog, pf=pf, hook=hook: links.attach_netfilter(prog, pf, hook, p),
                                start, step)
                            nsl.links.append(link)
                            used["entry" if start < 0 else "exit"] = prio
                        nsl.brackets[(pf, hook)] = (used.get("entry", BRACKET_ENTRY_PRIO),
                                                    used.get("exit", BRACKET_EXIT_PRIO))
        except NetBeeError as e:
            self._close_links(nsl.links)
            report.skipped.append((f"netfilter (netns {ns.name})", _reason(e)))
            return
        self._ns[ns.inode] = nsl
        report.netns.append(str(ns))
        report.brackets[str(ns)] = dict(nsl.brackets)

    def _detach_netns(self, inode: int) -> None:
        nsl = self._ns.pop(inode, None)
        if nsl is None:
            return
        self._close_links(nsl.links)
        if self.report is not None:
            name = str(nsl.ns)
            if name in self.report.netns:
                self.report.netns.remove(name)
            self.report.brackets.pop(name, None)
            prefix = f"netns {nsl.ns.name}:"
            self.report.blind_spots[:] = [b for b in self.report.blind_spots if not b.startswith(prefix)]

    def _blind_spots(self, nsl: _NsLinks) -> list[str]:
        ahead = self._chains_ahead.pop(nsl.ns.inode, None)
        if ahead is not None:
            text = ahead.output()
            if text is not None:
                try:
                    return blind_spots(parse_nft_chains(text), nsl.brackets, nsl.ns.name)
                except NetBeeError:
                    pass   # listed again below, which reports it
        try:
            chains = nft_chains_in(nsl.ns)
        except (NetBeeError, OSError) as e:
            return [f"netns {nsl.ns.name}: cannot list nftables chains ({e}); chains outside the bracket unknown"]
        if chains is None:
            return [f"netns {nsl.ns.name}: nft not installed, nftables chains outside the bracket unknown"]
        # iptables-legacy tables register at fixed priorities (-300 .. 300): always inside the bracket.
        return blind_spots(chains, nsl.brackets, nsl.ns.name)

    def _drop_chains_ahead(self) -> None:
        for listing in self._chains_ahead.values():
            listing.close()
        self._chains_ahead.clear()

    def poll_netns(self) -> tuple[list[str], list[str]]:
        """Follow namespaces that appeared or went away; returns their names (added, removed).

        Called from events(); closing the links of a vanished namespace lets the kernel free it.
        """
        if self._watcher is None or self.report is None:
            return [], []
        added, removed = self._watcher.poll()
        for ns in removed:
            self._detach_netns(ns.inode)
        for ns in added:
            self._attach_netns(ns, self.report)
            nsl = self._ns.get(ns.inode)
            if nsl is not None:
                self.report.blind_spots += self._blind_spots(nsl)
        return [ns.name for ns in added], [ns.name for ns in removed]

    def netns_links(self) -> dict[int, int]:
        """netns inode -> number of netfilter links held there (for tests and --probe output)."""
        return {ino: len(nsl.links) for ino, nsl in self._ns.items()}

    # -- reading -----------------------------------------------------------------------------------
    def _open_reader(self, coll) -> object:
        from netbee.loader.ringbuf import RingBufReader

        return RingBufReader(coll.maps["events"])

    def events(self, timeout: float = 0.1) -> Iterator[object]:
        """Decoded events as they come; returns once nothing arrived within timeout seconds.

        Wakeups are batched in the kernel (wakeup_bytes), so the wait may end by timeout while
        records are queued: they are read then all the same.
        """
        while True:
            # Bounded batches: tens of thousands of decoded events alive at once make every
            # garbage collector pass walk them all (the live path cost 3.4 instead of 2 us/event).
            batch = self.read_events(timeout, limit=READ_BATCH)
            if not batch:
                return
            yield from batch

    def read_events(self, timeout: float | None = 0.1, limit: int | None = None) -> list:
        """One batch: the decoded events queued now (at most limit; the rest stay in the ring
        buffer), waiting up to timeout seconds for the first one; [] when none came."""
        from netbee.decode import decode_event

        return list(map(decode_event, self.read_records(timeout, limit)))

    def read_records(self, timeout: float | None = 0.1, limit: int | None = None) -> Sequence[bytes]:
        """read_events() without decoding: the raw records (struct nb_event, then any stack), for
        renderers that work from the bytes (netbee/render_records.py): a list, or a RecordBlock
        (loader/ringbuf.py) when they all have one length, as they do unless stacks follow.

        Per batch, not per event, because this is the hot path: the counters are updated once and
        the caller can render and write the whole batch at once.
        """
        if self._reader is None:
            raise NetBeeError("tracer is not started")
        self.poll_netns()
        records = self._reader.read_block(timeout=timeout, limit=limit)
        if records:
            self._received += len(records)
            per_hook = self._per_hook
            for name, n in hook_counts(records).items():
                per_hook[name] = per_hook.get(name, 0) + n
        return records

    def pending(self) -> bool:
        """Records are queued in the ring buffer: a read now would not wait."""
        return self._reader is not None and self._reader.cursor.available()

    def counters(self) -> Counters:
        """Kernel per-CPU counters summed, plus what userspace received (per hook by display name)."""
        from netbee.abi import EVENT_COUNTERS, NbCounter, count_events

        got = dict.fromkeys(EVENT_COUNTERS, 0)
        if self._coll is not None:
            cmap = self._coll.maps["counters"]
            shared = {c: cmap.lookup_percpu(int(c)) or [] for c in got}
            got = count_events(shared, self._coll.maps["scratch"].lookup_percpu(0) or [])
        return Counters(filtered=got[NbCounter.FILTERED], submitted=got[NbCounter.SUBMITTED],
                        lost=got[NbCounter.LOST],
                        received=self._received, per_hook=dict(self._per_hook))

    # -- configuration -----------------------------------------------------------------------------
    def _config_bytes(self) -> bytes:
        from netbee import abi
        from netbee.filter import encode_rules

        rules = list(self.opts.rules or [])
        if len(rules) > abi.NB_MAX_RULES:
            raise NetBeeError(f"filter has {len(rules)} operations, at most {abi.NB_MAX_RULES}")
        wakeup = self.opts.wakeup_bytes or min(64 << 10, self.opts.ringbuf_bytes // 8)
        if self.opts.filter_dynamic:
            rules = []   # in dyn_filter instead (_dyn_filter_bytes)
        return abi.build_config(encode_rules(rules), len(rules), want_stack=self.opts.want_stack,
                                wakeup_bytes=wakeup)

    def _dyn_filter_bytes(self) -> bytes:
        """struct nb_dyn_filter of this run's rules (_config_bytes has checked their number)."""
        from netbee import abi
        from netbee.filter import encode_rules

        rules = list(self.opts.rules or [])
        return abi.build_dyn_filter(encode_rules(rules), len(rules))

    def _choose_backend(self) -> str:
        if self.opts.backend not in ("auto",) + BACKENDS:
            raise NotSupportedError(f"backend {self.opts.backend!r}", "choose auto, fentry, kprobe or tracepoint")
        if self.opts.backend == "tracepoint":
            return "tracepoint"
        from netbee.loader import features

        facts = self._kernel_facts()
        if facts is not None:
            features.remember_btf_func_ids(facts[2].get("btf_func_ids") or {})
        fentry_ok = self.opts.backend in ("auto", "fentry") and features.has("fentry")[0]
        kprobe_ok = self.opts.backend in ("auto", "kprobe") and not fentry_ok and features.has("kprobe")[0]
        if facts is not None:
            learned = features.known_btf_func_ids()
            if learned != facts[2].get("btf_func_ids"):
                try:
                    self.opts.prepared_cache.store_facts(facts[0], facts[1], {"btf_func_ids": learned})
                except OSError:
                    pass   # learned again next time
        return choose_backend(self.opts.backend, fentry_ok, kprobe_ok)

    def _kernel_facts(self):
        """(key, key text, facts) of the prepared cache's facts about the running kernel, or None
        without a prepared cache (or for a BTF file that is not the running kernel's)."""
        cache = self.opts.prepared_cache
        if cache is None or self.opts.btf_path is not None:
            return None
        from netbee import prepcache, progcache

        try:
            key, text = progcache.make_key({"kernel facts": prepcache.kernel_identity()})
            return key, text, cache.load_facts(key, text)
        except OSError:
            return None   # no kernel BTF: the probes say why


def _reset_rule(mspec, name: str) -> str:
    """How a reused map is reset (Tracer._reset_maps): "ring" (skip old records), "keep" (frozen
    read-only data), else the hex bytes each entry starts with (a fresh load's contents)."""
    from netbee.loader.maps import MapType, is_frozen_data

    if mspec.type == MapType.RINGBUF:
        return "ring"
    if is_frozen_data(mspec):
        return "keep"
    return bytes(mspec.data or b"").hex()


def _module_names() -> list[str]:
    try:
        with open("/proc/modules") as f:
            return sorted(line.split(" ", 1)[0] for line in f)
    except OSError:
        return []


def _reason(e: BaseException) -> str:
    return getattr(e, "reason", None) or str(e)
