"""netbee.paths finds shipped files in a source tree and inside a zip archive."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from netbee import paths

ROOT = Path(__file__).resolve().parents[2]


def test_prebuilt_object_in_source_tree_is_the_committed_one() -> None:
    path = paths.prebuilt_object("netbee.bpf.o")
    assert path.read_bytes() == (ROOT / "bpf" / "prebuilt" / "netbee.bpf.o").read_bytes()
    assert path.read_bytes()[:4] == b"\x7fELF"


def test_data_file_extracted_from_zip(tmp_path: Path) -> None:
    archive = tmp_path / "app.zip"
    payload = b"\x7fELF-not-really-" + bytes(range(256))
    with zipfile.ZipFile(archive, "w") as zf:
        for src in (ROOT / "netbee").rglob("*.py"):
            zf.write(src, src.relative_to(ROOT).as_posix())
        zf.writestr("netbee/bpf/probe.bpf.o", payload)
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from netbee import paths; "
            "p = paths.prebuilt_object('probe.bpf.o'); sys.stdout.write(str(p)); "
            "sys.stdout.flush(); assert p.read_bytes() == bytes.fromhex(sys.argv[2])")
    res = subprocess.run([sys.executable, "-I", "-S", "-c", code, str(archive), payload.hex()],
                         capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    extracted = Path(res.stdout)
    assert ".zip" not in res.stdout and not extracted.exists()  # removed at exit


def test_missing_object_is_a_netbee_error() -> None:
    from netbee.loader.errors import NetBeeError
    try:
        paths.prebuilt_object("no-such.bpf.o")
    except NetBeeError as e:
        assert "no-such.bpf.o" in str(e)
    else:
        raise AssertionError("no error for a missing object")
