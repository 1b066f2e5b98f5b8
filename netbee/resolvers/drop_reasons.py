"""Drop reason numbers -> names, from the running kernel's BTF (enum skb_drop_reason).

The numbering changes between kernels, so there is deliberately no built-in table: the names come
from the BTF the tracer uses (--btf PATH or /sys/kernel/btf/vmlinux), loaded on first use.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional

PREFIX = "SKB_DROP_REASON_"
ENUM = "skb_drop_reason"


def names_from_enum(values: Dict[str, int]) -> Dict[int, str]:
    """{"SKB_DROP_REASON_NO_SOCKET": 2, ...} -> {2: "NO_SOCKET", ...}; the sentinel MAX is left out."""
    out: Dict[int, str] = {}
    for name, value in values.items():
        short = name[len(PREFIX):] if name.startswith(PREFIX) else name
        if short == "MAX":
            continue
        out.setdefault(value, short)
    return out


def _kernel_enum(btf_path: Optional[str]) -> Dict[str, int]:
    from netbee.loader.btf import Btf

    return Btf.load_kernel(btf_path).enum_values(ENUM)


class DropReasons:
    """name(value) -> "NETFILTER_DROP"; unknown numbers (or no BTF) -> the number as text."""

    def __init__(self, btf_path: Optional[str] = None,
                 loader: Optional[Callable[[], Dict[str, int]]] = None) -> None:
        self._loader = loader or (lambda: _kernel_enum(btf_path))
        self._names: Optional[Dict[int, str]] = None
        self.error: Optional[str] = None  # why names are unavailable (the CLI reports it once)

    def use(self, values: Dict[str, int]) -> None:
        """Take the enum's values from who already has them (the tracer) instead of loading them."""
        self._names = names_from_enum(values)
        self.error = None

    def _table(self) -> Dict[int, str]:
        if self._names is None:
            try:
                self._names = names_from_enum(self._loader())
            except Exception as e:  # a missing enum must not stop tracing: fall back to numbers
                self.error = f"{type(e).__name__}: {e}"
                self._names = {}
        return self._names

    def name(self, value: int) -> str:
        return self._table().get(value, str(value))
