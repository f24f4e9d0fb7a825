import sys

from headmap.cli import main

sys.exit(main())
