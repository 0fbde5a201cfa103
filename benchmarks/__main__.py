"""``python -m benchmarks``: run the whole suite (see ``benchmarks/run.py``)."""

from benchmarks.run import main

raise SystemExit(main())
