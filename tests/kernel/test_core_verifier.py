"""CO-RE poisoning against the real verifier: an unsatisfiable relocation in dead code loads, a
reachable one is refused at the poisoned call.  tests/bpf/core_verifier.bpf.o, loaded through
Collection with this machine's kernel BTF."""
from __future__ import annotations

import pathlib

import pytest

from netbee.loader.btf import Btf
from netbee.loader.collection import Collection
from netbee.loader.elf import ObjectSpec
from netbee.loader.errors import VerifierError

pytestmark = pytest.mark.kernel

OBJ = pathlib.Path(__file__).resolve().parent.parent / "bpf" / "core_verifier.bpf.o"


@pytest.fixture(scope="module")
def kbtf() -> Btf:
    return Btf.load_kernel()


def test_guarded_missing_field_and_enum_load(kbtf):
    spec = ObjectSpec.from_path(str(OBJ))
    with Collection(spec, kbtf, programs=["core_guarded"]) as coll:
        assert coll.programs["core_guarded"].fd >= 0
        poisoned = coll.poisoned["core_guarded"]
        # the missing field's load and the missing enumerator's value, both in dead branches
        assert len(poisoned) == 2
        assert any("nb_no_such_field" in why and "'0:1'" in why for _, why in poisoned)
        assert any("SKB_DROP_REASON_NB_NO_SUCH_REASON" in why for _, why in poisoned)


def test_reachable_poison_is_rejected_with_reason(kbtf):
    spec = ObjectSpec.from_path(str(OBJ))
    with pytest.raises(VerifierError) as err:
        Collection(spec, kbtf, programs=["core_unguarded"])
    log = err.value.log
    assert "unknown#195896080" in log
    assert "core_unguarded" in log and "struct sk_buff" in log and "'0:1'" in log
