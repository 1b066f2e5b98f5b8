"""ObjectSpec.from_path(..., replace={name: insns}): a function's body swapped before linking,
on the committed test object elf_basic (read_len: CO-RE relocations and a call to bump; bump:
map relocations) and on the real object's nb_filter_run."""
from __future__ import annotations

from pathlib import Path

import pytest

from netbee.loader import insn as I
from netbee.loader.elf import ObjectSpec
from netbee.loader.errors import ObjectFileError

ROOT = Path(__file__).resolve().parents[2]
BASIC = str(ROOT / "tests/bpf/elf_basic.bpf.o")
NETBEE = str(ROOT / "bpf/prebuilt/netbee.bpf.o")

# r0 = 7; r0 += 1; exit: three instructions, different from any original length
BODY = I.mov64_imm(0, 7) + I.Insn(I.BPF_ALU64 | I.BPF_ADD | I.BPF_K, 0, 0, 0, 1).encode() + I.exit_insn()


def _starts(spec, prog):
    return {fi.insn_off // 8: spec.btf.type(fi.type_id).name for fi in prog.func_info}


def _calls(prog):
    return {idx: idx + ins.imm + 1 for idx, ins in I.iter_insns(prog.insns) if ins.is_pseudo_call}


def test_replaced_leaf_function_drops_its_relocations_and_callees():
    plain = ObjectSpec.from_path(BASIC)
    spec = ObjectSpec.from_path(BASIC, replace={"read_len": BODY})
    for name in ("fe", "tpb_one"):
        old, new = plain.programs[name], spec.programs[name]
        assert old.subprograms == ["read_len", "bump"]
        assert new.subprograms == ["read_len"]          # bump was reached only through read_len
        at = {v: k for k, v in _starts(spec, new).items()}["read_len"]
        old_at = {v: k for k, v in _starts(plain, old).items()}["read_len"]
        assert at == old_at                              # the caller's own code is unchanged
        assert bytes(new.insns[at * 8:]) == BODY
        assert new.insns[:at * 8] == old.insns[:at * 8]
        # the call lands on the new body's first instruction
        assert sorted(_calls(new).values()) == [at]
        # func_info: the same BTF function, at its new place; nothing for bump
        assert [(fi.insn_off, fi.type_id) for fi in new.func_info] == \
            [(fi.insn_off, fi.type_id) for fi in old.func_info if fi.insn_off <= at * 8]
        # line_info: the caller's records, then exactly one at the body's first instruction
        mine = [li for li in new.line_info if li.insn_off >= at * 8]
        assert [li.insn_off for li in mine] == [at * 8]
        first_old = next(li for li in old.line_info if li.insn_off == old_at * 8)
        assert (mine[0].line, mine[0].file_name) == (first_old.line, first_old.file_name)
        assert list(new.line_info)[:-1] == [li for li in old.line_info if li.insn_off < at * 8]
        # read_len's CO-RE relocations and bump's map relocations are gone with them
        assert old.core_relos and not new.core_relos
        assert all(r.insn_index < at for r in new.map_relocs)
        assert [(r.map_name, r.insn_index) for r in new.map_relocs] == \
            [(r.map_name, r.insn_index) for r in old.map_relocs if r.insn_index < at]
    # programs that never reach read_len are byte for byte what they were
    for name in ("kp", "krp", "tpb_two", "tp_short"):
        assert spec.programs[name] == plain.programs[name]


def test_replaced_function_called_from_a_subprogram():
    """bump sits after read_len in fe: read_len's call to it follows the body's new place, and
    read_len keeps its relocations at unchanged offsets."""
    plain = ObjectSpec.from_path(BASIC)
    spec = ObjectSpec.from_path(BASIC, replace={"bump": BODY})
    old, new = plain.programs["fe"], spec.programs["fe"]
    starts = {v: k for k, v in _starts(spec, new).items()}
    assert new.subprograms == ["read_len", "bump"]
    assert new.insn_count == starts["bump"] + 3
    assert bytes(new.insns[starts["bump"] * 8:]) == BODY
    assert new.insns[:starts["bump"] * 8] == old.insns[:starts["bump"] * 8]
    assert set(_calls(new).values()) == {starts["read_len"], starts["bump"]}
    assert new.core_relos == old.core_relos
    assert not [r for r in new.map_relocs if r.insn_index >= starts["bump"]]
    assert [li.insn_off for li in new.line_info if li.insn_off >= starts["bump"] * 8] == [starts["bump"] * 8]
    offs = [li.insn_off for li in new.line_info]
    assert offs == sorted(offs) and offs[-1] < new.insn_count * 8
    # kp calls bump from its own code: the call targets the body too
    kp = spec.programs["kp"]
    at = {v: k for k, v in _starts(spec, kp).items()}["bump"]
    assert set(_calls(kp).values()) == {at} and bytes(kp.insns[at * 8:]) == BODY
    assert kp.insn_count < plain.programs["kp"].insn_count


def test_replacing_a_program_itself():
    spec = ObjectSpec.from_path(BASIC, replace={"kp": BODY})
    kp = spec.programs["kp"]
    assert bytes(kp.insns) == BODY and kp.subprograms == [] and not kp.map_relocs
    assert [fi.insn_off for fi in kp.func_info] == [0] and [li.insn_off for li in kp.line_info] == [0]


def test_replacement_with_program_subset_and_real_object():
    """The tracer's use: nb_filter_run in a subset of the prebuilt object's programs."""
    plain = ObjectSpec.from_path(NETBEE, programs=["tp_netif_rx", "nf_entry"])
    spec = ObjectSpec.from_path(NETBEE, programs=["tp_netif_rx", "nf_entry"],
                                replace={"nb_filter_run": BODY})
    for name in ("tp_netif_rx", "nf_entry"):
        old, new = plain.programs[name], spec.programs[name]
        assert "nb_filter_run" in old.subprograms and "nb_filter_run" in new.subprograms
        at = {v: k for k, v in _starts(spec, new).items()}["nb_filter_run"]
        assert bytes(new.insns[at * 8:at * 8 + len(BODY)]) == BODY
        assert at in _calls(new).values()
        # every record still points inside the program, in order, and every function has a
        # line record at its first instruction (the kernel refuses a program without one)
        n = new.insn_count
        lines = [li.insn_off for li in new.line_info]
        assert lines == sorted(lines) and lines[-1] < n * 8
        assert {fi.insn_off for fi in new.func_info} <= set(lines)
        assert all(r.insn_off < n * 8 for r in new.core_relos)
        assert all(r.insn_index < n for r in new.map_relocs)
        # the interpreter read cfg (.rodata); the body does not, so fewer map references
        assert len(new.map_relocs) < len(old.map_relocs)
        assert n < old.insn_count


def test_unknown_names_are_skipped_and_reported():
    plain = ObjectSpec.from_path(BASIC)
    spec = ObjectSpec.from_path(BASIC, replace={"nope": BODY, "bump": BODY})
    assert spec.replaced == {"bump"} and plain.replaced == set()
    only_unknown = ObjectSpec.from_path(BASIC, replace={"nope": BODY[:3]})   # not even checked
    assert only_unknown.replaced == set()
    assert {n: p.insns for n, p in only_unknown.programs.items()} == \
        {n: p.insns for n, p in plain.programs.items()}


def test_replacement_errors():
    with pytest.raises(ObjectFileError, match="whole number"):
        ObjectSpec.from_path(BASIC, replace={"bump": BODY[:-3]})
    with pytest.raises(ObjectFileError, match="whole number"):
        ObjectSpec.from_path(BASIC, replace={"bump": b""})
    call = I.Insn(I.OP_CALL, 0, I.BPF_PSEUDO_CALL, 0, 1).encode()
    with pytest.raises(ObjectFileError, match="relocation"):
        ObjectSpec.from_path(BASIC, replace={"bump": call + BODY})
    with pytest.raises(ObjectFileError, match="relocation"):
        ObjectSpec.from_path(BASIC, replace={"bump": I.ld_imm64(1, 0, I.BPF_PSEUDO_MAP_VALUE) + BODY})
    # a helper call needs no relocation: accepted
    ObjectSpec.from_path(BASIC, replace={"bump": I.call_helper(5) + BODY})


BODY2 = I.mov64_imm(0, 1) + I.exit_insn()


@pytest.mark.parametrize("path, function", [(NETBEE, "nb_filter_run"), (BASIC, "bump"), (BASIC, "read_len")])
def test_a_replaced_function_comes_last_so_another_body_swaps_in(path, function):
    """What prepared.PreparedProgram.with_body relies on: linking with another body changes
    nothing but the instructions from replaced_at on."""
    a = ObjectSpec.from_path(path, replace={function: BODY})
    b = ObjectSpec.from_path(path, replace={function: BODY2})
    reached = [n for n, p in a.programs.items() if function in p.replaced_at]
    assert reached
    for name in reached:
        pa, pb = a.programs[name], b.programs[name]
        at = pa.replaced_at[function]
        assert pb.replaced_at == pa.replaced_at and at * 8 + len(BODY) == len(pa.insns)
        assert bytes(pa.insns[at * 8:]) == BODY and bytes(pb.insns) == bytes(pa.insns[:at * 8]) + BODY2
        assert pb.map_relocs == pa.map_relocs and pb.core_relos == pa.core_relos
        assert pb.func_info == pa.func_info and list(pb.line_info) == list(pa.line_info)
        assert pa.subprograms[-1] == function
        # the calls still land on the body: at the start of the last function
        assert at in _calls(pa).values()
