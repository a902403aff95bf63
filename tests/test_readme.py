"""The READMEs and docs/ say what the tool does: README's Python example runs as written (from a
folder holding the small models), every `glide` command line in their shell blocks parses as
`glide` parses it (and a rendering command's values pass its request's checks), every option
they name belongs to the command they name it for (with what it requires), the defaults they
state are the commands', every source file they point to exists, and README links every page
of docs/. No network runs except the Python example's (about 1 s)."""

from __future__ import annotations

import functools
import re
import shlex

import numpy as np
import pytest
import typer
from PIL import Image

from glidecli.cli.main import app
from glidecli.cli.run import click_errors
from glidecli.files.pngfile import read_png_metadata
from glidecli.request.building import build
from glidecli.request.commands import REQUESTS, option_fields
from glidecli.request.values import RequestError
from helpers.paths import MODELS, REPO_ROOT

DOCS = tuple(sorted(str(path.relative_to(REPO_ROOT)) for path in (REPO_ROOT / "docs").glob("*.md")))
READMES = ("README.md", "models/README.md", "benchmarks/README.md", *DOCS)
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
# Options of other programs that the docs name in prose: torchrun's rendezvous,
# benchmarks/gpu_check.sh's parts and AUTOMATIC1111's --api-auth.
OTHER_PROGRAMS = {"--nproc-per-node", "--nnodes", "--rdzv-backend", "--rdzv-endpoint", "--rdzv-id", "--part", "--api-auth"}


def python_example() -> str:
    text = (REPO_ROOT / "README.md").read_text()
    section = text[text.index("## Python\n"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_python_example_runs_as_written(tmp_path, monkeypatch, capsys):
    (tmp_path / "models").symlink_to(MODELS)
    monkeypatch.chdir(tmp_path)
    exec(compile(python_example(), "README.md", "exec"), {})
    printed = capsys.readouterr().out.split("\n")
    assert printed[0] == "circle-10.png (64, 64)" and printed[1] == "circle-11.png (64, 64)"
    first, second = (np.asarray(Image.open(tmp_path / f"circle-{seed}.png")) for seed in (10, 11))
    assert first.shape == (64, 64, 3) and np.abs(first.astype(int) - second).max() > 0
    meta = read_png_metadata(tmp_path / "circle-10.png")
    assert meta["seed"] == 10 and meta["model"] == "shapes" and meta["upsample_model"] == "shapes-upsample"


# --- what the READMEs say about `glide`'s commands ----------------------------------------------


def shell_lines(name: str) -> list[tuple[str, str]]:
    """(where, line) of every line in the file's sh/bash blocks, continuation lines joined."""
    text = (REPO_ROOT / name).read_text()
    found = []
    for block in FENCE.finditer(text):
        if block.group(1) not in ("sh", "bash"):
            continue
        first = text.count("\n", 0, block.start(2)) + 1
        pending, start = "", first
        for offset, line in enumerate(block.group(2).splitlines()):
            if not pending:
                start = first + offset
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            found.append((f"{name}:{start}", pending + line))
            pending = ""
    return found


def glide_arguments(tokens: list[str]) -> list[str] | None:
    """The arguments of `glide ...` or `... -m glidecli ...`, else None."""
    if tokens[:1] == ["glide"]:
        return tokens[1:]
    for at in range(len(tokens) - 1):
        if tokens[at : at + 2] == ["-m", "glidecli"]:
            return tokens[at + 2 :]
    return None


@functools.cache
def glide_command():
    """The `glide` click group, built once (Typer builds it anew at every call)."""
    return typer.main.get_command(app)


def resolve(arguments: list[str]):
    """(command path, click command, remaining arguments); the command is None when a
    command name is unknown."""
    command, path = glide_command(), ["glide"]
    while hasattr(command, "get_command"):
        if not arguments:
            return path, None, arguments
        context = command.context_class(command, info_name=path[-1])
        sub = command.get_command(context, arguments[0])
        if sub is None:
            return path + [arguments[0]], None, arguments[1:]
        command, path, arguments = sub, path + [arguments[0]], arguments[1:]
    return path, command, arguments


def option_names(command) -> set[str]:
    return {name for parameter in command.params for name in [*parameter.opts, *parameter.secondary_opts]} | {"--help", "-h"}


def all_option_names() -> set[str]:
    names: set[str] = set()

    def walk(command) -> None:
        names.update(option_names(command))
        if hasattr(command, "list_commands"):
            context = command.context_class(command)
            for name in command.list_commands(context):
                walk(command.get_command(context, name))

    walk(glide_command())
    return names


def test_readmes_have_glide_command_lines():
    lines = [line for name in READMES for _, line in shell_lines(name) if glide_arguments(shlex.split(line, comments=True))]
    assert len(lines) >= 40  # the checks below see the blocks (a change of fences would hide them)


@pytest.mark.parametrize("name", READMES)
def test_every_glide_command_line_in_the_readmes_parses(name):
    """Each `glide` line of a shell block, parsed as `glide` parses it: the command exists, every
    option is one of its options and every value has the option's type and range."""
    problems = []
    for where, line in shell_lines(name):
        arguments = glide_arguments(shlex.split(line, comments=True))
        if arguments is None:
            continue
        path, command, rest = resolve(arguments)
        if command is None:
            problems.append(f"{where}: no command '{' '.join(path)}'")
            continue
        try:
            context = command.make_context(" ".join(path), list(rest))
            check_request(path[-1], context.params)
        except click_errors.ClickException as error:
            problems.append(f"{where}: {' '.join(path)}: {error.format_message()}")
        except RequestError as error:
            problems.append(f"{where}: {' '.join(path)}: {error}")
    assert not problems, "\n".join(problems)


def check_request(command: str, params: dict) -> None:
    """A rendering command's option values through its request's conversion and checks (typer
    only collects their text); its positional arguments are stood in for."""
    request_type = REQUESTS.get(command)
    if request_type is None:
        return
    fields = {name: option for name, option, _ in option_fields(request_type)}
    values = {name: value for name, value in params.items() if name in fields and fields[name].flags}
    stand_ins = {name: ("x" if option.value_type != "picture" else "x.png") for name, option in fields.items() if not option.flags}
    build(request_type, {**stand_ins, **values, **({"prompts": ("x",)} if "prompts" in fields else {})})


def prose(name: str) -> str:
    """The file without its fenced blocks."""
    return FENCE.sub("", (REPO_ROOT / name).read_text())


@pytest.mark.parametrize("name", READMES)
def test_options_named_in_glide_spans_belong_to_that_command(name):
    """`glide COMMAND ... --option` in running text: --option is one of COMMAND's options.
    Placeholders (PROMPT, N) are not parsed; spans whose command is a placeholder (COMMAND) or
    alternatives (list/download) are skipped."""
    problems = []
    for span in re.findall(r"`(glide [^`]+)`", prose(name)):
        path, command, rest = resolve(span.split()[1:])
        if command is None:
            if "/" not in path[-1] and not path[-1].isupper():
                problems.append(f"`{span}`: no command '{' '.join(path)}'")
            continue
        known = option_names(command)
        for token in rest:
            for option in re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", token.split("=")[0]):
                if option not in known:
                    problems.append(f"`{span}`: {' '.join(path)} has no option {option}")
        if rest:  # an invocation, not just the command's name: what it needs is there
            problems += [f"`{span}`: {' '.join(path)} needs {need}" for need in missing_parameters(command, rest)]
    assert not problems, "\n".join(problems)


def missing_parameters(command, tokens: list[str]) -> list[str]:
    """The required arguments and options of `command` that `tokens` (placeholders allowed:
    DATA, --steps N) do not give."""
    by_name = {name: parameter for parameter in command.params for name in [*parameter.opts, *parameter.secondary_opts]}
    given, positional, at = set(), 0, 0
    while at < len(tokens):
        token = tokens[at]
        parameter = by_name.get(token.split("=")[0]) if token.startswith("-") else None
        if parameter is None:
            positional += not token.startswith("-")
        else:
            given.add(parameter.name)
            at += 0 if parameter.is_flag or "=" in token else 1  # skip the option's value
        at += 1
    needs = []
    for parameter in command.params:
        if not parameter.required:
            continue
        if parameter.param_type_name == "argument":
            positional -= max(parameter.nargs, 1)
            if positional < 0:
                needs.append(parameter.metavar or parameter.name.upper())
        elif parameter.name not in given:
            needs.append(parameter.opts[0])
    return needs


def test_options_readme_names_exist():
    """Every `--option ...` span of README.md's and docs/'s running text is an option of some
    glide command (or of torchrun or gpu_check.sh, which they name too)."""
    known = all_option_names() | OTHER_PROGRAMS
    named = {
        option
        for name in ("README.md", *DOCS)
        for span in re.findall(r"`(--[^`]+)`", prose(name))
        for option in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", span)
    }
    assert len(named) > 50
    assert sorted(named - known) == []


@pytest.mark.parametrize("name", READMES)
def test_source_files_the_readmes_point_to_exist(name):
    """`tests/render/test_img2img.py`, `nets/prior.py`, `benchmarks/gpu_check.sh`...: paths of
    sources relative to the repository, src/glidecli or the README's folder."""
    readme = REPO_ROOT / name
    missing = [
        token
        for span in re.findall(r"`([^`\n]+)`", readme.read_text())
        for token in span.split()
        if re.fullmatch(r"[\w.-]+(/[\w.-]+)+\.(py|sh)", token)
        and not any((root / token).exists() for root in (REPO_ROOT, REPO_ROOT / "src" / "glidecli", readme.parent))
    ]
    assert missing == []


def command_named(*path: str):
    _, command, _ = resolve(list(path))
    return command


def defaults(command) -> dict[str, object]:
    return {name: parameter.default for parameter in command.params for name in parameter.opts}


def test_numeric_defaults_readme_states_are_the_commands():
    """"`--context` pixels (default 64": some command has --context with default 64."""
    stated = [found for name in ("README.md", *DOCS) for found in re.findall(r"`(--[\w-]+)`[\w -]{0,12}\(default (\d[\d.]*)", prose(name))]
    assert len(stated) >= 2
    every = glide_command()
    commands = [command_named(name) for name in every.list_commands(every.context_class(every))]
    for option, value in stated:
        found = {str(defaults(command)[option]) for command in commands if command is not None and option in defaults(command)}
        assert value in found, f"README: {option} (default {value}); the commands' defaults: {found}"


def test_the_sampler_table_names_generates_defaults():
    """The Samplers table's "the base default, 20 steps" and "the upsampler default, 15 steps"."""
    table = re.findall(r"^\| `(\w+)` \|.*\*\*the (base|upsampler) default, (\d+) steps\*\*", (REPO_ROOT / "docs" / "sampling.md").read_text(), re.M)
    assert sorted(stage for _, stage, _ in table) == ["base", "upsampler"]
    generate = defaults(command_named("generate"))
    for sampler, stage, steps in table:
        prefix = "--" if stage == "base" else "--upsample-"
        assert (generate[f"{prefix}sampler"], generate[f"{prefix}steps"]) == (sampler, steps), stage


def test_readme_links_every_page_of_docs():
    readme = (REPO_ROOT / "README.md").read_text()
    assert len(DOCS) >= 7 and [page for page in DOCS if f"]({page})" not in readme] == []
    for name in READMES:
        folder = (REPO_ROOT / name).parent
        for target in re.findall(r"\]\(([^)#:\s]+)(?:#[^)]*)?\)", (REPO_ROOT / name).read_text()):
            assert (folder / target).exists(), f"{name}: a link to {target}, which does not exist"
