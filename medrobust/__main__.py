"""``python -m medrobust`` (also what ``torchrun -m medrobust`` runs)."""

import sys

from medrobust.cli.main import main

sys.exit(main())
