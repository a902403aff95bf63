"""What every API of the server does below its routes: turn options and pictures into a
typed request (request.commands, the CLI's own), plan it against the manifest, and queue
it; read back jobs, pictures, models and samplers. The routes (native.py, a1111.py,
openai_images.py) only translate their format to and from these calls."""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..files.manifest import Manifest, load_manifest
from ..files.roles import Roles
from ..request.building import field_names, from_mapping
from ..request.commands import REQUESTS, Request, field_roles, file_pattern, option_fields
from ..request.failures import is_known_failure, one_line
from ..request.options import STEP_OPTIONS, step_count
from ..request.values import RequestError, ValueType
from .jobs import Job, JobQueue, QueueFull, default_devices
from .limits import KEEP_JOBS_MINUTES, MAX_IMAGES, MAX_STEPS
from .uploads import UploadError, UploadLimits, decode_base64, hide_uploads, new_uploads, save_picture

if TYPE_CHECKING:
    from ..render.session import Session
    from ..request.plan import RenderPlan

NATIVE_API = "/glide/v1"  # the native API's routes (native.py), and the pictures' URLs
# The pictures the server serves from --out, by suffix, with their media types.
PICTURE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}


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
    max_images: int = MAX_IMAGES
    max_steps: int = MAX_STEPS
    keep_jobs: float = KEEP_JOBS_MINUTES


class Service:
    def __init__(self, config: ServerConfig, manifest: Manifest | None = None,
                 session_factory: Callable[[str], Session] | None = None) -> None:
        self.config = config
        self.manifest = manifest or load_manifest(config.weights)
        self.out = config.out
        self.uploads_root = Path(tempfile.mkdtemp(prefix="glide-serve-uploads-"))
        self.devices = default_devices(config.devices, config.device)
        self._side: Session | None = None
        self._side_lock = threading.Lock()
        self.checkpoint: str | None = None  # A1111's /options: the base model its clients picked
        self.queue = JobQueue(self.devices, session_factory or self._new_session, self.out, max_queue=config.max_queue,
                              keep_seconds=config.keep_jobs * 60)

    def _new_session(self, device: str) -> Session:
        from ..render.session import Session

        return Session(
            self.manifest, device=device, dtype=self.config.dtype, offline=self.config.offline or None,
            compile=self.config.compile, offload=self.config.offload,
        )

    @contextmanager
    def side_session(self) -> Iterator[Session]:
        """A Session beside the workers' (on the first device), one caller at a time: for work
        that is no render, such as ranking captions by CLIP."""
        with self._side_lock:
            if self._side is None:
                self._side = self._new_session(self.devices[0])
            yield self._side

    def close(self) -> None:
        import shutil

        self.queue.close()
        shutil.rmtree(self.uploads_root, ignore_errors=True)

    # --- jobs ---------------------------------------------------------------------------------------

    def submit(self, command: str, options: Mapping[str, Any], pictures: Mapping[str, Any] = {}, previews: int = 0,
               every_step: bool = False) -> Job:
        """Queue `command` with `options` by their CLI names; its pictures (base64 text, or
        the bytes of `pictures`' uploaded files) by their names, among the options or apart.
        ClientError for anything no render could use, or past the server's caps (--max-images,
        --max-steps). `previews`: how many previews of the first stage to publish (Job).
        `every_step`: an event at each sampling step (see Job)."""
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
            self._check_steps(request)  # before planning: a long request is refused at once
            plan = self._plan(request)
            self._check_images(len(plan.jobs))
            return self.queue.submit(plan, file_pattern(request_type), uploads.labels, cleanup=uploads.remove, previews=previews,
                                     every_step=every_step)
        except UploadError as error:
            uploads.remove()
            raise ClientError(str(error), error.status) from None
        except RequestError as error:
            uploads.remove()
            raise ClientError(hide_uploads(str(error), uploads.labels)) from None
        except ClientError as error:
            uploads.remove()
            raise ClientError(hide_uploads(str(error), uploads.labels), error.status, error.headers) from None
        except QueueFull as error:
            uploads.remove()
            raise ClientError(str(error), 503, {"Retry-After": "5"}) from None
        except BaseException:
            uploads.remove()
            raise

    def _check_images(self, images: int) -> None:
        if images > self.config.max_images:
            raise ClientError(f"the request asks for {images} pictures; this server makes at most "
                              f"{self.config.max_images} per request (--max-images)")

    def _check_steps(self, request: Request) -> None:
        for name, option, _ in option_fields(type(request)):
            value = getattr(request, name)
            if option in STEP_OPTIONS and isinstance(value, str) and step_count(value) > self.config.max_steps:
                raise ClientError(f"{option.flag} {value} asks for {step_count(value)} steps; this server takes at most "
                                  f"{self.config.max_steps} (--max-steps)")

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

    # --- pictures -----------------------------------------------------------------------------------

    def image_path(self, name: str) -> Path:
        """A picture under --out by its name there; nothing outside it, nothing but a regular
        picture file (PICTURE_TYPES)."""
        out = self.out.resolve()
        relative = Path(name)
        if not name or relative.is_absolute() or ".." in relative.parts or relative.suffix.lower() not in PICTURE_TYPES or "\\" in name:
            raise ClientError(f"no picture {name!r}", 404)
        path = (out / relative).resolve()
        if not path.is_relative_to(out) or not path.is_file():
            raise ClientError(f"no picture {name!r}", 404)
        return path

    def gallery(self, limit: int = 60, offset: int = 0) -> list[dict[str, Any]]:
        """The pictures under --out, newest first, with their recorded settings."""
        from ..files.pictures import read_picture_record
        from ..files.pngfile import ImageError

        out = self.out.resolve()
        if not out.is_dir():
            return []
        found = sorted((p for p in out.rglob("*") if p.suffix.lower() in PICTURE_TYPES and p.is_file() and not p.name.startswith(".")),
                       key=lambda p: p.stat().st_mtime, reverse=True)
        items = []
        for path in found[offset : offset + limit]:
            try:
                settings = read_picture_record(path)
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


def picture_media_type(path: Path) -> str:
    return PICTURE_TYPES[path.suffix.lower()]


def image_url(name: str) -> str:
    from urllib.parse import quote

    return f"{NATIVE_API}/images/{quote(name)}"


def commands_description(roles: Roles | None = None) -> dict[str, Any]:
    """Every rendering command's options: names, type, default, limits and help (GET /commands).
    With a manifest's `roles`, a model option's default is the model that plays its role there."""
    described = {}
    for command, request_type in REQUESTS.items():
        options = []
        filled = field_roles(request_type)
        for name, option, default in option_fields(request_type):
            if default is None and roles is not None and name in filled:
                default = roles[filled[name]]
            options.append({
                "name": option.keys[0], "aliases": list(option.keys[1:]), "field": name, "type": option.value_type,
                "default": list(default) if isinstance(default, tuple) else default, "choices": list(option.choices) or None,
                "minimum": option.minimum, "maximum": option.maximum, "optional": option.optional, "help": option.help,
            })
        described[command] = {"summary": (request_type.__doc__ or "").strip(), "options": options}
    return described
