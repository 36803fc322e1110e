import sys

from fruits_infra.cli import main

sys.exit(main())
