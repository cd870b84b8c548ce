"""``python -m service``: the API and one worker (see :mod:`service.run`)."""

import sys

from service.run import main

sys.exit(main())
