"""`python3 -m netbee` runs the netbee command."""
import sys

from netbee.cli import main

sys.exit(main())
