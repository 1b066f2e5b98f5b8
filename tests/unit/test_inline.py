"""netbee/loader/inline.py: a program's last function copied into its call sites. The hand-made
programs run on a small register-only evaluator before and after, on many inputs; the real
object's programs with a generated filter lose the call and keep every record consistent."""
from __future__ import annotations

import struct
from pathlib import Path

import pytest

from netbee import filter_codegen
from netbee.filter import compile_filter
from netbee.loader import insn as I
from netbee.loader.elf import ObjectSpec
from netbee.loader.inline import FUNC_INFO, LINE_INFO, splice_blockers, splice_last_function

ROOT = Path(__file__).resolve().parents[2]
NETBEE = str(ROOT / "bpf/prebuilt/netbee.bpf.o")
MASK = (1 << 64) - 1


def alu(op: int, dst: int, imm: int) -> bytes:
    return I.Insn(I.BPF_ALU64 | op | I.BPF_K, dst, 0, 0, imm).encode()


def alu_x(op: int, dst: int, src: int) -> bytes:
    return I.Insn(I.BPF_ALU64 | op | I.BPF_X, dst, src, 0, 0).encode()


def jmp(op: int, dst: int, imm: int, off: int) -> bytes:
    return I.Insn(I.BPF_JMP | op | I.BPF_K, dst, 0, off, imm).encode()


def call(rel: int) -> bytes:
    return I.Insn(I.OP_CALL, 0, I.BPF_PSEUDO_CALL, 0, rel).encode()


MOV, ADD, MUL = I.BPF_MOV, I.BPF_ADD, 0x20


def run(insns: bytes, r1: int) -> int:
    """Evaluate a program of mov/add/mul, conditional jumps, ja, gotol, pseudo calls and exits
    (a call gets fresh r1-r5 garbage except its arguments, and r6-r9 back, as the kernel does)."""
    regs = [0] * 11
    regs[1] = r1
    frames = []
    pc = 0
    for _ in range(10_000):
        ins = I.decode(insns, pc)
        cls, op = ins.cls, ins.opcode & 0xF0
        src_val = regs[ins.src] if ins.opcode & I.BPF_X else ins.imm & MASK
        if cls == I.BPF_ALU64:
            regs[ins.dst] = {MOV: src_val, ADD: regs[ins.dst] + src_val,
                             MUL: regs[ins.dst] * src_val}[op] & MASK
        elif ins.opcode == I.OP_CALL:
            frames.append((pc + 1, regs[6:10]))
            pc = pc + ins.imm + 1
            continue
        elif ins.opcode == I.OP_EXIT:
            if not frames:
                return regs[0]
            pc, saved = frames.pop()
            regs[6:10] = saved
            regs[2:6] = [0xDEAD] * 4    # a call leaves r1-r5 unusable
            continue
        elif cls == I.BPF_JMP32 and op == I.BPF_JA:
            pc += ins.imm + 1
            continue
        elif cls == I.BPF_JMP:
            take = {I.BPF_JA: True, I.BPF_JEQ: regs[ins.dst] == src_val,
                    I.BPF_JGT: regs[ins.dst] > src_val}[op]
            pc += (ins.off if take else 0) + 1
            continue
        else:
            raise AssertionError(f"evaluator lacks opcode {ins.opcode:#x}")
        pc += 1
    raise AssertionError("no exit")


# f(x) = x > 10 ? 3x : x + 100: two exits and an inner jump
FUNC = (jmp(I.BPF_JGT, 1, 10, 3)         # 0: if r1 > 10 goto 4
        + alu_x(MOV, 0, 1)               # 1
        + alu(ADD, 0, 100)               # 2
        + I.exit_insn()                  # 3
        + alu_x(MOV, 0, 1)               # 4
        + alu(MUL, 0, 3)                 # 5
        + I.exit_insn())                 # 6
SITES = [4, 10]


def f(x: int) -> int:
    return 3 * x if x > 10 else x + 100


def program() -> tuple:
    """main calls FUNC twice and a helper subprogram once, with jumps forward and back across
    the calls (a loop that runs twice) and a gotol; returns (insns, start of FUNC, func_info,
    line_info)."""
    main = [
        alu_x(MOV, 6, 1),                # 0  r6 = x
        alu(MOV, 8, 0),                  # 1  r8 = 0 (rounds)
        jmp(I.BPF_JEQ, 6, 0, 5),         # 2  if x == 0 goto 8, over the first call
        alu_x(MOV, 1, 6),                # 3
        None,                            # 4  call FUNC
        alu_x(MOV, 7, 0),                # 5  r7 = f(x)
        jmp(I.BPF_JA, 0, 0, 2),          # 6  goto 9
        jmp(I.BPF_JA, 0, 0, 0),          # 7
        alu(MOV, 7, 1),                  # 8  r7 = 1
        alu_x(MOV, 1, 7),                # 9
        None,                            # 10 call FUNC
        alu_x(ADD, 7, 0),                # 11 r7 += f(r7)
        None,                            # 12 call HELPER: r0 = 5
        alu_x(ADD, 7, 0),                # 13
        alu(ADD, 8, 1),                  # 14 r8 += 1
        I.Insn(I.BPF_JMP32 | I.BPF_JA, 0, 0, 0, 1).encode(),   # 15 gotol 17
        alu(MOV, 7, 0),                  # 16 (skipped)
        jmp(I.BPF_JEQ, 8, 1, -15),       # 17 first round: goto 3, back over both calls
        alu_x(MOV, 0, 7),                # 18
        I.exit_insn(),                   # 19
    ]
    helper = [alu(MOV, 0, 5), I.exit_insn()]
    helper_at = len(main)
    func_at = helper_at + len(helper)
    for idx in SITES:
        main[idx] = call(func_at - idx - 1)
    main[12] = call(helper_at - 12 - 1)
    insns = b"".join(main) + b"".join(helper) + FUNC
    func_info = b"".join(FUNC_INFO.pack(o, t) for o, t in ((0, 1), (helper_at, 2), (func_at, 3)))
    line_info = b"".join(LINE_INFO.pack(o, 7, 8, (o + 1) << 10)
                         for o in (0, SITES[0], SITES[1], helper_at, func_at, func_at + 4))
    return insns, func_at, func_info, line_info


INPUTS = [0, 1, 5, 10, 11, 12, 99, 2 ** 40]


@pytest.mark.parametrize("x", INPUTS)
def test_the_evaluator_and_program_agree_with_python(x):
    insns, _, _, _ = program()
    assert run(insns, x) == f(x) + f(f(x)) + 5     # the second round starts at the first call


@pytest.mark.parametrize("x", INPUTS)
def test_spliced_program_computes_the_same(x):
    insns, at, fi, li = program()
    s = splice_last_function(insns, at, fi, li)
    assert s.sites == SITES
    assert run(s.insns, x) == run(insns, x)
    k = I.count(FUNC)
    assert I.count(s.insns) == at + len(SITES) * (k - 1)
    assert not any(ins.opcode == I.OP_EXIT for _, ins in I.iter_insns(s.insns[:(SITES[0] + k) * 8])), \
        "the copy's exits should have become jumps"


def test_records_move_and_the_function_goes():
    insns, at, fi, li = program()
    s = splice_last_function(insns, at, fi, li)
    grow = I.count(FUNC) - 1
    helper_at = at - 2
    funcs = [FUNC_INFO.unpack_from(s.func_info, o) for o in range(0, len(s.func_info), FUNC_INFO.size)]
    assert funcs == [(0, 1), (helper_at + 2 * grow, 2)]
    lines = [LINE_INFO.unpack_from(s.line_info, o)[0] for o in range(0, len(s.line_info), LINE_INFO.size)]
    assert lines == [0, SITES[0], SITES[1] + grow, helper_at + 2 * grow]   # a call's line starts its copy


def test_blockers():
    assert splice_blockers(FUNC) is None
    assert "call" in splice_blockers(call(0) + I.exit_insn())
    assert "ld_imm64" in splice_blockers(I.ld_imm64(0, 1) + I.exit_insn())
    stack = I.ldx_mem(I.BPF_W, 0, 10, -8) + I.exit_insn()
    assert "beyond r5" in splice_blockers(stack)
    callee_saved = alu(MOV, 6, 1) + I.exit_insn()
    assert "beyond r5" in splice_blockers(callee_saved)
    assert "outside" in splice_blockers(jmp(I.BPF_JA, 0, 0, 5) + I.exit_insn())
    insns, at, _, _ = program()
    with pytest.raises(ValueError, match="cannot be spliced"):
        splice_last_function(insns + call(-1) + I.exit_insn(), at)   # FUNC and a call: not a leaf


def test_a_reference_other_than_a_call_keeps_the_function():
    body = alu(MOV, 0, 1) + I.exit_insn()
    main = I.Insn(I.OP_LD_IMM64, 2, I.BPF_PSEUDO_FUNC, 0, 3).encode() + bytes(8) + alu(MOV, 0, 0) + I.exit_insn()
    with pytest.raises(ValueError, match="address"):
        splice_last_function(main + body, 4)


def _filter_body(expr: str) -> bytes:
    return filter_codegen.compile_rules(compile_filter(expr))


@pytest.mark.parametrize("prog", ["nf_entry", "tp_netif_receive_skb", "tp_kfree_skb", "kp_ip_rcv"])
def test_real_programs_lose_the_filter_call(prog):
    spec = ObjectSpec.from_path(NETBEE, programs={prog},
                                replace={filter_codegen.FUNCTION: _filter_body("host 10.0.0.7 and tcp port 80")})
    p = spec.programs[prog]
    at = p.replaced_at[filter_codegen.FUNCTION]
    fi = b"".join(FUNC_INFO.pack(r.insn_off // 8, r.type_id) for r in p.func_info)
    li = b"".join(struct.pack("=I", r.insn_off // 8) + bytes(12) for r in p.line_info)
    s = splice_last_function(bytes(p.insns), at, fi, li)
    assert s.sites, "the program never called the filter"
    n = I.count(s.insns)
    for i, ins in I.iter_insns(s.insns):
        if ins.is_pseudo_call:
            target = i + ins.imm + 1
            assert 0 <= target < n
            assert target in {FUNC_INFO.unpack_from(s.func_info, o)[0] for o in range(0, len(s.func_info), 8)}
    assert len(s.func_info) == len(fi) - FUNC_INFO.size
    offs = [LINE_INFO.unpack_from(s.line_info, o)[0] for o in range(0, len(s.line_info), LINE_INFO.size)]
    assert offs == sorted(offs) and offs[-1] < n and offs[0] == 0
    # every map reference still sits on an ld_imm64
    for r in p.map_relocs:
        assert I.decode(s.insns, s.new_index(r.insn_index)).opcode == I.OP_LD_IMM64


def test_prepared_program_is_loaded_spliced_and_cached_whole():
    """PreparedProgram.spliced(): map relocations and poisoned CO-RE slots move with their
    instructions; the function leaves replaced_at; a body that cannot be spliced stays a call."""
    from netbee.loader.map_spec import MapReloc
    from netbee.loader.prepared import PreparedProgram

    insns, tail_at, fi, li = program()
    p = PreparedProgram("p", "tracepoint", "net/x", "GPL", insns,
                        map_relocs=[MapReloc(SITES[1] + 1, "m", I.BPF_PSEUDO_MAP_FD, 0)],
                        func_info=fi, line_info=li, poisoned=[(SITES[1] + 2, "why")],
                        replaced_at={"f": tail_at})
    s = p.spliced()
    grow = I.count(FUNC) - 1
    assert s.replaced_at == {} and p.replaced_at == {"f": tail_at}
    assert [r.insn_index for r in s.map_relocs] == [SITES[1] + 1 + 2 * grow]
    assert s.poisoned == [(SITES[1] + 2 + 2 * grow, "why")]
    assert I.count(s.insns) == tail_at + 2 * grow
    called = PreparedProgram("p", "tracepoint", "net/x", "GPL", insns + call(-1) + I.exit_insn(),
                             replaced_at={"f": tail_at})
    assert called.spliced() is called
    assert PreparedProgram("p", "tracepoint", "net/x", "GPL", insns).spliced().insns == insns
