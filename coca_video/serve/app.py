"""The ASGI application of ``coca-video serve``: thin routes over the library (:mod:`.library`) and the model
(:mod:`.encoder`), with the safety rules in one middleware.

    GET  /                      the page (page.html: one file, script and styles inline, nothing from outside)
    GET  /api/meta              rows, generation, labels, limits
    GET  /api/search?q=&k=&offset=&label=&path=
    GET  /api/similar?id=&g=&k=&offset=&label=&path=      nearest rows by the stored embedding (other videos)
    POST /api/image?k=&offset=&label=&path=               body: an image file
    GET  /video/{id}?g=          the row's video file (HTTP Range answered: 206), by row id only
    GET  /thumbnail/{id}?g=      a JPEG of the row's middle frame

Every error is JSON ``{"error": message}`` with a 4xx code (a 500 only for our own bugs, and the server keeps
running). A path never comes from the client: ids are row numbers of the current snapshot (``g``, its generation,
guards against ids from before a reload: 410), and a row's file is served only when it is still a regular file with
a video extension after resolving links.
"""

from __future__ import annotations

import hmac
import mimetypes
import os
import re
import secrets
import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import unquote

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..data.video import VIDEO_EXTENSIONS
from ..errors import DataError
from ..video.thumbnails import middle_thumbnail
from .batching import TextSearch, TextSearches
from .encoder import QueryEncoder
from .library import Library, Snapshot
from .limits import Limits

TOKEN_COOKIE = "coca_video_token"
LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1", "[::1]"}
ROW_ID = re.compile(r"[0-9]{1,12}")


@dataclass
class ServerState:
    """What the routes use (injected, not global): the rows, the model, the limits, and the access rules."""

    library: Library
    encoder: QueryEncoder
    searches: TextSearches  # text searches, batched across concurrent requests
    limits: Limits
    token: str | None = None
    loopback: bool = True  # bound to a loopback address: requests must name a loopback Host (DNS rebinding)


def state(request: Request) -> ServerState:
    """The server state of the app handling ``request``."""
    return request.app.state.serve


def fail(status: int, message: str) -> HTTPException:
    """An HTTP error whose JSON body is ``{"error": message}``."""
    return HTTPException(status_code=status, detail=message)


# -- results ---------------------------------------------------------------------------------------------------------
def result(snapshot: Snapshot, row: int, score: float) -> dict[str, Any]:
    """One row as the API returns it."""
    path = snapshot.rows.paths[row].as_py()
    start, end = snapshot.window(row)
    found = {"id": row, "path": path, "name": os.path.basename(path), "start": start, "end": end,
             "score": round(float(score), 6), "available": servable(path),
             "video_url": f"/video/{row}?g={snapshot.generation}",
             "thumbnail_url": f"/thumbnail/{row}?g={snapshot.generation}"}
    if snapshot.labels is not None:
        found["label"] = snapshot.labels[row]
    if snapshot.captions is not None:
        found["caption"] = snapshot.captions[row]
    return found


Ranker = Callable[[int, "np.ndarray | None"], "tuple[np.ndarray, np.ndarray]"]  # (count, rows) -> (best, scores)


def ranked(snapshot: Snapshot, rank: Ranker | np.ndarray, k: int, offset: int, label: str, path: str,
           exclude: np.ndarray | None = None) -> dict[str, Any]:
    """Page ``offset // k`` of the best rows among those the filters keep, minus ``exclude``: best for the query
    vector ``rank``, or as the function ``rank(count, rows)`` ranks them."""
    if isinstance(rank, np.ndarray):
        query = rank
        rank = lambda count, rows: snapshot.rank(query, count, rows)  # noqa: E731
    rows = snapshot.matching(label, path)
    excluded = set() if exclude is None else set(exclude.tolist())
    if rows is not None and excluded:
        rows = rows[~np.isin(rows, exclude)]
        excluded = set()
    total = (len(snapshot) if rows is None else len(rows)) - len(excluded)
    best, scores = rank(offset + k + len(excluded), rows)
    kept = [(int(r), s) for r, s in zip(best, scores) if int(r) not in excluded][offset:offset + k]
    return {"generation": snapshot.generation, "total": max(total, 0), "offset": offset, "k": k,
            "results": [result(snapshot, row, score) for row, score in kept]}


# -- checks ----------------------------------------------------------------------------------------------------------
def check_page(limits: Limits, k: int, offset: int) -> None:
    if not 1 <= k <= limits.max_k:
        raise fail(400, f"k must be between 1 and {limits.max_k}, got {k}")
    if not 0 <= offset <= limits.max_offset:
        raise fail(400, f"offset must be between 0 and {limits.max_offset}, got {offset}")


def check_text(limits: Limits, name: str, value: str, required: bool = False) -> str:
    value = value.strip()
    if required and not value:
        raise fail(400, f"{name}: give a query (?{name}=...)")
    if len(value) > limits.max_query_chars:
        raise fail(400, f"{name} is {len(value)} characters long; at most {limits.max_query_chars} are allowed")
    return value


def snapshot_row(snapshot: Snapshot, row: str, generation: int | None) -> int:
    """The row number ``row`` names in ``snapshot``: digits only and in range, else 404; ids from another
    generation (before a reload) 410."""
    if not ROW_ID.fullmatch(row) or int(row) >= len(snapshot):
        raise fail(404, "no such row")
    if generation is not None and generation != snapshot.generation:
        raise fail(410, "the library was reloaded since these results were made (new rows); search again")
    return int(row)


def servable(path: str) -> bool:
    """Whether :func:`video_file` would serve ``path`` now."""
    try:
        video_file(path)
    except HTTPException:
        return False
    return True


def video_file(path: str) -> Path:
    """The file to serve for a row's ``path``: it must still be a regular file with a video extension once links
    are resolved, else a 404 saying so."""
    real = Path(os.path.realpath(path))
    if not real.is_file():
        raise fail(404, f"video file missing: {path} (moved or deleted since it was scored)")
    if real.suffix.lower() not in VIDEO_EXTENSIONS:
        raise fail(404, f"not a video file any more: {path}")
    return real


# -- routes ----------------------------------------------------------------------------------------------------------
PageQuery = dict[str, Any]


def page_params(k: int = Query(20), offset: int = Query(0), label: str = Query(""),
                path: str = Query("")) -> PageQuery:
    return {"k": k, "offset": offset, "label": label, "path": path}


def checked(server: ServerState, params: PageQuery) -> PageQuery:
    check_page(server.limits, params["k"], params["offset"])
    return {**params, "label": check_text(server.limits, "label", params["label"]),
            "path": check_text(server.limits, "path", params["path"])}


def api_router() -> APIRouter:
    api = APIRouter(prefix="/api")

    @api.get("/meta")
    def meta(server: ServerState = Depends(state)) -> dict[str, Any]:
        snapshot = server.library.current
        return {"rows": len(snapshot), "generation": snapshot.generation, "labels": snapshot.label_set(),
                "captions": snapshot.captions is not None, "segments": snapshot.rows.starts is not None,
                "index": snapshot.index is not None, "model": snapshot.provenance.get("model", "default"),
                "embeddings": str(server.library.embeddings), "reload_error": server.library.reload_error,
                "limits": asdict(server.limits)}

    @api.get("/search")
    def search(q: str = Query(""), params: PageQuery = Depends(page_params),
               server: ServerState = Depends(state)) -> dict[str, Any]:
        params = checked(server, params)
        query = check_text(server.limits, "q", q, required=True)
        snapshot = server.library.current
        search = lambda count, rows: server.searches(TextSearch(snapshot, query, count, rows))  # noqa: E731
        return {"query": query, **ranked(snapshot, search, **params)}

    @api.get("/similar")
    def similar(id: str = Query(""), g: int | None = Query(None), params: PageQuery = Depends(page_params),
                server: ServerState = Depends(state)) -> dict[str, Any]:
        params = checked(server, params)
        snapshot = server.library.current
        row = snapshot_row(snapshot, id, g)
        found = ranked(snapshot, snapshot.vectors[row], **params, exclude=snapshot.same_video(row))
        return {"similar_to": result(snapshot, row, 1.0), **found}

    @api.post("/image")
    async def image(request: Request, params: PageQuery = Depends(page_params),
                    server: ServerState = Depends(state)) -> dict[str, Any]:
        params = checked(server, params)
        content = await read_upload(request, server.limits.max_upload_bytes)
        try:
            query = await run_in_threadpool(server.encoder.image, content)
        except DataError as err:
            raise fail(400, f"image upload: {err}") from None
        snapshot = server.library.current
        return {"query": "(image)", **await run_in_threadpool(ranked, snapshot, query, **params)}

    return api


async def read_upload(request: Request, limit: int) -> bytes:
    """The request body (an image file), refused with 413 past ``limit`` bytes (by its Content-Length before
    reading, else while reading) and 415 for a multipart form."""
    if request.headers.get("content-type", "").startswith("multipart/"):
        raise fail(415, "send the image file itself as the request body (curl --data-binary @FILE), not a form")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise fail(413, f"upload of {int(declared):,} bytes is larger than the limit of {limit:,} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise fail(413, f"upload is larger than the limit of {limit:,} bytes")
        chunks.append(chunk)
    if not size:
        raise fail(400, "image upload: the request body is empty (send an image file)")
    return b"".join(chunks)


class Thumbnails:
    """JPEG thumbnails of rows (their window's middle frame, letterboxed: :mod:`coca_video.video.thumbnails`), made
    one at a time and kept (least recently used dropped past ``capacity``)."""

    def __init__(self, capacity: int = 4096) -> None:
        self.capacity = capacity
        self.cache: OrderedDict[tuple, bytes | None] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, path: Path, start: float | None, end: float | None) -> bytes | None:
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns, start, end)
        with self.lock:
            if key not in self.cache:
                try:
                    self.cache[key] = middle_thumbnail(str(path), start, end)
                except Exception:  # noqa: BLE001 -- an unreadable video has no thumbnail; the page shows so
                    self.cache[key] = None
                while len(self.cache) > self.capacity:
                    self.cache.popitem(last=False)
            self.cache.move_to_end(key)
            return self.cache[key]


def media_router() -> APIRouter:
    media = APIRouter()
    thumbnails = Thumbnails()

    @media.get("/video/{row}")
    def video(row: str, g: int | None = Query(None), server: ServerState = Depends(state)) -> FileResponse:
        snapshot = server.library.current
        path = video_file(snapshot.rows.paths[snapshot_row(snapshot, row, g)].as_py())
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return FileResponse(path, media_type=kind, headers={"Cache-Control": "no-store"})

    @media.get("/thumbnail/{row}")
    def thumbnail(row: str, g: int | None = Query(None), server: ServerState = Depends(state)) -> Response:
        snapshot = server.library.current
        number = snapshot_row(snapshot, row, g)
        path = video_file(snapshot.rows.paths[number].as_py())
        jpeg = thumbnails.get(path, *snapshot.window(number))
        if jpeg is None:
            raise fail(404, f"no thumbnail: {snapshot.rows.paths[number].as_py()} could not be decoded")
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    return media


PAGE = resources.files("coca_video.serve").joinpath("page.html")
NONCE = "__NONCE__"


def page_router() -> APIRouter:
    page = APIRouter()
    template = PAGE.read_text(encoding="utf-8")

    @page.get("/", response_class=HTMLResponse)
    def index(request: Request) -> HTMLResponse:
        nonce = secrets.token_urlsafe(16)
        request.state.nonce = nonce
        return HTMLResponse(template.replace(NONCE, nonce))

    return page


# -- safety ----------------------------------------------------------------------------------------------------------
def content_policy(nonce: str | None) -> str:
    """The Content-Security-Policy: the page may run only its own inline script and style (by nonce) and talk only
    to this server; nothing else may load anything."""
    if nonce is None:
        return "default-src 'none'; img-src 'self'; media-src 'self'; frame-ancestors 'none'; base-uri 'none'"
    return (f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; img-src 'self' blob:; "
            "media-src 'self'; connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'")


def authorised(request: Request, token: str) -> bool:
    """The request carries ``token``: ``Authorization: Bearer TOKEN`` or the page's cookie."""
    header = request.headers.get("authorization", "")
    given = header[7:] if header.lower().startswith("bearer ") else unquote(request.cookies.get(TOKEN_COOKIE, ""))
    return hmac.compare_digest(given.encode("utf-8", "replace"), token.encode("utf-8"))


def host_allowed(request: Request) -> bool:
    """The Host header names a loopback address (a page on another site that rebinds its name to 127.0.0.1 sends
    its own name)."""
    host = request.headers.get("host", "")
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    return name.lower() in LOOPBACK_NAMES


async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    """Every request: a loopback Host when bound to loopback, the token when one is set (the page itself is
    served without it: it holds no data and asks for the token), then the security headers on the answer."""
    server = state(request)
    if server.loopback and not host_allowed(request):
        response: Response = JSONResponse({"error": "unknown Host header (this server answers localhost only)"},
                                          status_code=421)
    elif server.token and request.url.path != "/" and not authorised(request, server.token):
        response = JSONResponse({"error": "this server needs its token: Authorization: Bearer TOKEN"},
                                status_code=401, headers={"WWW-Authenticate": "Bearer"})
    else:
        response = await call_next(request)
    response.headers["Content-Security-Policy"] = content_policy(getattr(request.state, "nonce", None))
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cross-Origin-Resource-Policy"] = "same-origin"
    return response


def install_error_handlers(app: FastAPI) -> None:
    """Errors as ``{"error": message}``: HTTP errors with their code, bad parameters 400, our bugs 500."""

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        message = "not found" if err.detail in ("Not Found", None) else str(err.detail)
        return JSONResponse({"error": message}, status_code=err.status_code, headers=err.headers)

    @app.exception_handler(RequestValidationError)
    async def bad_parameter(request: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {}
        name = ".".join(str(part) for part in first.get("loc", ())[1:]) or "request"
        return JSONResponse({"error": f"{name}: {first.get('msg', 'invalid')}"}, status_code=400)

    @app.exception_handler(Exception)
    async def bug(request: Request, err: Exception) -> JSONResponse:
        return JSONResponse({"error": f"internal error ({err.__class__.__name__}); the server keeps running"},
                            status_code=500)


def create_app(server: ServerState) -> FastAPI:
    """The application over ``server``'s library and model."""
    app = FastAPI(title="coca-video serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.serve = server
    app.middleware("http")(guard)
    install_error_handlers(app)
    for router in (page_router(), api_router(), media_router()):
        app.include_router(router)
    return app
