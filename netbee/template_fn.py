"""A str.format template compiled into a function: the same text, without parsing the template on
every call.

str.format (and %) scan the whole template each time; a JSON line template is ~500 characters
with a handful of slots, so most of a call went into that scan. The compiled function is one
f-string (a single BUILD_STRING): its literal pieces are bound as closure variables, never
written into the generated source, which holds only names and the template's own format specs
(checked against a short allowed set, so no traced text reaches the compiler).
"""
from __future__ import annotations

import re
import string
from typing import Callable, Dict

_SPEC = re.compile(r"[0-9.]*[dfxs]?\Z")
_FIELD = re.compile(r"[0-9]\Z")


def compile_template(template: str, nargs: int) -> Callable[..., str]:
    """f(a0, .., a{nargs-1}) == template.format(a0, .., a{nargs-1}). Fields must be positional
    indices below nargs with a plain spec (digits, '.', one of d f x s) and no conversion."""
    consts: Dict[str, str] = {}
    parts = []
    for lit, field, spec, conv in string.Formatter().parse(template):
        if lit:
            name = f"c{len(consts)}"
            consts[name] = lit
            parts.append("{" + name + "}")
        if field is None:
            continue
        if not _FIELD.match(field) or int(field) >= nargs or conv or not _SPEC.match(spec or ""):
            raise ValueError(f"unsupported template field {{{field}!{conv}:{spec}}}")
        parts.append("{a" + field + (":" + spec if spec else "") + "}")
    args = ", ".join(f"a{i}" for i in range(nargs))
    source = (f"def bind({', '.join(consts) or ''}):\n"
              f"    return lambda {args}: f'{''.join(parts)}'\n")
    scope: Dict[str, Callable[..., Callable[..., str]]] = {}
    exec(source, {}, scope)  # noqa: S102 - the source holds names and checked specs only
    return scope["bind"](**consts)
