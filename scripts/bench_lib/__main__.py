"""`python -m bench_lib` (with PYTHONPATH=scripts): what `scripts/bench` runs."""

import sys

from bench_lib.driver import main

sys.exit(main())
