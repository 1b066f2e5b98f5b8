"""Kernel string searches made by another process (netbee/loader/background_parse.py's child)
and taken by the parser of the same file: the same answers as searching here, and only for
the same unchanged file."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from netbee.loader import btf_index
from netbee.loader.btf import Btf, BtfKind
from netbee.loader.core import candidate_lookups
from netbee.loader.elf import ObjectSpec, UnlinkedObject

ROOT = Path(__file__).resolve().parents[2]
NETBEE = str(ROOT / "bpf/prebuilt/netbee.bpf.o")


@pytest.fixture(scope="module")
def vmlinux(vmlinux_copy) -> str:
    return str(vmlinux_copy)


def test_the_objects_look_ups_are_its_core_roots_and_kfuncs():
    names, prefixes = UnlinkedObject.from_path(NETBEE).kernel_lookups()
    assert {"sk_buff", "net_device", "sock", "nf_hook_state", "bpf_rdonly_cast"} <= names
    assert "sk_buff___" in prefixes and not any(p.startswith("bpf_rdonly_cast") for p in prefixes)
    # every root any program's CO-RE relocation names, and nothing local-only
    spec = ObjectSpec.from_path(NETBEE)
    relos = [r for p in spec.programs.values() for r in p.core_relos]
    assert candidate_lookups(spec.btf, relos)[0] <= names


def test_searched_elsewhere_is_what_a_search_here_finds(vmlinux):
    patterns = Btf.lookup_patterns(["sk_buff", "sock", "net", "no_such_type_anywhere"], ["sk_buff___"])
    key, found = Btf.search_kernel_strings(vmlinux, patterns)
    here = Btf.load_kernel(vmlinux)
    assert key == here._file_key
    assert found == {p: here._idx().positions(p) for p in patterns}
    assert found[b"no_such_type_anywhere\0"] == [] and len(found[b"sock\0"]) > 1


def test_taken_answers_need_no_search_and_give_the_same_ids(vmlinux, monkeypatch):
    names = ["sk_buff", "sock", "net_device", "bpf_rdonly_cast"]
    reference = Btf.parse(Path(vmlinux).read_bytes())
    expected = {n: reference.find(n) for n in names}
    flavors = reference.ids_with_prefix("sk_buff___")
    key, found = Btf.search_kernel_strings(vmlinux, Btf.lookup_patterns(names, ["sk_buff___"]))
    btf = Btf.load_kernel(vmlinux)
    assert btf.use_known_positions(key, found)

    def no_search(*a):
        raise AssertionError("searched the string table although the answer was known")

    monkeypatch.setattr(btf_index, "string_positions", no_search)
    assert {n: btf.find(n) for n in names} == expected and expected["sk_buff"]
    assert btf.ids_with_prefix("sk_buff___") == flavors
    assert btf.find("bpf_rdonly_cast", BtfKind.FUNC) == reference.find("bpf_rdonly_cast", BtfKind.FUNC)


def test_answers_for_another_file_are_refused(vmlinux, tmp_path):
    other = tmp_path / "vmlinux-other"
    shutil.copyfile(vmlinux, other)
    key, found = Btf.search_kernel_strings(str(other), [b"sk_buff\0"])
    assert not Btf.load_kernel(vmlinux).use_known_positions(key, {b"sk_buff\0": [1]})
    assert not Btf.parse(Path(vmlinux).read_bytes()).use_known_positions(key, found)   # not a file load


def test_an_elf_or_missing_file_gives_no_answers(tmp_path):
    assert Btf.search_kernel_strings(NETBEE, [b"sk_buff\0"]) is None
    assert Btf.search_kernel_strings(str(tmp_path / "absent"), [b"sk_buff\0"]) is None
