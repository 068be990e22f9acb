"""Front ends: the `chops` command and the invoke task namespace. Parse, call, render; no logic."""
