import sys

from genexp.cli import main

sys.exit(main())
