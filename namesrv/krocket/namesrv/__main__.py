"""``python -m krocket.namesrv``: run one name server (exit code 2 with the reason when it cannot start)."""

import logging
import sys

from krocket.common.errors import ConfigError
from krocket.namesrv.command import main

try:
    main()
except ConfigError as exc:
    logging.getLogger("krocket.namesrv").error("%s", exc)
    sys.exit(2)
