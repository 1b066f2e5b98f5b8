"""Every program of bpf/prebuilt/netbee.bpf.o passes the verifier with NetBee's own loader.

Tracepoint-backend programs (tp_btf, netfilter) load on this machine. kprobe and fentry programs
need kernels that allow them: those tests carry requires_kernel and run in the QEMU guests
(Debian 6.1 / 6.12), attach targets resolved from netbee/hooks.py like the tracer does.

Each program is verified with the default configuration (no filter) and with a "stress"
configuration, NB_MAX_RULES filter rules of every field kind plus want_stack: cfg is frozen
.rodata, so the verifier walks exactly the rules configured and the worst case must fit too.
Both run twice: with the object's C filter interpreter, and ("-generated") with the code
netbee/filter_codegen.py generates from the same rules in place of nb_filter_run, as the tracer
loads it by default.
"""
from __future__ import annotations

import functools
import pathlib
from typing import Dict, List, Optional

import pytest

from netbee import abi, filter_codegen, hooks
from netbee.filter import Rule, encode_rules
from netbee.loader.btf import Btf, BtfKind
from netbee.loader.collection import Collection
from netbee.loader.elf import ObjectSpec
from netbee.loader.errors import NetBeeError

OBJ = pathlib.Path(__file__).resolve().parents[2] / "bpf" / "prebuilt" / "netbee.bpf.o"
CONFIGS = ("default", "stress", "default-generated", "stress-generated")


def _rule(op: int, field: int = 0, family: int = 0) -> Rule:
    return Rule(op, field, family=family, lo=1000, hi=2000, value=7,
                addr=bytes([10, 200]) + bytes(14), mask=b"\xff" * 16)


def stress_rules() -> List[Rule]:
    """A well-formed postfix program of exactly NB_MAX_RULES entries using every field kind:
    (t t OR) then seven times (t t OR|AND) AND|REQUIRE, then NOT (REQUIRE: the early exit)."""
    kinds = [f for f in abi.RuleField if f != abi.RuleField.TRUE]
    terms = iter([(kinds[i % len(kinds)], 6 if i & 2 else 4) for i in range(16)])
    rules = [_rule(abi.RuleOp.TERM, *next(terms)), _rule(abi.RuleOp.TERM, *next(terms)), _rule(abi.RuleOp.OR)]
    for i in range(7):
        rules += [_rule(abi.RuleOp.TERM, *next(terms)), _rule(abi.RuleOp.TERM, *next(terms)),
                  _rule(abi.RuleOp.AND if i & 1 else abi.RuleOp.OR),
                  _rule(abi.RuleOp.AND if i % 3 else abi.RuleOp.REQUIRE)]
    rules.append(_rule(abi.RuleOp.NOT))
    assert len(rules) == abi.NB_MAX_RULES
    return rules


def stress_config() -> bytes:
    rules = stress_rules()
    return abi.build_config(encode_rules(rules), len(rules), want_stack=True, wakeup_bytes=65536)


@functools.lru_cache(maxsize=None)
def kernel_btf() -> Btf:
    return Btf.load_kernel()


@functools.lru_cache(maxsize=None)
def kallsyms() -> frozenset:
    with open("/proc/kallsyms") as f:
        return frozenset(line.split()[2] for line in f)


def resolve(target: hooks.Target) -> Optional[str]:
    """The attach symbol the tracer would pick: kallsyms (and BTF FUNC for fentry/fexit)."""
    for sym in target.symbols:
        if sym not in kallsyms():
            continue
        if target.kind in ("fentry", "fexit") and not kernel_btf().find(sym, BtfKind.FUNC):
            continue
        return sym
    return None


@functools.lru_cache(maxsize=None)
def object_spec(config: str) -> ObjectSpec:
    """One parse of the object per configuration (set_global changes the spec's .rodata)."""
    stress, generated = config.startswith("stress"), config.endswith("-generated")
    replace = None
    if generated:
        replace = {filter_codegen.FUNCTION: filter_codegen.compile_rules(stress_rules() if stress else [])}
    spec = ObjectSpec.from_path(str(OBJ), replace=replace)
    assert (filter_codegen.FUNCTION in spec.replaced) == generated
    if stress:
        # the interpreter reads the rules from cfg; generated code has them in its instructions
        spec.set_global("cfg", stress_config())
    return spec


def load(program: str, config: str, overrides: Optional[Dict[str, Dict[str, str]]] = None) -> int:
    with Collection(object_spec(config), kernel_btf=kernel_btf(), programs=[program],
                    overrides=overrides or {}) as coll:
        fd = coll.programs[program].fd
        assert fd > 0
        return fd


def load_all(programs: List[str], config: str, overrides: Dict[str, Dict[str, str]]) -> List[str]:
    """Load programs together in one Collection (one map set, one CO-RE candidate cache): in the
    emulated guests a load per program cost seconds of setup each. A Collection stops at its first
    failure, so on any failure every program is retried alone: the result names each one that
    does not load, with its error."""
    try:
        with Collection(object_spec(config), kernel_btf=kernel_btf(), programs=programs,
                        overrides=overrides) as coll:
            bad = [p for p in programs if coll.programs[p].fd <= 0]
            if not bad:
                return []
    except NetBeeError:
        pass
    failures = []
    for p in programs:
        try:
            load(p, config, {p: overrides[p]} if p in overrides else None)
        except (NetBeeError, AssertionError) as e:
            failures.append(f"{p}: {str(e)[-1500:]}")
    return failures


def _targets(backend: str, kinds: tuple) -> List[hooks.Target]:
    """Every target of backend's table whose program kind is in kinds (each program once)."""
    seen: Dict[str, hooks.Target] = {}
    for h in hooks.hooks_for(backend):
        for alt in h.alternatives(backend):
            for t in alt:
                if t.kind in kinds and t.program not in seen:
                    seen[t.program] = t
    return list(seen.values())


TRACEPOINT_PROGRAMS = [t.program for t in _targets("tracepoint", ("tp_btf", "netfilter"))]
KPROBE_TARGETS = _targets("kprobe", ("kprobe", "kretprobe"))
FENTRY_TARGETS = _targets("fentry", ("fentry", "fexit"))


def test_every_program_is_covered() -> None:
    """No program in the object escapes these tests."""
    spec = ObjectSpec.from_path(str(OBJ))
    covered = set(TRACEPOINT_PROGRAMS) | {t.program for t in KPROBE_TARGETS + FENTRY_TARGETS}
    assert set(spec.programs) == covered


@pytest.mark.kernel
@pytest.mark.backend("tracepoint")
@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("program", TRACEPOINT_PROGRAMS)
def test_tracepoint_program_verifies(program: str, config: str) -> None:
    load(program, config)


def _kernel_symbol(target: hooks.Target) -> Optional[str]:
    sym = resolve(target)
    if target.program == "kp_kfree_skb_reason" and sym is None and "sk_skb_reason_drop" in kallsyms():
        # 6.12+: kfree_skb_reason is inlined and sk_skb_reason_drop takes its place (hooks.py
        # lists both alternatives); verify the program against the function that exists.
        sym = "sk_skb_reason_drop"
    if target.program == "kp_sk_skb_reason_drop" and sym is None and "kfree_skb_reason" in kallsyms():
        sym = "kfree_skb_reason"    # 6.1: verifiable anywhere a kprobe can go
    return sym


def _kernel_programs(targets: List[hooks.Target], config: str) -> None:
    """Every target's program verifies against the symbol the tracer would attach to; the failure
    message lists every program that has no symbol or does not load."""
    assert targets
    missing = []
    overrides: Dict[str, Dict[str, str]] = {}
    for t in targets:
        sym = _kernel_symbol(t)
        if sym is None:
            missing.append(f"{t.program}: none of {t.symbols} is in this kernel")
        else:
            overrides[t.program] = {"attach_target": sym}
    failures = missing + load_all(list(overrides), config, overrides)
    assert not failures, f"{len(failures)} of {len(targets)} programs ({config}) do not verify:\n" + \
        "\n".join(failures)


@pytest.mark.kernel
@pytest.mark.requires_kernel("kprobe")
@pytest.mark.backend("kprobe")
@pytest.mark.parametrize("config", CONFIGS)
def test_kprobe_programs_verify(config: str) -> None:
    _kernel_programs(KPROBE_TARGETS, config)


@pytest.mark.kernel
@pytest.mark.requires_kernel("fentry")
@pytest.mark.backend("fentry")
@pytest.mark.parametrize("config", CONFIGS)
def test_fentry_programs_verify(config: str) -> None:
    _kernel_programs(FENTRY_TARGETS, config)
