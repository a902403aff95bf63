"""Tab completion (typer's): `glide completion SHELL` prints or installs the script of bash,
zsh or fish, and the completion itself lists the commands, generate's options and a
choice's values; an unknown shell is one line."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from helpers.glide_cli import assert_one_error_line, invoker


def complete(shell: str, words: str) -> list[str]:
    """What the shell's completion gets for the command line `words` (the cursor at its end)."""
    env = {**os.environ, "_GLIDE_COMPLETE": f"complete_{shell}"}
    if shell == "bash":
        parts = words.split(" ")
        env.update(COMP_WORDS=words, COMP_CWORD=str(len(parts) - 1))
    else:
        env.update(_TYPER_COMPLETE_ARGS=words, _TYPER_COMPLETE_FISH_ACTION="get-args")
    done = subprocess.run([sys.executable, "-m", "glidecli"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.split("\n")


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_lists_the_commands_and_generates_options(shell):
    commands = " ".join(complete(shell, "glide "))
    for name in ("generate", "inpaint", "serve", "grid", "completion"):
        assert name in commands, (shell, commands)
    options = " ".join(complete(shell, "glide generate --s"))
    for option in ("--scale", "--steps", "--sampler", "--seed", "--seed-walk", "--show-steps", "--size"):
        assert option in options, (shell, option)
    assert "dpmpp_2m_sde" in " ".join(complete(shell, "glide generate --sampler dp"))


@pytest.mark.parametrize("shell, marker", [("bash", "complete -o default -F _glide_completion glide"), ("zsh", "#compdef glide"), ("fish", "complete --command glide")])
def test_the_scripts(capsys, monkeypatch, shell, marker):
    result = invoker(capsys, monkeypatch)("completion", shell)
    assert result.code == 0 and marker in result.out and "_GLIDE_COMPLETE" in result.out


def test_install_writes_the_shells_start_up_files(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    result = invoker(capsys, monkeypatch)("completion", "bash", "--install")
    assert result.code == 0, result.err
    assert "_GLIDE_COMPLETE" in (tmp_path / ".bash_completions" / "glide.sh").read_text()
    assert ".bash_completions/glide.sh" in (tmp_path / ".bashrc").read_text()


def test_an_unknown_shell_is_one_line(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert_one_error_line(invoker(capsys, monkeypatch)("completion", "tcsh"), 2, "'tcsh' is not one of 'bash', 'zsh', 'fish'")
    assert list(tmp_path.iterdir()) == []
