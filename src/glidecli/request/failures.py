"""The one line a front end shows for an expected failure: the CLI prints it after "error: ",
the server puts it in a failed job or a 4xx answer. Anything else is a bug and keeps its
traceback."""

from __future__ import annotations

import sys
from collections.abc import Sequence

# Exceptions whose message is a complete one-line explanation, by module; a module that was
# never imported cannot have raised its error, so none is imported here (no torch at --help).
KNOWN_FAILURES = (
    ("glidecli.files.arch_settings", "ManifestError"),
    ("glidecli.files.weights_error", "WeightsError"),
    ("glidecli.nets.checkpoint", "CheckpointError"),
    ("glidecli.files.pngfile", "ImageError"),
    ("glidecli.files.lora_file", "AdapterError"),
    ("glidecli.nets.tokenizer", "TokenizerFileError"),
    ("glidecli.render.session", "RenderError"),
    ("glidecli.request.values", "RequestError"),
)


def is_known_failure(error: BaseException, more: Sequence[tuple[str, str]] = ()) -> bool:
    for module_name, class_name in (*KNOWN_FAILURES, *more):
        module = sys.modules.get(module_name)
        if module is not None and isinstance(error, getattr(module, class_name)):
            return True
    return False


def is_out_of_memory(error: BaseException) -> bool:
    """A GPU's (torch.OutOfMemoryError) or the host's: too big a batch, say."""
    torch = sys.modules.get("torch")
    oom = getattr(torch, "OutOfMemoryError", ()) if torch is not None else ()
    return isinstance(error, (MemoryError, *((oom,) if oom else ()))) or (
        isinstance(error, RuntimeError) and "can't allocate memory" in str(error)
    )


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def failure_message(error: BaseException, more: Sequence[tuple[str, str]] = ()) -> str | None:
    """The line to show for an expected failure of a render (None: a bug). `more` names
    further exception types of the caller's own ((module, class) pairs)."""
    if is_known_failure(error, more):
        return one_line(str(error))
    if is_out_of_memory(error):
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return f"out of memory ({one_line(first[:200])}); try a smaller --batch-size"
    if isinstance(error, OSError):
        return one_line(f"{error.strerror or error}{f': {error.filename}' if error.filename else ''}")
    return None
