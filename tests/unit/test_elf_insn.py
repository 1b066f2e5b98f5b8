"""insn.py: encoding, decoding and in-place edits."""
from __future__ import annotations

from netbee.loader import insn as I


def test_encode_decode_round_trip():
    ins = I.Insn(0x61, dst=3, src=10, off=-8, imm=-2)
    raw = ins.encode()
    assert raw == bytes([0x61, 0xA3, 0xF8, 0xFF, 0xFE, 0xFF, 0xFF, 0xFF])
    assert I.decode(raw, 0) == ins
    assert ins.cls == I.BPF_LDX


def test_ld_imm64_pair_and_edits():
    buf = bytearray(I.ld_imm64(1, 0x1122334455667788, src=I.BPF_PSEUDO_MAP_VALUE) + I.exit_insn())
    assert I.count(buf) == 3
    first = I.decode(buf, 0)
    assert first.is_ld_imm64 and first.src == I.BPF_PSEUDO_MAP_VALUE and first.dst == 1
    assert I.ld_imm64_value(buf, 0) == 0x1122334455667788
    I.set_ld_imm64_value(buf, 0, -1)
    assert I.ld_imm64_value(buf, 0) == 0xFFFFFFFFFFFFFFFF
    I.set_src(buf, 0, I.BPF_PSEUDO_FUNC)
    assert I.decode(buf, 0).is_pseudo_func and I.decode(buf, 0).dst == 1
    I.set_imm(buf, 0, 0xFFFFFFFF)          # unsigned input is taken modulo 2**32
    assert I.decode(buf, 0).imm == -1
    I.set_off(buf, 2, -3)
    assert I.decode(buf, 2).off == -3 and I.decode(buf, 2).opcode == I.OP_EXIT


def test_calls():
    call = I.Insn(I.OP_CALL, src=I.BPF_PSEUDO_CALL, imm=5)
    assert call.is_call and call.is_pseudo_call
    helper = I.decode(I.call_helper(1), 0)
    assert helper.is_call and not helper.is_pseudo_call and helper.imm == 1
    kfunc = I.Insn(I.OP_CALL, src=I.BPF_PSEUDO_KFUNC_CALL, imm=77)
    assert not kfunc.is_pseudo_call
    mov = I.decode(I.mov64_imm(0, 7), 0)
    assert mov.cls == I.BPF_ALU64 and mov.imm == 7
    assert [i for i, _ in I.iter_insns(I.mov64_imm(0, 0) + I.exit_insn())] == [0, 1]


def test_filter_codegen_encoders_match_clang():
    """The encoders filter_codegen uses give clang's bytes (llvm-objdump-19 of nb_filter_run)."""
    assert I.ldx_mem(I.BPF_H, 3, 1, 0x34) == bytes.fromhex("6913340000000000")      # r3 = *(u16 *)(r1 + 0x34)
    assert I.alu32_imm(I.BPF_AND, 4, 0x202) == bytes.fromhex("5404000002020000")    # w4 &= 0x202
    assert I.jmp32_imm(I.BPF_JEQ, 4, 6, 5) == bytes.fromhex("1604050006000000")     # if w4 == 0x6 goto +5
    assert I.jmp32_imm(I.BPF_JNE, 4, 0, 0x18) == bytes.fromhex("5604180000000000")  # if w4 != 0x0 goto +24
    assert I.ja(8) == bytes.fromhex("0500080000000000")                              # goto +8
    assert I.jmp32_imm(I.BPF_JLE, 2, 0xFFFFFFFF, -1) == bytes.fromhex("b602ffffffffffff")
    assert I.ldx_mem(I.BPF_W, 2, 1, 102) == bytes.fromhex("6112660000000000")
    assert I.ldx_mem(I.BPF_B, 2, 1, 81) == bytes.fromhex("7112510000000000")
