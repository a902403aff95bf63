"""`glide completion SHELL`: tab completion of glide's commands and options for bash, zsh or
fish (typer's scripts), printed or installed; `glide --install-completion` does the same for
the shell it runs in."""

from __future__ import annotations

from typing import Annotated, Literal

import typer

Shell = Literal["bash", "zsh", "fish"]


def completion(
    shell: Annotated[Shell, typer.Argument(metavar="SHELL", help="bash, zsh or fish.", show_default=False)],
    install: Annotated[bool, typer.Option("--install", help="Install it in the shell's start-up files instead of printing it.")] = False,
) -> None:
    """Print the tab-completion script of SHELL (or --install it): `glide completion bash >> ~/.bashrc`."""
    from typer._completion_shared import get_completion_script
    from typer._completion_shared import install as install_script

    if install:
        _, path = install_script(shell=shell, prog_name="glide", complete_var="_GLIDE_COMPLETE")
        typer.echo(f"{shell} completion installed in {path}; it works in new shells")
        return
    typer.echo(get_completion_script(prog_name="glide", complete_var="_GLIDE_COMPLETE", shell=shell))
