"""The `fedray` command line."""
