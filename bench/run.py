"""`make bench`: run every bench/bench_*.py in order; each prints its own table."""
import subprocess
import sys
from pathlib import Path

here = Path(__file__).resolve().parent
rc = 0
for script in sorted(here.glob("bench_*.py")):
    print("\n## " + script.stem[6:], flush=True)
    rc |= subprocess.call([sys.executable, str(script)], cwd=here.parent)
sys.exit(rc)
