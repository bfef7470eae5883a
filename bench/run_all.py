#!/usr/bin/env python
"""Run every benchmark in bench/ (each prints its figures and the baseline it compares with)."""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
code = 0
for script in sorted(HERE.glob("*.py")):
    if script.name == "run_all.py" or script.name.startswith("_"):  # _*.py are helpers (seeders)
        continue
    print(f"== {script.name}", flush=True)
    code |= subprocess.call([sys.executable, str(script), *sys.argv[1:]])
sys.exit(code)
