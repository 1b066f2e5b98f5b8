"""Collection: an ObjectSpec and the kernel's BTF in, loaded maps and programs out; close() frees all.

Order: object BTF (sanitized for this kernel) -> maps (global data written, .rodata frozen) ->
per program: copy instructions, CO-RE relocate against the kernel BTF, resolve the BTF attach
target (a PreparedProgram) -> put map fds into ld_imm64s and load them all, a few at a time in
threads (the verifier is most of the start-up time; with a verifier log on rejection).

A PreparedObject (prepared.py) made by an earlier collection (prepared_object()) can stand in
for the ObjectSpec: then no kernel BTF is needed and nothing is relocated again.
"""
from __future__ import annotations

import os
import time
from collections import deque
from typing import Any, Dict, Iterable, List, Optional

from netbee.loader import insn as I
from netbee.loader import syscall as sc
from netbee.loader.errors import NetBeeError, ObjectFileError, VerifierError
from netbee.loader.maps import Map
from netbee.loader.prepared import PreparedObject, PreparedProgram, func_info_records
from netbee.loader.programs import KINDS, LoadedBtf, Program, line_info_records, resolve_attach_btf_id

POISON_MARK = "unknown#195896080"  # how the verifier names core.py's poisoned calls
BTF_TARGET_KINDS = ("fentry", "fexit", "tp_btf")
CHEAP_RELOS = 2   # CO-RE relocations of a program quick to prepare (_load_programs)


def load_workers(n_programs: int) -> int:
    """Threads for loading n programs: one per CPU this process may run on, at most one each."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(n_programs, cpus))


class Collection(sc.Closeable):
    """Loaded maps and programs of one object (a context manager)."""

    def __init__(self, spec: Any, kernel_btf: Any = None, programs: Optional[Iterable[str]] = None,
                 overrides: Optional[Dict[str, Dict[str, Any]]] = None,
                 map_sizes: Optional[Dict[str, int]] = None, *, btf_features: Optional[Iterable[str]] = None,
                 btf_raw: Optional[bytes] = None, log_level: int = 0) -> None:
        """btf_raw: the ObjectSpec's BTF already as sanitize() makes it for this kernel (the
        object's reader made it meanwhile: netbee/loader/background_parse.py)."""
        self.spec = spec
        self.kernel_btf = kernel_btf
        self.maps: Dict[str, Map] = {}
        self.programs: Dict[str, Program] = {}
        self.btf: Optional[LoadedBtf] = None
        self.btf_raw: Optional[bytes] = None   # what self.btf was loaded from
        self.warnings: List[str] = []
        self.poisoned: Dict[str, List[Any]] = {}
        self.prepared: Dict[str, PreparedProgram] = {}   # of the loaded programs
        wanted = list(spec.programs) if programs is None else list(programs)
        unknown = [p for p in wanted if p not in spec.programs]
        if unknown:
            raise ObjectFileError(f"no program(s) {', '.join(unknown)} in the object "
                                  f"(has: {', '.join(sorted(spec.programs))})")
        overrides = overrides or {}
        if overrides and isinstance(spec, PreparedObject):
            raise ObjectFileError("prepared programs cannot be overridden: they are relocated already")
        try:
            self._load_btf(btf_features, btf_raw)
            self._create_maps(map_sizes or {})
            self._load_programs(wanted, overrides, log_level)
        except BaseException:
            self.close()
            raise

    # --- steps --------------------------------------------------------------------------------------
    def _load_btf(self, features: Optional[Iterable[str]], sanitized: Optional[bytes] = None) -> None:
        if isinstance(self.spec, PreparedObject):
            self.warnings += self.spec.warnings
            raw = self.spec.btf_raw
        elif self.spec.btf is not None and sanitized is not None:
            raw = sanitized
        elif self.spec.btf is not None:
            from netbee.loader.btf import sanitize
            if features is None:
                from netbee.loader.features import btf_features
                features = btf_features()
            raw = None
            try:
                raw = sanitize(self.spec.btf, features).to_bytes()
            except NetBeeError as e:
                self.warnings.append(f"object BTF not loaded, continuing without it: {e}")
        else:
            raw = None
        if raw is None:
            return
        try:
            self.btf = LoadedBtf(raw)
            self.btf_raw = raw
        except NetBeeError as e:
            # like libbpf: go on without object BTF (no func/line info), say so
            self.warnings.append(f"object BTF not loaded, continuing without it: {e}")

    def _create_maps(self, sizes: Dict[str, int]) -> None:
        bad = [n for n in sizes if n not in self.spec.maps]
        if bad:
            raise ObjectFileError(f"map_sizes names unknown map(s): {', '.join(bad)}")
        mmapable = None
        for name, mspec in self.spec.maps.items():
            if mspec.data is not None and mmapable is None:
                from netbee.loader.features import mmapable_array
                mmapable = mmapable_array()[0]
            self.maps[name] = Map.from_spec(mspec, btf_fd=self.btf.fd if self.btf else None,
                                            max_entries=sizes.get(name), mmapable=bool(mmapable))

    def _prepare_program(self, pspec: Any, override: Dict[str, Any],
                         cand_cache: Dict[int, List[int]]) -> PreparedProgram:
        """Everything before the verifier but the map fds: CO-RE, the BTF attach target, the
        func/line records (pure Python)."""
        if isinstance(pspec, PreparedProgram):
            return pspec
        kind, target = override.get("kind", pspec.kind), override.get("attach_target", pspec.attach_target)
        bad = set(override) - {"kind", "attach_target"}
        if bad:
            raise ObjectFileError(f"cannot override {sorted(bad)[0]!r} of program {pspec.name!r}")
        if kind not in KINDS:
            raise ObjectFileError(f"program {pspec.name!r}: unsupported kind {kind!r}")
        for r in pspec.map_relocs:
            if r.map_name not in self.maps:
                raise ObjectFileError(f"program {pspec.name!r} uses unknown map {r.map_name!r}")
        insns = bytearray(pspec.insns)
        poisoned: List[Any] = []
        if pspec.core_relos:
            from netbee.loader import core  # Loader I / CO-RE engineer's module
            if self.spec.btf is None or self.kernel_btf is None:
                raise ObjectFileError(f"program {pspec.name!r} has CO-RE relocations but "
                                      "object or kernel BTF is missing")
            fixups = core.relocate(pspec.name, pspec.core_relos, self.spec.btf, self.kernel_btf, cand_cache)
            poisoned = core.apply_fixups(insns, fixups)
        if pspec.kfunc_calls:
            from netbee.loader import kfunc
            kfunc.resolve(pspec.name, insns, pspec.kfunc_calls, self.kernel_btf)
        attach_btf_id = 0
        if kind in BTF_TARGET_KINDS:
            if self.kernel_btf is None:
                raise ObjectFileError(f"program {pspec.name!r} ({kind}) needs the kernel BTF")
            attach_btf_id = resolve_attach_btf_id(self.kernel_btf, kind, target)
        func_info = line_info = b""
        if self.btf is not None:
            func_info = func_info_records(pspec.func_info)
            line_info = (line_info_records(pspec.line_info, self.btf) if pspec.line_info else None) or b""
        return PreparedProgram(pspec.name, kind, target, pspec.license or self.spec.license or "GPL",
                               bytes(insns), list(pspec.map_relocs), attach_btf_id, func_info, line_info,
                               [tuple(p) for p in poisoned], dict(getattr(pspec, "replaced_at", {})))

    def _load_programs(self, wanted: List[str], overrides: Dict[str, Dict[str, Any]], log_level: int) -> None:
        """Prepare each program in turn and hand it to the verifier, several at a time.

        The verifier runs in the calling thread and ctypes releases the GIL during bpf(2), so
        worker threads overlap verification on several CPUs, and with the preparation of the
        next programs here. Every started load is waited for; the loaded programs land in
        self.programs in the requested order (close() frees them), and the first failure in that
        order is raised. A program that fails to prepare stops the ones after it from starting.
        """
        cand_cache: Dict[int, List[int]] = {}
        workers = load_workers(len(wanted))
        if workers <= 1:
            for name in wanted:
                p = self._prepare_program(self.spec.programs[name], overrides.get(name, {}), cand_cache)
                self.programs[name] = self._load_prepared(p, log_level)
            return
        # A few plain threads and a queue: concurrent.futures would cost ~7 ms of imports here.
        import threading

        jobs: List[list] = []            # [name, prepared, program, error], in program order
        queue: "deque[list]" = deque()
        cv = threading.Condition()
        done = [False]                   # no more jobs will come

        def work() -> None:
            while True:
                with cv:
                    while not queue and not done[0]:
                        cv.wait()
                    if not queue:
                        return
                    job = queue.popleft()
                try:
                    job[2] = self._load_prepared(job[1], log_level)
                except BaseException as e:  # handed to the calling thread
                    job[3] = e

        threads = [threading.Thread(target=work, name=f"netbee-load-{i}", daemon=True) for i in range(workers)]
        for t in threads:
            t.start()
        # Longest first: the last program to start is then a short one, and no worker is left
        # verifying a long one alone at the end (instruction count stands in for the
        # verifier's work). Before them the programs with next to no CO-RE relocation: the
        # first relocation of a start is the dearest (~2-3 ms: the kernel types are decoded
        # then), and they keep a worker verifying meanwhile instead of idle.
        def cheap_then_longest(name: str) -> tuple:
            p = self.spec.programs[name]
            return (len(getattr(p, "core_relos", ())) > CHEAP_RELOS, -len(p.insns))

        order = sorted(wanted, key=cheap_then_longest)
        try:
            for name in order:
                try:
                    p = self._prepare_program(self.spec.programs[name], overrides.get(name, {}), cand_cache)
                except Exception as e:
                    jobs.append([name, None, None, e])
                    break
                job = [name, p, None, None]
                jobs.append(job)
                with cv:
                    queue.append(job)
                    cv.notify()
                # Let a woken worker take the GIL now and enter bpf(2) (which releases it):
                # otherwise it waits for this thread's switch interval (5 ms), and every
                # program was prepared before the first one reached the verifier.
                time.sleep(0)
        except BaseException:
            with cv:
                queue.clear()            # Ctrl-C: what has not started never starts
            raise
        finally:
            with cv:
                done[0] = True
                cv.notify_all()
            for t in threads:
                t.join()
            # what did load is kept, also on Ctrl-C, so close() frees it, in the requested order
            first: Optional[BaseException] = None
            by_name = {job[0]: job for job in jobs}
            for name in wanted:
                if name not in by_name:
                    continue
                _name, _p, prog, err = by_name[name]
                if prog is not None:
                    self.programs[name] = prog
                if err is not None and first is None:
                    first = err
        if first is not None:
            raise first

    def _load_prepared(self, p: PreparedProgram, log_level: int) -> Program:
        prepared, p = p, p.spliced()
        if p.poisoned:
            self.poisoned[p.name] = list(p.poisoned)
        insns = bytearray(p.insns)
        for r in p.map_relocs:
            m = self.maps.get(r.map_name)
            if m is None:
                raise ObjectFileError(f"program {p.name!r} uses unknown map {r.map_name!r}")
            I.set_src(insns, r.insn_index, r.src)
            I.set_imm(insns, r.insn_index, m.fd)
        use_btf = self.btf is not None
        try:
            prog = Program(p.name, p.kind, bytes(insns), license=p.license,
                           attach_target=p.attach_target, attach_btf_id=p.attach_btf_id,
                           btf=self.btf if use_btf else None,
                           func_info=p.func_info if use_btf else b"",
                           line_info=p.line_info if use_btf else b"", log_level=log_level)
        except VerifierError as e:
            if p.poisoned and POISON_MARK in e.log:
                why = "\n".join(f"  insn {idx}: {reason}" for idx, reason in p.poisoned)
                raise VerifierError(p.name, e.log + "\nCO-RE relocations that could not be "
                                    f"satisfied on this kernel:\n{why}", e.errno) from None
            raise
        self.prepared[p.name] = prepared   # as it came: a later with_body needs the function
        return prog

    def prepared_object(self) -> PreparedObject:
        """What a later collection needs to load the same programs again without the object
        file or the kernel BTF (before release_sources())."""
        if self.spec is None:
            raise NetBeeError("prepared_object() after release_sources()")
        return PreparedObject(self.spec.license, self.btf_raw, self.spec.maps, dict(self.spec.globals),
                              {n: self.prepared[n] for n in self.programs}, list(self.warnings))

    # --- lifecycle ----------------------------------------------------------------------------------
    def release_sources(self) -> None:
        """Forget the ObjectSpec and the kernel BTF: the loaded maps and programs no longer need
        them, and together they hold several MB for as long as the collection lives."""
        self.spec = None
        self.kernel_btf = None

    def close(self) -> None:
        """Release every program, map and the BTF; safe to call twice and from finally blocks."""
        for p in list(self.programs.values()):
            p.close()
        for m in list(self.maps.values()):
            m.close()
        if self.btf is not None:
            self.btf.close()
