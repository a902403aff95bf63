"""`python -m glidecli` runs the `glide` command."""

from .cli import main

main()
