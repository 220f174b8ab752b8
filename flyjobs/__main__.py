"""``python -m flyjobs`` runs the command line."""

from .cli import main

main()
