import sys

from simsearch.cli import main

sys.exit(main())
