"""`python -m ops ...` is the same as the `chops` command."""

from ops.cli.chops import main

if __name__ == "__main__":
    raise SystemExit(main())
