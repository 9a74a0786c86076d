"""`python -m fedray` is the `fedray` command."""

from fedray.cli.main import main

raise SystemExit(main())
