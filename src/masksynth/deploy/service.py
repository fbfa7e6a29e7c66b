"""`masksynth serve`: the classifier as an HTTP service (FastAPI on uvicorn) with a web page.

The model is loaded once at start-up. `POST /predict` takes one image, as the raw body
(any image/* type or application/octet-stream) or as a multipart upload, and answers the
same per-face records as `masksynth predict`. The service protects itself before it
works: a body over the size limit is refused with 413 as soon as its declared or received
length passes the limit (never read whole), a body that is not an image gets 415, an image
that does not decode 422, and requests beyond the concurrency limit 503 at once. A client
that trickles its request (slowloris) is cut off: a body not received within the body
timeout gets 408 and frees its place, and a connection with no request being answered
(a head still arriving, or bytes trickling after the answer) is closed after the header
timeout (uvicorn itself times out only idle keep-alive connections, and any byte restarts
that timer). Every refusal is JSON with a one-line
`error`; nothing a client sends can stop the service.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import time
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect

from masksynth import __version__
from masksynth.config import Decision, ServiceConfig
from masksynth.data.decode import RejectedImage
from masksynth.deploy.predictor import FacePredictor
from masksynth.deploy.sources import decode_as_trained

log = logging.getLogger(__name__)
RAW_TYPES = ("image/", "application/octet-stream")
# an image that cannot be used: too many pixels 413, not an image 415, the rest 422
REJECTED_STATUS = {"bomb": 413, "not_image": 415}
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Refused(Exception):
    """A request the service answers with `status` and a one-line reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


class Metrics:
    """Prometheus metrics of one app (its own registry: two apps in one process never clash)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "masksynth_requests", "HTTP requests", ["path", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "masksynth_predict_seconds",
            "Time to answer POST /predict (refusals included)",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.faces = Counter(
            "masksynth_faces", "Faces classified", ["label"], registry=self.registry
        )
        self.errors = Counter(
            "masksynth_errors", "Refused or failed requests", ["status"], registry=self.registry
        )
        self.in_flight = Gauge(
            "masksynth_predict_in_flight", "POST /predict being answered", registry=self.registry
        )


async def read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The body, refused with 413 as soon as its declared or received size passes `limit`,
    and with 408 when it has not all arrived within `timeout` seconds."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise Refused(400, "Content-Length is not a number") from None
        if length > limit:
            raise Refused(413, f"body of {length:,} bytes > limit {limit:,}")
    chunks: list[bytes] = []

    async def receive() -> None:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise Refused(413, f"body over the limit of {limit:,} bytes")
            chunks.append(chunk)

    try:
        await asyncio.wait_for(receive(), timeout)
    except ClientDisconnect:
        raise Refused(400, "the client went away before sending the whole body") from None
    except asyncio.TimeoutError:  # the builtin TimeoutError from Python 3.11
        raise Refused(408, f"the body did not arrive within {timeout:g} s") from None
    return b"".join(chunks)


async def image_bytes(request: Request, limit: int, timeout: float) -> tuple[bytes, str]:
    """The uploaded image's bytes and name, from a raw body or the first file of a form."""
    kind = request.headers.get("content-type", "application/octet-stream").lower()
    if not (kind.startswith(RAW_TYPES) or kind.startswith("multipart/form-data")):
        raise Refused(
            415,
            f"content type {kind.split(';')[0]!r} is not an image: send image/*, "
            "application/octet-stream or a multipart/form-data upload",
        )
    body = await read_body(request, limit, timeout)
    if not kind.startswith("multipart/form-data"):
        return body, "upload"
    sent = False

    async def replay() -> dict:  # the body already read, handed to the form parser once
        nonlocal sent
        if sent:
            return {"type": "http.request", "body": b"", "more_body": False}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=1, max_fields=10)
    except Exception as error:  # noqa: BLE001 - any parse failure is the client's
        reason = " ".join(str(error).split()) or type(error).__name__
        raise Refused(400, f"unreadable multipart form: {reason}") from None
    try:
        files = [v for v in form.values() if isinstance(v, UploadFile)]
        if not files:
            raise Refused(400, "the multipart form holds no file")
        return await files[0].read(), files[0].filename or "upload"
    finally:
        await form.close()


def create_app(checkpoint: str | Path, config: ServiceConfig | None = None) -> FastAPI:
    """The service for one model file (a classifier.pt or its .onnx export)."""
    config = config or ServiceConfig()
    decision = Decision(config.threshold, config.uncertain_band)
    metrics = Metrics()
    predictors: queue.Queue[FacePredictor] = queue.Queue()
    # loaded now, before the server starts: a bad model file is a one-line error, not a
    # server that starts and fails its lifespan
    # onnxruntime sessions share the cores (each would take all of them: oversubscribed)
    threads = max(1, (os.cpu_count() or 1) // config.workers) if config.workers > 1 else 0
    for _ in range(config.workers):
        predictors.put(FacePredictor(checkpoint, config.device, decision, config.backend, threads))
    first = predictors.queue[0]
    model_info = {
        "masksynth": __version__,
        "checkpoint": Path(checkpoint).name,
        "sha256": first.meta["checkpoint_sha256"],
        "arch": first.meta.get("arch"),
        "classes": first.classes,
        "positive_class": first.classes[first.positive],
        "size": first.size,
        "temperature": first.meta.get("temperature", 1.0),
        "backend": first.backend.name,
        "threshold": decision.threshold,
        "uncertain_band": decision.uncertain_band,
    }
    state = {"in_flight": 0, "ready": False}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state["ready"] = True
        yield
        state["ready"] = False

    app = FastAPI(title="masksynth", version=__version__, lifespan=lifespan, docs_url=None)

    @app.middleware("http")
    async def count(request: Request, call_next):
        try:
            response = await call_next(request)
        except Exception:  # noqa: BLE001 - a bug answers 500 and is logged; the service lives
            log.exception("failed: %s %s", request.method, request.url.path)
            response = JSONResponse({"error": "internal error (logged)"}, status_code=500)
        known = request.url.path if request.url.path in KNOWN_PATHS else "other"
        metrics.requests.labels(known, str(response.status_code)).inc()
        if response.status_code >= 400:
            metrics.errors.labels(str(response.status_code)).inc()
        return response

    @app.exception_handler(Refused)
    async def refused(_: Request, error: Refused) -> JSONResponse:
        # a refusal may leave the body unread: the connection ends with the answer, so the
        # rest of a body can never hold it open
        headers = {"Connection": "close"}
        if error.status == 503:
            headers["Retry-After"] = "1"
        return JSONResponse({"error": error.reason}, status_code=error.status, headers=headers)

    def classify(data: bytes, name: str) -> dict:
        try:  # decoded before a model is taken: a bad upload never holds one
            rgb = decode_as_trained(data, name, first.meta["prepare"])
        except RejectedImage as error:
            raise Refused(REJECTED_STATUS.get(error.kind, 422), str(error)) from None
        predictor = predictors.get()
        try:
            faces = predictor.predict(rgb)
        finally:
            predictors.put(predictor)
        height, width = rgb.shape[:2]
        return {"width": width, "height": height, "faces": faces}

    @app.post("/predict")
    async def predict(request: Request) -> JSONResponse:
        if state["in_flight"] >= config.max_concurrency:
            raise Refused(503, f"busy: {config.max_concurrency} requests in flight, retry")
        state["in_flight"] += 1
        metrics.in_flight.inc()
        started = time.perf_counter()
        try:
            data, name = await image_bytes(request, config.max_body_bytes, config.body_timeout_s)
            result = await run_in_threadpool(classify, data, name)
        finally:
            state["in_flight"] -= 1
            metrics.in_flight.dec()
            seconds = time.perf_counter() - started
            metrics.latency.observe(seconds)
        for face in result["faces"]:
            metrics.faces.labels(face["label"]).inc()
        return JSONResponse(
            {**result, "n_faces": len(result["faces"]), "seconds": round(seconds, 4)}
        )

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> JSONResponse:
        ok = state["ready"]
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    @app.get("/version")
    async def version() -> dict:
        return model_info

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return HTMLResponse(WEB_PAGE.read_text(encoding="utf-8"))

    return app


KNOWN_PATHS = frozenset({"/", "/predict", "/health", "/ready", "/version", "/metrics"})
WEB_PAGE = resources.files("masksynth.deploy") / "static" / "index.html"


def head_deadline_protocol(seconds: float) -> type:
    """uvicorn's h11 protocol, closing a connection that, `seconds` after it opened or after
    the previous answer was sent, has no request being answered."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeadDeadline(H11Protocol):
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(seconds, self._expire)

        def _disarm(self) -> None:
            if getattr(self, "_deadline", None) is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expire(self) -> None:
            self._deadline = None
            # no request being answered: either no complete head yet, or the answer was
            # sent and the client is still trickling (a body the service refused unread)
            answering = self.cycle is not None and not self.cycle.response_complete
            if not answering and not self.transport.is_closing():
                self.transport.close()

    return HeadDeadline


def serve(checkpoint: str | Path, host: str, port: int, config: ServiceConfig) -> None:
    import uvicorn  # start-up cost

    app = create_app(checkpoint, config)  # a bad model file fails here, in one line
    log.info("serving %s on http://%s:%d/ (Ctrl-C stops)", checkpoint, host, port)
    uvicorn.run(
        app,
        host=host,
        port=port,
        http=head_deadline_protocol(config.header_timeout_s),
        log_level="warning",
        access_log=False,
    )
