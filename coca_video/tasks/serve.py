"""Search and watch a scored video library in the browser, safe to leave running:

    coca-video serve scores.embeddings.parquet --scores scores.parquet     # http://127.0.0.1:8000/

The model loads once; text, image and "more like this" queries rank the rows of the embeddings file as ``search``
does (exactly, or through the int8 index when it is fresh). The routes and their safety rules:
:mod:`coca_video.serve.app`; reloading when ``score`` rewrites the files: :mod:`coca_video.serve.library`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import socket
import sys
from typing import Any

from ..config import ModelConfig
from ..errors import ConfigError, InputError, MissingExtraError
from ..model import get_tokenizer
from ..runtime import load_model
from ..search import query_model
from .serve_config import ServeConfig

TOKEN_ENV = "COCA_VIDEO_TOKEN"


def require_serve() -> None:
    """FastAPI and uvicorn import; else a one-line error naming the extra."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise MissingExtraError("coca-video serve needs FastAPI and uvicorn: pip install 'coca-video[serve]'") from None


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (or ``localhost``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on (host, port); a one-line error when the address cannot be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as err:
        sock.close()
        raise ConfigError(f"host/port: cannot listen on {host}:{port} ({err.strerror or err})") from None
    sock.listen(128)
    return sock


def model_block(cfg: ServeConfig, provenance: dict[str, str]) -> ModelConfig:
    """The model block to load, chosen as ``search`` chooses (:func:`~coca_video.search.query_model`): the
    block's model, or when it names the built-in default without weights the one that made the embeddings; and the
    weights of that provenance when the model is the one it names."""
    unset = cfg.model.name == "default" and cfg.model.pretrained is None
    name, pretrained = query_model(None if unset else cfg.model.name, cfg.model.pretrained, provenance)
    return dataclasses.replace(cfg.model, name=name, pretrained=pretrained)


def build_server(cfg: ServeConfig) -> Any:
    """The :class:`~coca_video.serve.app.ServerState` of ``cfg``: the library read and the model loaded once."""
    from ..serve.app import ServerState
    from ..serve.batching import TextSearches
    from ..serve.encoder import QueryEncoder
    from ..serve.library import Library

    library = Library(cfg.embeddings, cfg.scores, cfg.reload_seconds, cfg.dedup)
    model_cfg = model_block(cfg, library.current.provenance)
    encoder = QueryEncoder(load_model(model_cfg), get_tokenizer(model_cfg.name), model_cfg)
    width, stored = encoder.text("a").shape[0], library.current.vectors.shape[1]
    if width != stored:
        raise ConfigError(f"model {model_cfg.name} makes {width}-d embeddings; {cfg.embeddings} holds {stored}-d ones "
                          f"(pass the model that scored them: --model/--pretrained)")
    token = cfg.token or os.environ.get(TOKEN_ENV) or None
    return ServerState(library, encoder, TextSearches(encoder), cfg.limits, token, loopback=is_loopback(cfg.host))


def run(cfg: ServeConfig) -> dict[str, Any]:
    """Serve ``cfg.embeddings`` until Ctrl-C (or SIGTERM); returns what was served."""
    require_serve()
    import uvicorn

    from ..serve.app import create_app

    if not cfg.embeddings:
        raise ConfigError("serve: give the embeddings file (<out>.embeddings.parquet written by score)")
    if not os.path.isfile(cfg.embeddings):
        raise InputError(f"{cfg.embeddings}: embeddings file not found (score writes <out>.embeddings.parquet)")
    sock = bind(cfg.host, cfg.port)  # before the model loads: a port in use is said at once
    try:
        server = build_server(cfg)
    except BaseException:
        sock.close()
        raise
    port = sock.getsockname()[1]
    url = f"http://{cfg.host if ':' not in cfg.host else '[' + cfg.host.strip('[]') + ']'}:{port}/"
    if not server.loopback:
        print(f"coca-video serve: warning: listening on {cfg.host}, reachable from other machines"
              f"{'' if server.token else ' by anyone: set --token or ' + TOKEN_ENV}", file=sys.stderr, flush=True)
    print(f"coca-video serve: {len(server.library.current)} rows of {cfg.embeddings} at {url} "
          f"{'(token required) ' if server.token else ''}- Ctrl-C stops", file=sys.stderr, flush=True)
    uvicorn_cfg = uvicorn.Config(create_app(server), log_level="warning", access_log=False, lifespan="off",
                                 timeout_graceful_shutdown=5)
    server.library.start()
    try:
        uvicorn.Server(uvicorn_cfg).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled once it has shut down
        pass
    finally:
        server.library.stop()
        server.searches.close()
        sock.close()
    return {"served": cfg.embeddings, "rows": len(server.library.current), "url": url, "stopped": True}
