"""The `fdl` command (top floor: nothing in fdl imports it)."""
from fdl.cli.main import main

__all__ = ["main"]
