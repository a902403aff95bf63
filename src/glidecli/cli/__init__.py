"""The `glide` command: main.py holds the Typer app and the error handling, and each
command group has its module. The top wing: nothing imports it but `__main__`."""
