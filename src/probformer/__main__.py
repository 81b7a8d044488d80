import sys

from probformer.cli import main

sys.exit(main())
