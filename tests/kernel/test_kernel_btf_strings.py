"""The premise of the kernel BTF's fast name look-ups (btf_index.NameIndex.unique_strings): the
running kernel's BTF, written by pahole through libbpf, stores each string once, whole, and
every type's name offset is the start of a string. Checked here and in the QEMU guests (6.1,
6.12): a kernel whose BTF broke it would fail this, not look up names wrongly unseen."""
from __future__ import annotations

import pytest

from netbee.loader import btf_index
from netbee.loader.btf import KERNEL_BTF_PATH, Btf

pytestmark = [pytest.mark.kernel, pytest.mark.requires_kernel()]

NAMES = ["sk_buff", "btf_trace_netif_rx", "bpf_rdonly_cast", "skb_drop_reason", "net", "sock",
         "task_struct", "net_device", "nf_hook_state", "bpf_nf_ctx", "btf_trace_kfree_skb",
         "ktime_get_coarse_real_ts64", "int", "no_such_type_a"]


def _raw() -> bytes:
    with open(KERNEL_BTF_PATH, "rb") as f:
        return f.read()


def test_each_string_once_and_names_at_string_starts():
    btf = Btf.parse(_raw())
    strings, words = btf._strings, btf._words
    parts = strings.split(b"\0")[:-1]   # the table ends with a NUL
    assert len(set(parts)) == len(parts), "a string is stored twice"
    mid = [n for n, off in enumerate(btf._offsets) if words[off] and strings[words[off] - 1] != 0]
    assert not mid, f"types named in the middle of a string: ids {mid[:10]}"


def test_the_running_kernel_looks_up_as_a_full_search_does():
    full = Btf.parse(_raw())
    assert not full._idx().unique_strings
    fast = Btf.load_kernel()
    assert fast._idx().unique_strings
    for name in NAMES:
        assert fast.find(name) == full.find(name), name
    # what the object's reader searches ahead: whole names as whole strings, prefixes everywhere
    found = Btf.search_kernel_strings(KERNEL_BTF_PATH, Btf.lookup_patterns(NAMES, ["sk_buff___"]))
    assert found is not None
    for pattern in Btf.lookup_patterns(NAMES, []):
        assert found[1][pattern] == fast._idx().positions(pattern) and len(found[1][pattern]) <= 1
    assert found[1][b"sk_buff___"] == full._idx().positions(b"sk_buff___")
