"""Entry point of dist/netbee.pyz (copied in as __main__.py by scripts/build_pyz.sh).

Some modules locate their data files (BPF object, OUI database) through __file__ and open them as
ordinary files, which a zip archive cannot offer. So the archive's packages are extracted once per
run into a private temporary directory (mode 0700, random name: nothing another user can plant),
imported from there, and removed when netbee exits.
"""
import os
import shutil
import sys
import tempfile
import zipfile


def _extract(archive: str) -> str:
    target = tempfile.mkdtemp(prefix="netbee-pyz-")
    with zipfile.ZipFile(archive) as zf:
        members = [m for m in zf.namelist() if m != "__main__.py"]
        zf.extractall(target, members)
    return target


def _main() -> int:
    archive = os.path.abspath(sys.argv[0])
    if not zipfile.is_zipfile(archive):
        from netbee.cli import main
        return main()
    target = _extract(archive)
    try:
        while archive in sys.path:
            sys.path.remove(archive)
        sys.path.insert(0, target)
        import netbee
        # the extracted copy is new each run: the program cache identifies the code by the archive
        netbee.archive = archive
        from netbee.cli import main
        return main()
    finally:
        shutil.rmtree(target, ignore_errors=True)


sys.exit(_main())
