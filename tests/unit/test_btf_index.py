"""The kernel BTF's name index answers from its name column until a sort costs less
(netbee/loader/btf_index.py): the answers must not depend on which way they were found."""
from __future__ import annotations

from netbee.loader import btf_index
from netbee.loader.btf import Btf

# a start's look-ups: names with one or two string positions, and short names ("net\0",
# "sock\0") that end ~150 longer strings each
START_NAMES = ["sk_buff", "btf_trace_netif_rx", "bpf_rdonly_cast", "skb_drop_reason", "net", "sock",
               "task_struct", "net_device", "nf_hook_state", "bpf_nf_ctx", "btf_trace_kfree_skb",
               "no_such_type_a"]


def _by_scan(btf: Btf, name: str) -> list:
    """The answer of a walk over every type."""
    return [tid for tid, n in btf.names() if n == name]


def test_column_answers_equal_the_sorted_index(vmlinux_copy):
    data = vmlinux_copy.read_bytes()
    by_column, by_sort = Btf.parse(data), Btf.parse(data)
    by_sort._idx()._sorted()
    by_column.prefetch(START_NAMES, ["sk_buff___", "net___"])   # as plan_hooks and CO-RE do
    for name in START_NAMES:
        assert by_column.find(name) == by_sort.find(name), name
    idx = by_column._idx()
    assert idx._packed is None, "a start's look-ups sorted the index"
    assert idx._spent == btf_index.PASS_COST, "announced names were searched one by one"
    for name in ("sk_buff", "net", "sock"):
        assert by_column.find(name) == _by_scan(by_column, name)
    assert by_column.ids_with_prefix("sk_buff___") == by_sort.ids_with_prefix("sk_buff___")
    assert by_column.ids_with_prefix("btf_trace_netif_") == by_sort.ids_with_prefix("btf_trace_netif_")


def test_many_look_ups_sort_once(vmlinux_copy, monkeypatch):
    btf = Btf.parse(vmlinux_copy.read_bytes())
    idx = btf._idx()
    sorts = []
    real = btf_index.NameIndex._sorted

    def counting(self):
        if self._packed is None:
            sorts.append(1)
        return real(self)

    monkeypatch.setattr(btf_index.NameIndex, "_sorted", counting)
    names = [n for _, n in zip(range(400), (n for _, n in btf.names()))]
    answers = {n: btf.find(n) for n in names}
    assert len(sorts) == 1, "the index was not sorted once past the column's budget"
    assert idx._spent <= btf_index.COLUMN_BUDGET
    for n in names[:40]:
        assert answers[n] == _by_scan(btf, n)


def test_single_offset_search_skips_misaligned_matches():
    """A name offset whose 4 bytes also appear across two column entries is found at its own
    entries only."""
    from array import array

    # type 0 named 0x00000102, type 1 named 0x03000000: big-endian 00 00 01 02 | 03 00 00 00,
    # which holds 01 02 03 00 (offset 0x01020300) across the two entries
    words = array("I", [0x102, 1 << 24, 0, 0x03000000, 1 << 24, 0, 0x01020300, 1 << 24, 0])
    idx = btf_index.NameIndex(b"\0", 0, words, [0, 3, 6], 1)
    assert idx.ids_named_at([0x01020300]) == [3]
    assert idx.ids_named_at([0x102]) == [1]
    assert idx.ids_named_at([0x03000000, 0x102]) == [1, 2]
    assert idx.ids_named_at([0]) == []


def test_flavor_prefixes_found_from_one_search_equal_their_own_searches(vmlinux_copy):
    strings = b"\0a____\0sk_buff___old\0sk_buff____x\0___\0net___\0xnet___y\0sk_buff\0"
    patterns = [b"a___", b"sk_buff___", b"net___", b"sk_buff\0", b"___", b"_____", b"zz___"]
    many = btf_index.string_positions_many(strings, 100, patterns)
    assert many == {p: btf_index.string_positions(strings, 100, p) for p in patterns}
    assert many[b"sk_buff___"] == [107, 121] and many[b"a___"] == [101]
    btf = Btf.parse(vmlinux_copy.read_bytes())
    patterns = Btf.lookup_patterns(["sk_buff", "net", "sock"], ["sk_buff___", "net___", "sock___", "task_struct___"])
    assert btf_index.string_positions_many(btf._strings, 0, patterns) == {
        p: btf_index.string_positions(btf._strings, 0, p) for p in patterns}


def test_whole_string_positions():
    strings = b"\0xnet\0sk_buff\0net\0sk\0"
    assert btf_index.whole_string_position(strings, 0, b"net\0") == [14]
    assert btf_index.whole_string_position(strings, 0, b"sk_buff\0") == [6]
    assert btf_index.whole_string_position(strings, 0, b"buff\0") == []      # a suffix only
    assert btf_index.whole_string_position(strings, 0, b"\0") == [0]
    assert btf_index.whole_string_position(b"net\0sk\0", 500, b"net\0") == [500]   # split BTF
    patterns = [b"net\0", b"sk\0", b"buff\0", b"sk", b"sk_buff___", b"et\0"]
    unique = btf_index.string_positions_many(strings, 0, patterns, unique_strings=True)
    full = btf_index.string_positions_many(strings, 0, patterns)
    assert full[b"net\0"] == [2, 14] and unique[b"net\0"] == [14]
    assert unique[b"buff\0"] == [] and unique[b"et\0"] == []
    assert unique[b"sk"] == full[b"sk"] == [6, 18]   # not a whole name: searched everywhere
    assert unique[b"sk_buff___"] == full[b"sk_buff___"]


def test_a_unique_strings_index_equals_a_full_one_on_the_kernel_btf(vmlinux_copy):
    """On the running kernel's BTF (whose strings are unique: tests/kernel/test_kernel_btf_strings.py)."""
    data = vmlinux_copy.read_bytes()
    full, fast = Btf.parse(data), Btf.parse(data)
    fast._index = fast._new_index(unique_strings=True)
    fast.prefetch(START_NAMES, ["sk_buff___", "net___"])
    for name in START_NAMES:
        assert fast.find(name) == full.find(name), name
    assert fast.ids_with_prefix("btf_trace_netif_") == full.ids_with_prefix("btf_trace_netif_")


def test_positions_known_early_are_found_in_the_next_pass(vmlinux_copy):
    """The object reader's CO-RE names, taken before the plan's prefetch, are found in the same
    pass as the plan's names: one pass for both."""
    data = vmlinux_copy.read_bytes()
    full, btf = Btf.parse(data), Btf.parse(data)
    core = ["sk_buff", "net", "sock", "nf_hook_state"]
    idx = btf._idx()
    idx.know_positions(full._idx().positions_many(Btf.lookup_patterns(core, ["sk_buff___"])), find_types=False)
    assert idx._spent == 0   # nothing searched yet
    btf.prefetch(["btf_trace_netif_rx", "btf_trace_kfree_skb"])
    assert idx._spent == btf_index.PASS_COST and not idx._pending
    for name in core + ["btf_trace_netif_rx", "btf_trace_kfree_skb"]:
        assert btf.find(name) == full.find(name), name
    assert btf.ids_with_prefix("sk_buff___") == full.ids_with_prefix("sk_buff___")
    assert idx._spent == btf_index.PASS_COST, "a look-up searched the column again"


def test_the_walk_gives_the_name_column(vmlinux_copy):
    from array import array

    btf = Btf.parse(vmlinux_copy.read_bytes())
    idx = btf._idx()
    assert idx._names is not None and btf._scanned_names is None   # handed over, not kept twice
    assert idx._names == array("I", map(btf._words.__getitem__, btf._offsets))
