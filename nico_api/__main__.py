"""`python -m nico_api`: the `nico-api` command line."""

import sys

from nico_api.cli.main import main

sys.exit(main())
