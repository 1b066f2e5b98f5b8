"""Resolvers: kallsyms, OUI vendors, ifnames, drop reasons (fixtures, no root)."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import zlib

import pytest

from netbee.resolvers import drop_reasons, ifnames, kallsyms, oui

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

KALLSYMS = """\
ffffffffc0a01000 t nft_do_chain\t[nf_tables]
ffffffff81000000 T _stext
ffffffff81a00000 T ip_rcv
ffffffff81a00100 t ip_rcv_core
ffffffff81b00000 D some_data
ffffffff81a00080 W weak_thing
ffffffffc0a01400 T nft_other\t[nf_tables]
0000000000000000 T hidden
garbage line
"""


def test_kallsyms_sorted_by_us_and_resolves_with_modules():
    ks = kallsyms.Kallsyms(f=io.StringIO(KALLSYMS))
    assert len(ks) == 5  # text only: t/T, zero addresses dropped
    assert ks.resolve(0xFFFFFFFF81A00000) == "ip_rcv+0x0"
    assert ks.resolve(0xFFFFFFFF81A0001C) == "ip_rcv+0x1c"
    assert ks.resolve(0xFFFFFFFF81A00105) == "ip_rcv_core+0x5"
    assert ks.resolve(0xFFFFFFFFC0A0103A) == "nft_do_chain+0x3a [nf_tables]"
    assert ks.resolve(0xFFFFFFFFC0A01400) == "nft_other+0x0 [nf_tables]"
    assert ks.resolve(0x1000) == "0x1000"
    assert ks.resolve(0xFFFFFFFF81A00100 + kallsyms.MAX_OFFSET + 1) == \
        f"0x{0xFFFFFFFF81A00100 + kallsyms.MAX_OFFSET + 1:x}"


def _reference_resolve(text: str, addr: int) -> str:
    """The straightforward reading: sort (address, label) pairs, take the last at or below addr."""
    entries = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1] in ("t", "T") and int(parts[0], 16):
            entries.append((int(parts[0], 16), parts[2] if len(parts) < 4 else f"{parts[2]} {parts[3]}"))
    entries.sort()
    best = None
    for a, label in entries:
        if a <= addr:
            best = (a, label)
    if best is None or addr - best[0] > kallsyms.MAX_OFFSET:
        return f"0x{addr:x}"
    name, _, mod = best[1].partition(" ")
    return f"{name}+0x{addr - best[0]:x}" + (f" {mod}" if mod else "")


@pytest.mark.parametrize("shuffle", [False, True])
def test_kallsyms_packed_table_agrees_with_sorting_pairs(shuffle):
    """Shared addresses (aliases) and files out of order resolve as sorting all pairs would."""
    import random

    rng = random.Random(7 + shuffle)
    base = 0xFFFFFFFF81000000
    lines = []
    for i in range(400):
        addr = base + rng.randrange(0, 1 << 16) * 16
        for j in range(rng.choice((1, 1, 1, 2, 3))):   # aliases share an address
            name = rng.choice(("a", "b", "_x", "Z", "sym")) + str(rng.randrange(50))
            mod = rng.choice(("", "", "\t[mod%d]" % rng.randrange(3)))
            lines.append(f"{addr:016x} {rng.choice('tTdW')} {name}{mod}")
    lines.sort(key=lambda ln: int(ln.split()[0], 16))
    if shuffle:
        rng.shuffle(lines)
    text = "\n".join(lines).replace("\\t", "\t") + "\n"
    ks = kallsyms.Kallsyms(f=io.StringIO(text))
    assert len(ks) == sum(1 for ln in lines if ln.split()[1] in "tT")
    probes = [int(ln.split()[0], 16) + rng.randrange(0, 64) for ln in lines[:200]]
    probes += [base - 1, base + (1 << 21) + kallsyms.MAX_OFFSET + 5]
    for addr in probes:
        assert ks.resolve(addr) == _reference_resolve(text, addr), hex(addr)


def test_kallsyms_table_stays_small():
    """~120,000 symbols used to cost ~25 MiB as Python objects (the table output under a flood of
    drops went from 60 to 91 MiB); packed they must stay near their raw size."""
    import tracemalloc

    text = "".join(f"{0xFFFFFFFF81000000 + 16 * i:016x} t some_kernel_function_{i}\n"
                   for i in range(120_000))
    ks = kallsyms.Kallsyms(f=io.StringIO(text))
    tracemalloc.start()
    try:
        len(ks)
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held < 120_000 * 8 + (1 << 20), held   # the address array and compressed labels
    assert peak < 2 * held, peak
    assert ks.resolve(0xFFFFFFFF81000000 + 16 * 99_999 + 3) == "some_kernel_function_99999+0x3"
    assert ks.resolve(0xFFFFFFFF81000000 + 16 * 64 + 1) == "some_kernel_function_64+0x1"
    assert ks.resolve(0xFFFFFFFF81000000 + 16 * 63) == "some_kernel_function_63+0x0"


def test_kallsyms_of_this_kernel_stays_small():
    import tracemalloc

    ks = kallsyms.Kallsyms()
    tracemalloc.start()
    try:
        n = len(ks)
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n > 10_000, "no text symbols with addresses in /proc/kallsyms (run as root)"
    assert held < 4 << 20 and peak < 6 << 20, (n, held, peak)


def test_kallsyms_is_lazy_and_reads_the_real_file():
    ks = kallsyms.Kallsyms()
    assert ks._table is None
    with open("/proc/kallsyms") as f:
        for line in f:
            addr, typ, name = line.split()[:3]
            if typ == "T" and name == "ip_rcv" and int(addr, 16):
                assert ks.resolve(int(addr, 16) + 4) == "ip_rcv+0x4"
                break
        else:
            pytest.fail("ip_rcv not in /proc/kallsyms with an address (run as root)")


def test_oui_db_generated_from_ieee_data_matches_committed(tmp_path):
    out = tmp_path / "oui.db"
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "gen_oui.py"), "--out", str(out)],
                   check=True, capture_output=True)
    with open(os.path.join(ROOT, "netbee", "resolvers", "oui.db"), "rb") as f:
        committed = f.read()
    assert out.read_bytes() == committed
    assert len(committed) < 600_000


def test_oui_longest_prefix_and_marks(tmp_path):
    db = tmp_path / "mini.db"
    db.write_bytes(zlib.compress(b"70B3D5\tIEEE Registration Authority\n"
                                 b"70B3D57\tSome MA-M\n70B3D5F2F\tTELEPLATFORMS\n001B21\tIntel\n"))
    r = oui.OuiResolver(str(db))
    assert r.vendor(bytes.fromhex("70b3d5f2f001")) == "TELEPLATFORMS"
    assert r.vendor(bytes.fromhex("70b3d5712345")) == "Some MA-M"
    assert r.vendor(bytes.fromhex("70b3d5012345")) == "IEEE Registration Authority"
    assert r.describe(bytes.fromhex("001b21aabbcc")) == "Intel"
    assert r.describe(bytes.fromhex("00aaaa000000")) is None
    assert r.describe(b"\xff" * 6) == "broadcast"
    assert r.describe(bytes(6)) is None
    assert r.describe(bytes.fromhex("01005e000001")) == "multicast"
    assert r.describe(bytes.fromhex("333300000001")) == "multicast"
    assert r.describe(bytes.fromhex("021b21aabbcc")) == "locally administered"
    assert r.vendor(bytes.fromhex("021b21aabbcc")) is None


def test_oui_packaged_db_real_vendors():
    r = oui.OuiResolver()
    assert r._tables is None  # loaded on first use
    assert r.vendor(bytes.fromhex("3c22fb000001")) == "Apple, Inc."
    assert r.vendor(bytes.fromhex("70b3d5f2f000")) == "TELEPLATFORMS"  # MA-S beats MA-L
    assert len(r._tables[24]) > 30000 and r._tables[28] and r._tables[36]


def test_oui_packed_tables_agree_with_a_dict_of_the_packaged_db():
    """Every prefix of the packaged registry, and absent ones, look up as in a plain dict."""
    with open(oui.DEFAULT_DB, "rb") as f:
        text = zlib.decompress(f.read()).decode()
    ref = {24: {}, 28: {}, 36: {}}
    for line in text.splitlines():
        prefix, _, name = line.partition("\t")
        ref[len(prefix) * 4][int(prefix, 16)] = name
    tables = oui.load_db(text.encode())
    for bits, d in ref.items():
        assert len(tables[bits]) == len(d)
        for key, name in d.items():
            assert tables[bits].get(key) == name
            if key + 1 not in d:
                assert tables[bits].get(key + 1) is None
    assert tables[24].get(1 << 24) is None and tables[36].get(0) == ref[36].get(0)


def test_oui_unsorted_file_last_duplicate_wins_and_table_is_small():
    import tracemalloc

    t = oui.load_db(b"00000B\tB\r\n00000A\tA1\n00000C\tC\n00000A\tA2\nnot a line\n")[24]
    assert (t.get(0xA), t.get(0xB), t.get(0xC), t.get(0xD), len(t)) == ("A2", "B", "C", None, 3)
    with open(oui.DEFAULT_DB, "rb") as f:
        data = f.read()
    tracemalloc.start()
    try:
        tables = oui.load_db(data)
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    # as dicts of ints and strs: ~12 MiB held for the whole run
    assert sum(map(len, tables.values())) > 40000 and held < 3 << 20, held


def test_oui_bad_file_is_a_usage_error(tmp_path):
    from netbee.loader.errors import UsageError
    r = oui.OuiResolver(str(tmp_path / "nope.db"))
    with pytest.raises(UsageError, match="cannot read OUI database"):
        r.check()


def test_ifnames_cache_refresh_and_fallback():
    calls = []
    now = [0.0]
    tables = {1: {1: "lo", 2: "eth0"}, 2: {1: "lo", 5: "veth-b"}}

    def lister(ns):
        calls.append(ns)
        return dict(tables[ns]) if ns in tables else None

    names = ifnames.IfNames(lister=lister, clock=lambda: now[0], interval=1.0)
    assert names.name(1, 2) == "eth0" and names.name(2, 5) == "veth-b"
    assert names.name(1, 2) == "eth0" and calls == [1, 2]  # cached
    tables[1][7] = "new0"
    assert names.name(1, 7) == "7"  # within the interval: no relisting
    now[0] = 2.0
    assert names.name(1, 7) == "new0" and calls == [1, 2, 1]
    assert names.name(3, 4) == "4"  # namespace we cannot see
    assert names.name(1, 0) == "-"


def test_ifnames_current_namespace():
    import socket
    idx = socket.if_nametoindex("lo")
    from netbee import netns
    assert ifnames.IfNames().name(netns.current().inode, idx) == "lo"


def test_drop_reasons_from_enum_values():
    dr = drop_reasons.DropReasons(loader=lambda: {"SKB_DROP_REASON_NOT_SPECIFIED": 2,
                                                  "SKB_DROP_REASON_NO_SOCKET": 3,
                                                  "SKB_DROP_REASON_MAX": 99})
    assert dr.name(3) == "NO_SOCKET" and dr.name(2) == "NOT_SPECIFIED"
    assert dr.name(99) == "99" and dr.name(1234) == "1234"


def test_drop_reasons_from_running_kernel_btf():
    dr = drop_reasons.DropReasons()
    names = {dr.name(v) for v in range(0, 40)}
    assert {"NOT_SPECIFIED", "NO_SOCKET", "NETFILTER_DROP"} <= names


def test_drop_reasons_error_is_kept():
    def broken():
        raise OSError("no BTF here")
    dr = drop_reasons.DropReasons(loader=broken)
    assert dr.name(3) == "3" and dr.error == "OSError: no BTF here"
