"""
C{python -m gopherpost.ctl}: the same as C{gopherpostctl}.
"""

import sys

from gopherpost.ctl.main import main

sys.exit(main())
