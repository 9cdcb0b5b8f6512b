import sys

from torch2x.cli import main

sys.exit(main())
