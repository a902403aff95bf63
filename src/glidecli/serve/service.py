"""What every API of the server does below its routes: turn options and pictures into a
typed request (request.commands, the CLI's own), plan it against the manifest, and queue
it; read back jobs, pictures, models and samplers. The routes (native.py, a1111.py,
openai_images.py) only translate their format to and from these calls."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..files.manifest import Manifest, load_manifest
from ..request.commands import REQUESTS, field_names, file_pattern, from_mapping, option_fields
from ..request.failures import is_known_failure, one_line
from ..request.options import RequestError, ValueType
from .jobs import Job, JobQueue, QueueFull, default_devices
from .uploads import UploadError, UploadLimits, decode_base64, new_uploads, save_picture

if TYPE_CHECKING:
    from ..render.session import Session
    from ..request.plan import RenderPlan

NATIVE_API = "/glide/v1"  # the native API's routes (native.py), and the pictures' URLs


class ClientError(Exception):
    """A request the server refuses: `status` (4xx, or 503 for a full queue) and one line."""

    def __init__(self, message: str, status: int = 422, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


@dataclass(frozen=True)
class ServerConfig:
    """`glide serve`'s options."""

    host: str = "127.0.0.1"
    port: int = 7860
    out: Path = Path("outputs")
    weights: Path | None = None
    device: str = "auto"
    devices: str | None = None
    dtype: str = "auto"
    offload: str = "none"
    compile: bool = False
    offline: bool = False
    token: str | None = None
    max_queue: int = 16
    limits: UploadLimits = field(default_factory=UploadLimits)


class Service:
    def __init__(self, config: ServerConfig, manifest: Manifest | None = None,
                 session_factory: Callable[[str], Session] | None = None) -> None:
        self.config = config
        self.manifest = manifest or load_manifest(config.weights)
        self.out = config.out
        self.uploads_root = Path(tempfile.mkdtemp(prefix="glide-serve-uploads-"))
        self.devices = default_devices(config.devices, config.device)
        self.checkpoint: str | None = None  # A1111's /options: the base model its clients picked
        self.queue = JobQueue(self.devices, session_factory or self._new_session, self.out, max_queue=config.max_queue)

    def _new_session(self, device: str) -> Session:
        from ..render.session import Session

        return Session(
            self.manifest, device=device, dtype=self.config.dtype, offline=self.config.offline or None,
            compile=self.config.compile, offload=self.config.offload,
        )

    def close(self) -> None:
        import shutil

        self.queue.close()
        shutil.rmtree(self.uploads_root, ignore_errors=True)

    # --- jobs ---------------------------------------------------------------------------------------

    def submit(self, command: str, options: Mapping[str, Any], pictures: Mapping[str, Any] = {}) -> Job:
        """Queue `command` with `options` by their CLI names; its pictures (base64 text, or
        the bytes of `pictures`' uploaded files) by their names, among the options or apart.
        ClientError for anything no render could use."""
        request_type = REQUESTS.get(command)
        if request_type is None:
            raise ClientError(f"unknown command {command!r}; one of {', '.join(REQUESTS)}")
        names = field_names(request_type)
        kinds = {name: option.value_type for name, option, _ in option_fields(request_type)}
        given_pictures = {key: value for key, value in options.items() if kinds.get(names.get(key, "")) == ValueType.PICTURE}
        options = {key: value for key, value in options.items() if key not in given_pictures}
        uploads = new_uploads(self.uploads_root)
        try:
            for key, raw in {**given_pictures, **pictures}.items():
                name = names.get(key)
                if name is None or kinds[name] != ValueType.PICTURE:
                    raise ClientError(f"{command} takes no picture {key!r}")
                if raw is None or raw == "" or raw == b"":
                    continue
                data = raw if isinstance(raw, bytes) else decode_base64(raw, key, self.config.limits)
                save_picture(uploads, name, data, self.config.limits)
            request = from_mapping(request_type, options, uploads.paths)
            plan = self._plan(request)
            return self.queue.submit(plan, file_pattern(request_type), uploads.labels, cleanup=uploads.remove)
        except UploadError as error:
            uploads.remove()
            raise ClientError(str(error), error.status) from None
        except RequestError as error:
            uploads.remove()
            raise ClientError(str(error)) from None
        except QueueFull as error:
            uploads.remove()
            raise ClientError(str(error), 503, {"Retry-After": "5"}) from None
        except BaseException:
            uploads.remove()
            raise

    def _plan(self, request: Any) -> RenderPlan:
        from ..request.planner import plan_request

        try:
            plan = plan_request(request, self.manifest, adapter_paths=False)  # clients name manifest adapters, never server paths
        except Exception as error:  # noqa: BLE001 - sorted below
            if isinstance(error, RequestError) or is_known_failure(error):
                raise ClientError(one_line(str(error))) from None
            raise
        if plan.animate or plan.show_steps:  # files beside a picture: the command line's to write
            raise ClientError("animate and show-steps write files beside the pictures: use the command line (glide generate --animate)")
        return plan

    def job(self, job_id: str) -> Job:
        job = self.queue.get(job_id)
        if job is None:
            raise ClientError(f"no job {job_id!r}", 404)
        return job

    def status(self, job: Job) -> dict[str, Any]:
        return {
            "id": job.id,
            "command": job.command,
            "state": job.state,
            "position": self.queue.position(job),
            "stage": job.stage,
            "step": job.step,
            "total": job.total,
            "images": len(job.plan.jobs),
            "images_done": job.images_done,
            "files": [{**f, "url": image_url(f["name"])} for f in job.files],
            "warnings": job.plan.warnings,
            "error": job.error,
            "worker": job.worker,
            "created": job.created,
            "started": job.started_at,
            "finished": job.finished_at,
            "seconds": {"render": round(job.render_seconds, 4), "write": round(job.write_seconds, 4)},
        }

    # --- pictures -----------------------------------------------------------------------------------

    def image_path(self, name: str) -> Path:
        """A PNG under --out by its name there; nothing outside it, nothing but a regular .png."""
        out = self.out.resolve()
        relative = Path(name)
        if not name or relative.is_absolute() or ".." in relative.parts or relative.suffix.lower() != ".png" or "\\" in name:
            raise ClientError(f"no picture {name!r}", 404)
        path = (out / relative).resolve()
        if not path.is_relative_to(out) or not path.is_file():
            raise ClientError(f"no picture {name!r}", 404)
        return path

    def gallery(self, limit: int = 60, offset: int = 0) -> list[dict[str, Any]]:
        """The PNGs under --out, newest first, with their recorded settings."""
        from ..files.pngfile import ImageError, read_png_metadata

        out = self.out.resolve()
        if not out.is_dir():
            return []
        found = sorted((p for p in out.rglob("*.png") if p.is_file() and not p.name.startswith(".")), key=lambda p: p.stat().st_mtime, reverse=True)
        items = []
        for path in found[offset : offset + limit]:
            try:
                settings = read_png_metadata(path)
            except ImageError:
                settings = {}
            name = path.relative_to(out).as_posix()
            items.append({"name": name, "url": image_url(name), "settings": settings})
        return items

    # --- what there is ----------------------------------------------------------------------------

    def models(self) -> list[dict[str, Any]]:
        from ..files.fetch import cached_path

        rows = []
        for name, entry in self.manifest.models.items():
            size = getattr(entry.arch, "image_size", None)
            rows.append({"name": name, "kind": entry.kind, "cached": cached_path(entry) is not None, "image_size": size})
        return rows

    def health(self) -> dict[str, Any]:
        from .. import __version__

        return {
            "status": "ok",
            "version": __version__,
            "devices": self.devices,
            "queued": self.queue.waiting(),
            "running": len(self.queue.running()),
            "max_queue": self.config.max_queue,
            "loaded": {worker: session.loaded_models() for worker, session in self.queue.sessions.items()},
        }


def image_url(name: str) -> str:
    from urllib.parse import quote

    return f"{NATIVE_API}/images/{quote(name)}"


def commands_description() -> dict[str, Any]:
    """Every rendering command's options: names, type, default, limits and help (GET /commands)."""
    described = {}
    for command, request_type in REQUESTS.items():
        options = []
        for name, option, default in option_fields(request_type):
            options.append({
                "name": option.keys[0], "aliases": list(option.keys[1:]), "field": name, "type": option.value_type,
                "default": list(default) if isinstance(default, tuple) else default, "choices": list(option.choices) or None,
                "minimum": option.minimum, "maximum": option.maximum, "optional": option.optional, "help": option.help,
            })
        described[command] = {"summary": (request_type.__doc__ or "").strip(), "options": options}
    return described
