"""``python -m firmware_sim`` — same as the ``ds4h-sim`` command."""

from firmware_sim.cli import main

raise SystemExit(main())
