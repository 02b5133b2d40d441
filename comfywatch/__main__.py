"""Allow ``python -m comfywatch``."""

from __future__ import annotations

import sys

from comfywatch.cli.main import main

sys.exit(main())
