"""One struct.Struct per output format that splits a raw event record into what changes with every
packet and what repeats, derived from the construct layout (abi.EVENT stays the one definition).

A renderer of raw records (netbee/render_records.py) unpacks each record with it in one C call:
the per-packet fields come out as numbers ("slots"), the fields that repeat in a trace (hook,
interface, addresses, MACs, flags, names, pid, comm...) as a few runs of raw bytes whose tuple is
the key of a cached line template. Fields neither needs are skipped, except that a skipped field
between two key fields joins the run: one run costs less to unpack and hash than two, and a
longer key only makes the cache a little less shared.
"""
from __future__ import annotations

import struct
from typing import Collection, List, NamedTuple, Sequence, Tuple

from construct import Struct

KEY = "key"     # the item name of a key run


class RecordSplit(NamedTuple):
    """The derived Struct; items[i] names what unpack()[i] is: a slot field's name or KEY;
    runs[j] is the (start, end) byte range of the j-th key run."""
    struct: struct.Struct
    items: Tuple[str, ...]
    runs: Tuple[Tuple[int, int], ...]


def _fields(layout: Struct) -> List[Tuple[str, int, int, str]]:
    """(name, offset, size, struct code) of each subcon; padding has name ''."""
    out = []
    offset = 0
    for sub in layout.subcons:
        size = sub.sizeof()
        inner = getattr(sub, "subcon", sub)      # Renamed -> the field's construct
        fmt = getattr(inner, "fmtstr", None)
        code = fmt.lstrip("<>=!@") if fmt is not None else f"{size}s"
        out.append((sub.name or "", offset, size, code))
        offset += size
    return out


def split_record(layout: Struct, slots: Sequence[str], keys: Collection[str], bridge: bool = True) -> RecordSplit:
    """The split of a fixed-size construct Struct: `slots` (fixed-size numbers) unpacked as values,
    `keys` as byte runs, everything else skipped (or, with bridge, part of the run when it lies
    between two key fields). Raises ValueError for an unknown name or a slot that is not a number."""
    fields = _fields(layout)
    names = {f[0] for f in fields if f[0]}
    unknown = (set(slots) | set(keys)) - names
    if unknown or set(slots) & set(keys):
        raise ValueError(f"fields unknown or both slot and key: {sorted(unknown or set(slots) & set(keys))}")
    kind = ["slot" if name in slots else "key" if name in keys else "skip" for name, _, _, _ in fields]
    first = list(kind)
    for i, k in enumerate(first):
        if k == "skip" and fields[i][0]:
            before = next((first[j] for j in range(i - 1, -1, -1) if first[j] != "skip"), None)
            after = next((first[j] for j in range(i + 1, len(first)) if first[j] != "skip"), None)
            if bridge and before == after == "key":
                kind[i] = "bridge"
    parts, items, runs = ["="], [], []
    run_start = None
    for (name, offset, size, code), k in zip(fields, kind):
        if k in ("key", "bridge"):
            if run_start is None:
                run_start = offset
            continue
        if run_start is not None:
            parts.append(f"{offset - run_start}s")
            items.append(KEY)
            runs.append((run_start, offset))
            run_start = None
        if k == "slot":
            if code.endswith("s"):
                raise ValueError(f"slot {name} is not a number")
            parts.append(code)
            items.append(name)
        else:
            parts.append(f"{size}x")
    end = layout.sizeof()
    if run_start is not None:
        parts.append(f"{end - run_start}s")
        items.append(KEY)
        runs.append((run_start, end))
    compiled = struct.Struct("".join(parts))
    assert compiled.size == end
    return RecordSplit(compiled, tuple(items), tuple(runs))
