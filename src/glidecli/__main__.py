"""`python -m glidecli` runs the `glide` command."""

from .cli.main import main

main()
