"""Where NetBee's shipped files are, as real file paths, from a source tree, a wheel or a zipapp.

The prebuilt BPF objects live in bpf/prebuilt/ (committed, built by scripts/build_bpf.sh);
netbee/bpf is a symlink to that directory so a source tree, `pip install -e .`, `pip install .`
(the wheel copies the files) and the zipapp (scripts/build_pyz.sh copies them) all see them as
package data at netbee/bpf/. Inside a zip there is no file path: the bytes are extracted to a
private temporary file that is removed at exit.
"""
from __future__ import annotations

import atexit
import os
import tempfile
from pathlib import Path
from typing import Dict

from netbee.loader.errors import NetBeeError

from importlib.resources import files as _files

_extracted: Dict[str, Path] = {}
_SOURCE_PREBUILT = Path(__file__).resolve().parent.parent / "bpf" / "prebuilt"


def data_file(relpath: str, package: str = "netbee") -> Path:
    """A real path to package data `relpath` (e.g. "bpf/netbee.bpf.o" or "oui.db" in netbee.resolvers)."""
    res = _files(package)
    for part in relpath.split("/"):
        res = res / part
    if isinstance(res, Path):
        if res.is_file():
            return res
        raise NetBeeError(f"{package}/{relpath} not found in {res.parent}")
    key = f"{package}/{relpath}"
    if key in _extracted:
        return _extracted[key]
    if not res.is_file():
        raise NetBeeError(f"{key} not found inside {getattr(res, 'root', 'the archive')}")
    fd, name = tempfile.mkstemp(prefix="netbee-", suffix="-" + relpath.replace("/", "_"))
    with os.fdopen(fd, "wb") as f:
        f.write(res.read_bytes())
    path = Path(name)
    atexit.register(_remove, path)
    _extracted[key] = path
    return path


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def prebuilt_object(name: str = "netbee.bpf.o") -> Path:
    """The prebuilt BPF object `name` shipped with netbee."""
    try:
        return data_file(f"bpf/{name}")
    except NetBeeError:
        # A source tree whose netbee/bpf symlink was lost (e.g. copied without symlinks).
        cand = _SOURCE_PREBUILT / name
        if cand.is_file():
            return cand
        raise NetBeeError(f"prebuilt BPF object {name} not found (run scripts/build_bpf.sh)") from None
