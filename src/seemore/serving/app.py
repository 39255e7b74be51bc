"""The HTTP server (`seemore serve`): OpenAI's chat-completions API on a model loaded once,
every request decoded by one continuous-batching Engine, so that concurrent requests share
each decode step. Every bad request is a 4xx with OpenAI's error object; one line is logged
per request.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse

from seemore.errors import UserError, first_line
from seemore.prompt import CAPTION_PROMPT
from seemore.serving.chat import APIError, ChatPrompt, parse_chat
from seemore.serving.engine import Engine
from seemore.serving.engine import Request as EngineRequest

log = logging.getLogger("seemore.serve")


@dataclass(frozen=True)
class Limits:
    """max_queue: requests waiting or running before 429; timeout_s: a request's longest
    decode; max_body_bytes and max_image_bytes: the largest request and image."""

    max_batch: int = 32
    max_queue: int = 256
    timeout_s: float = 60.0
    max_body_bytes: int = 32 * 2**20
    max_image_bytes: int = 20 * 2**20


class Handoff(asyncio.Queue):
    """An asyncio queue that the engine's thread puts tokens into (put, as a queue.Queue)."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        super().__init__()
        self.loop = loop

    def put(self, item) -> None:  # type: ignore[override]
        self.loop.call_soon_threadsafe(self.put_nowait, item)


def start_engine(model, max_batch: int, compile: bool | None) -> Engine:
    """The engine, its decode steps compiled (compile True; a UserError if torch.compile
    fails here), eager (False), or compiled where torch.compile works, which is on a CPU
    with a C++ compiler or on CUDA, and eager elsewhere, saying why (None)."""
    if compile is None and model.device.type not in ("cpu", "cuda"):
        log.warning("decoding without torch.compile: it is for cpu and cuda, this model is "
                    "on %s", model.device.type)
        compile = False
    if compile is False:
        return Engine(model, max_batch=max_batch)
    log.info("compiling the decode step (the first time some seconds, then from inductor's "
             "cache)")
    try:
        engine = Engine(model, max_batch=max_batch, compile=True)
    except Exception as e:  # inductor's errors are many kinds, each a page long
        if compile:
            raise UserError(f"--compile: torch.compile failed here ({first_line(e)}); serve "
                            f"with --no-compile") from e
        log.warning("decoding without torch.compile, which failed here: %s", first_line(e))
        return Engine(model, max_batch=max_batch)
    log.info("compiled the decode step in %.1f s", engine.warmed_s)
    return engine


def create_app(model, name: str, answers: bool, limits: Limits = Limits(),
               allow_dir: Path | None = None, compile: bool | None = False) -> FastAPI:
    """The app serving model as name. answers: a VLM that answers about images (else a
    language model that continues text). compile: see start_engine."""
    engine = start_engine(model, limits.max_batch, compile)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        engine.close()

    app = FastAPI(title="seemore", lifespan=lifespan)
    app.state.engine = engine
    pending = 0  # requests admitted and not yet finished
    tokenizer = model.tokenizer
    draws = getattr(model, "vq", None) is not None

    def error(e: APIError) -> JSONResponse:
        headers = {"Retry-After": "1"} if e.status == 429 else None
        return JSONResponse(e.body(), status_code=e.status, headers=headers)

    page = (Path(__file__).parent / "page.html").read_text().replace(
        "__CAPTION_PROMPT__", json.dumps(CAPTION_PROMPT))

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        """The web page: pick or drop an image, ask, see the answer stream in."""
        return page

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "model": name, "running": len(engine.running),
                "pending": pending}

    @app.get("/v1/models")
    def models() -> dict:
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0,
                                            "owned_by": "seemore", "draws": draws}]}

    async def read_json(http: Request) -> dict:
        body = await http.body()
        if len(body) > limits.max_body_bytes:
            raise APIError(413, f"the request is over the server's limit of "
                                f"{limits.max_body_bytes:,} bytes")
        try:
            data = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise APIError(400, f"the request body is not JSON ({e})") from None
        if not isinstance(data, dict):
            raise APIError(400, "the request body must be a JSON object")
        return data

    async def read(http: Request) -> ChatPrompt:
        data = await read_json(http)
        if data.get("model") not in (None, name):
            raise APIError(404, f"the model {data['model']!r} does not exist; this server "
                                f"has {name!r}", "model", "not_found_error")
        return await asyncio.to_thread(parse_chat, data, model, answers, allow_dir,
                                       limits.max_image_bytes)

    def text_of(ids: list[int], stop: list[str]) -> tuple[str, bool]:
        """The decoded text, cut before the first stop string; whether one was found."""
        text = tokenizer.decode(ids)
        cuts = [text.index(s) for s in stop if s in text]
        return (text[: min(cuts)], True) if cuts else (text, False)

    async def tokens(job: EngineRequest):
        """The job's token ids as the engine makes them; TimeoutError past the limit."""
        deadline = time.monotonic() + limits.timeout_s
        while True:
            try:
                token = await asyncio.wait_for(job.tokens.get(), deadline - time.monotonic())
            except TimeoutError:
                job.cancelled = True
                raise
            if token is None:
                return
            yield token

    @app.post("/v1/chat/completions")
    async def chat(http: Request):
        nonlocal pending
        start = time.perf_counter()
        try:
            prompt = await read(http)
            if pending >= limits.max_queue:
                raise APIError(429, f"the server is busy ({pending} requests); retry later",
                               kind="rate_limit_error")
        except APIError as e:
            log.info("chat %d %s", e.status, e.message)
            return error(e)
        job = engine.submit(EngineRequest(prompt.ids, prompt.image, prompt.max_tokens,
                                          prompt.temperature, prompt.top_p, prompt.seed,
                                          top_k=prompt.top_k,
                                          tokens=Handoff(asyncio.get_running_loop())))
        pending += 1
        ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        usage = {"prompt_tokens": len(prompt.ids)}

        def done(new: list[int], reason: str) -> None:
            nonlocal pending
            pending -= 1
            usage.update(completion_tokens=len(new), total_tokens=len(prompt.ids) + len(new))
            log.info("chat 200 %d+%d tokens %s %.2fs", len(prompt.ids), len(new), reason,
                     time.perf_counter() - start)

        def finish(stopped: bool) -> str:
            if stopped or job.reason == "stop":
                return "stop"
            return "length"

        def chunk(delta: dict, reason: str | None = None) -> str:
            body = {"id": ident, "object": "chat.completion.chunk", "created": created,
                    "model": name, "choices": [{"index": 0, "delta": delta,
                                                "finish_reason": reason}]}
            return f"data: {json.dumps(body)}\n\n"

        if prompt.stream:
            async def events():
                new, sent, stopped = [], "", False
                yield chunk({"role": "assistant", "content": ""})
                try:
                    async for token in tokens(job):
                        new.append(token)
                        text, stopped = text_of(new, prompt.stop)
                        # hold back what may still become a stop string or a longer
                        # character of a multi-byte token
                        safe = text if stopped else text[: len(text) - max(
                            [len(s) - 1 for s in prompt.stop] + [0])]
                        if len(safe) > len(sent) and not safe.endswith("\ufffd"):
                            yield chunk({"content": safe[len(sent):]})
                            sent = safe
                        if stopped:
                            job.cancelled = True
                            break
                    text, stopped = text_of(new, prompt.stop)
                    if len(text) > len(sent):
                        yield chunk({"content": text[len(sent):]})
                    yield chunk({}, finish(stopped))
                except TimeoutError:
                    yield chunk({}, "length")
                finally:
                    done(new, job.reason or "cancelled")
                if prompt.include_usage:  # as OpenAI sends it: no choices, the usage
                    body = {"id": ident, "object": "chat.completion.chunk",
                            "created": created, "model": name, "choices": [], "usage": usage}
                    yield f"data: {json.dumps(body)}\n\n"
                yield "data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")

        new: list[int] = []
        stopped = False
        try:
            async for token in tokens(job):
                new.append(token)
                if prompt.stop and text_of(new, prompt.stop)[1]:
                    job.cancelled, stopped = True, True
                    break
        except TimeoutError:
            done(new, "timeout")
            return error(APIError(408, f"the request ran past the server's limit of "
                                       f"{limits.timeout_s:g} s", kind="timeout"))
        if job.reason.startswith("error"):
            done(new, job.reason)
            return error(APIError(400, job.reason.removeprefix("error: ")))
        text, stopped = text_of(new, prompt.stop)
        done(new, job.reason)
        return {"id": ident, "object": "chat.completion", "created": created, "model": name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": finish(stopped)}],
                "usage": usage}

    @app.post("/v1/images/generations")
    async def images(http: Request):
        try:
            body = await read_json(http)
            if body.get("model") not in (None, name):
                raise APIError(404, f"the model {body['model']!r} does not exist; this "
                                    f"server has {name!r}", "model", "not_found_error")
            if not draws:
                raise APIError(400, "this model does not draw (train one with --recipe "
                                    "unified)", "model")
            prompt, n = body.get("prompt"), body.get("n", 1)
            if not isinstance(prompt, str) or not prompt.strip():
                raise APIError(400, "prompt must be a non-empty string", "prompt")
            if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 8:
                raise APIError(400, f"n must be an integer from 1 to 8, got {n!r}", "n")
            side = model.config.vision.image_size
            if body.get("size") not in (None, f"{side}x{side}"):
                raise APIError(400, f"size must be {side}x{side}, the model's", "size")
            if body.get("response_format", "b64_json") != "b64_json":
                raise APIError(400, "response_format must be b64_json (nothing is stored "
                                    "to link to)", "response_format")
            seed = body.get("seed")
            drawn = await asyncio.wrap_future(engine.call(
                lambda: model.draw(prompt, n=n, seed=seed if isinstance(seed, int) else None)))
        except APIError as e:
            log.info("images %d %s", e.status, e.message)
            return error(e)
        except UserError as e:
            log.info("images 400 %s", e)
            return error(APIError(400, str(e), "prompt"))
        log.info("images 200 %d drawn", len(drawn))
        return {"created": int(time.time()), "data": [{"b64_json": png_base64(im)}
                                                      for im in drawn]}

    return app


def png_base64(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()
