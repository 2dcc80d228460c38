import sys

from squeezejax.cli import main

sys.exit(main())
