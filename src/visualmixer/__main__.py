import sys

from visualmixer.cli import main

sys.exit(main())
