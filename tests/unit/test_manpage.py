"""man/netbee.1 is generated from the parser; regenerate and compare with the committed page."""
from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_committed_manpage_is_current():
    res = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "gen_manpage.py"),
                          "--output", "-"], capture_output=True, text=True, check=True,
                         env=dict(os.environ, COLUMNS="200"))
    with open(os.path.join(ROOT, "man", "netbee.1")) as f:
        committed = f.read()
    assert res.stdout == committed, "man/netbee.1 is stale: run python3 scripts/gen_manpage.py"


def test_manpage_documents_every_option_and_json_keys():
    from netbee.cli import build_parser
    from netbee.output import JSON_KEYS

    with open(os.path.join(ROOT, "man", "netbee.1")) as f:
        page = f.read().replace("\\-", "-")
    for action in build_parser()._actions:
        for opt in action.option_strings:
            if opt not in ("-h", "--help"):  # argparse-manpage leaves out the help option
                assert opt in page, opt
    for key in JSON_KEYS:
        assert key in page, key
    assert ".TH NETBEE" in page and "why is my packet dropped" in page
