"""Throughput benchmark: `python scripts/benchmark.py [flags]` is `squeezejax bench [flags]`.

  python scripts/benchmark.py --compare=torch --json=bench.json

See squeezejax/bench.py for the flags and docs/performance.md for results.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

from squeezejax import cli  # noqa: E402

if __name__ == '__main__':
  sys.exit(cli.main(['bench', *sys.argv[1:]]))
