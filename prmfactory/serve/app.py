"""The PRM server: ``POST /v1/prm/score``, OpenRLHF's ``POST /get_reward``, ``GET /v1/models`` and ``GET /health``.

Loopback by default. With an API key every request needs ``Authorization: Bearer KEY`` (401
otherwise) except ``GET /health`` and the OpenAPI pages (``/docs``, ``/openapi.json``), which
answer without one, as vLLM's and TGI's do, so load balancers can probe the server; bodies over ``max_body_bytes`` get 413, declared or chunked; a body that is not UTF-8,
not JSON or nested deeper than ``MAX_JSON_DEPTH`` gets 422, and so do malformed items, with a
message naming the item (``items[3].prompt: Field required``); every error body is JSON
``{"detail": ...}``. Scores of steps cut off by the PRM's length limit
are ``null``; they do not count in the aggregate.

Requests are isolated from each other: text that is not valid Unicode (a lone surrogate) is 422
before it is queued, an item the PRM cannot score fails only its own request (422 naming the item),
never the batch it was scored in; a request whose client disconnects has its queued items
withdrawn; items per request (``max_items``: 413) and steps per item (``max_steps``: 422) are capped.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Optional, Union

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, Field, model_validator

from prmfactory.prm import PRM, step_reward
from prmfactory.serve.batching import DynamicBatcher

if TYPE_CHECKING:
    from prmfactory.serve.openrlhf import OpenRLHFQueries

Aggregate = Literal["min", "last", "prod", "mean"]


def _unicode_text(text: str) -> str:
    """JSON can carry a lone surrogate (``"\\ud800"``) that no tokenizer can encode: refuse it here."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"not valid Unicode text (a lone surrogate at character {exc.start})") from None
    return text


Text = Annotated[str, AfterValidator(_unicode_text)]


class ScoreItem(BaseModel):
    """One solution: its steps, or a whole response split with the PRM's recorded separator."""

    id: Union[str, int]
    prompt: Text
    steps: Optional[list[Text]] = None
    response: Optional[Text] = None

    @model_validator(mode="after")
    def _steps_or_response(self) -> "ScoreItem":
        if (self.steps is None) == (self.response is None):
            raise ValueError("give exactly one of 'steps' or 'response'")
        return self


class ScoreRequest(BaseModel):
    items: list[ScoreItem] = Field(min_length=1)
    aggregate: Aggregate = "min"


class ScoreResult(BaseModel):
    id: Union[str, int]
    step_scores: list[Optional[float]]
    step_spans: Optional[list[tuple[int, int]]] = Field(
        None, description="For a `response`: each step's [start, end) character offsets in it (the PRM's "
                          "segmentation), so a trainer can put each step's score on its own tokens; null for `steps`.")
    first_error: int = Field(description="First step scored below the threshold (/v1/models), -1 if none.")
    aggregate: float


class ScoreResponse(BaseModel):
    results: list[ScoreResult]


class RewardRequest(BaseModel):
    """OpenRLHF's remote reward model request: ``query`` is prompt + response."""

    query: list[Text]
    prompts: Optional[list[Text]] = None
    labels: Optional[list[Any]] = None


class ModelCard(BaseModel):
    """One served PRM, in the shape of an OpenAI ``/v1/models`` entry plus what a PRM client needs."""

    id: str
    object: Literal["model"] = "model"
    owned_by: str = "prmfactory"
    format: str = Field(description="The PRM's folder format: prmfactory (token classification at each step's end), "
                                    "qwen2.5-math-prm, math-shepherd or rlhflow.")
    kind: str
    segmentation: str = Field(description="How a response is split into steps (the separator the PRM was trained on).")
    threshold: float = Field(description="A step scored below it is the first error (first_error in every answer).")
    max_length: int
    base: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class RewardResponse(BaseModel):
    rewards: list[float]
    scores: list[float]
    extra_logs: dict[str, list[float]]


def _json_scores(scores: list[float]) -> list[Optional[float]]:
    return [None if math.isnan(s) else s for s in scores]


def _item_location(loc: tuple) -> str:
    """``("body", "items", 3, "prompt")`` → ``items[3].prompt``."""
    text = ""
    for part in loc[1:] if loc and loc[0] == "body" else loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "body"


MAX_JSON_DEPTH = 32  # the request models nest 4 deep; anything far deeper is an attack, not a request


def _json_problem(body: bytes) -> Optional[str]:
    """Why a JSON body cannot be a request (not UTF-8, not JSON, nested too deep), or None."""
    try:
        data = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return f"body: not valid UTF-8 (byte offset {exc.start})"
    except json.JSONDecodeError as exc:
        return f"body: invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
    except RecursionError:
        return f"body: JSON nested deeper than {MAX_JSON_DEPTH} levels"
    frontier, depth = [data], 0
    while frontier:
        depth += 1
        if depth > MAX_JSON_DEPTH:
            return f"body: JSON nested deeper than {MAX_JSON_DEPTH} levels"
        frontier = [child for node in frontier if isinstance(node, (list, dict))
                    for child in (node.values() if isinstance(node, dict) else node)
                    if isinstance(child, (list, dict))]
    return None


OPEN_PATHS = frozenset({"/health", "/docs", "/docs/oauth2-redirect", "/openapi.json"})  # GET without a token


class GuardMiddleware:
    """Before any route runs: the bearer-token check (when a key is set; not for ``GET`` of
    :data:`OPEN_PATHS`), then the body, read whole up to
    ``max_body_bytes`` whether its length is declared or it comes chunked (413 past it), and a JSON
    body that is not UTF-8, not JSON or nested too deep answered 422 with a JSON ``detail``, as
    FastAPI answers a body that does not match the request model."""

    def __init__(self, app, api_key: Optional[str], max_body_bytes: int):
        self.app, self.api_key, self.max_body_bytes = app, api_key, max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        is_open = scope["path"] in OPEN_PATHS and scope["method"] in ("GET", "HEAD")
        if self.api_key is not None and not is_open:
            token = headers.get(b"authorization", b"").decode("latin-1")
            if not hmac.compare_digest(token.encode(), f"Bearer {self.api_key}".encode()):
                return await JSONResponse({"detail": "missing or wrong bearer token"}, 401,
                                          headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            return await self._reply(scope, receive, send, 413, f"request body over {self.max_body_bytes} bytes")
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body_bytes:
                return await self._reply(scope, receive, send, 413, f"request body over {self.max_body_bytes} bytes")
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if body and b"json" in headers.get(b"content-type", b"application/json"):
            problem = _json_problem(body)
            if problem is not None:
                return await self._reply(scope, receive, send, 422, problem)
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _reply(self, scope, receive, send, status: int, detail: str):
        await JSONResponse({"detail": detail}, status)(scope, receive, send)


class ClientGone(Exception):
    """The client disconnected before its items were scored."""


class ItemFailed(Exception):
    def __init__(self, index: int, error: BaseException):
        super().__init__(f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}".rstrip(": "))
        self.index, self.error = index, error


# What an item itself can cause (text the tokenizer or the format cannot take): 422. Anything else is the
# server's failure (500), still for that request alone.
_INPUT_ERRORS = (ValueError, TypeError, IndexError, KeyError, UnicodeError)


async def _scores(batcher: DynamicBatcher, request: Request, items: list) -> list[list[float]]:
    """The items' step scores; withdrawn from the queue if the client disconnects while they wait."""
    task = asyncio.ensure_future(batcher.score(items))
    while True:
        done, _ = await asyncio.wait({task}, timeout=0.05)
        if done:
            break
        if await request.is_disconnected():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            raise ClientGone()
    results = task.result()
    for index, result in enumerate(results):
        if isinstance(result, BaseException):
            raise ItemFailed(index, result)
    return results


def create_app(prm: PRM, *, api_key: Optional[str] = None, max_body_bytes: int = 4_000_000, max_batch: int = 64,
               max_wait_ms: float = 5.0, reward_aggregate: Aggregate = "min", threshold: Optional[float] = None,
               name: Optional[str] = None, openrlhf: Optional["OpenRLHFQueries"] = None, max_items: int = 1024,
               max_steps: int = 512) -> FastAPI:
    """The FastAPI app serving ``prm``; the batcher starts and stops with the app.

    ``reward_aggregate`` turns step scores into ``/get_reward``'s one reward per query, and
    ``openrlhf`` (:class:`prmfactory.rl.OpenRLHFQueries`) says how its queries become problem and response;
    ``threshold`` is the score below which a step is the first error (default: the PRM's calibrated
    one, else 0.5); ``name`` is the model id
    ``/v1/models`` reports (default: the PRM folder's name); ``max_items`` solutions per request (413
    above) and ``max_steps`` steps per solution (422 above) bound the work one request can queue.
    """
    from prmfactory.serve.openrlhf import OpenRLHFQueries

    openrlhf = openrlhf or OpenRLHFQueries()
    batcher = DynamicBatcher(prm.score_batch, max_batch=max_batch, max_wait_ms=max_wait_ms)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="prmfactory PRM server", lifespan=lifespan)
    app.state.batcher = batcher
    app.add_middleware(GuardMiddleware, api_key=api_key, max_body_bytes=max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0]
        message = f"{_item_location(tuple(first['loc']))}: {first['msg']}"
        return JSONResponse({"detail": message, "errors": len(exc.errors())}, 422)

    @app.exception_handler(ItemFailed)
    async def _item_failed(request: Request, exc: ItemFailed):
        where = "query" if request.url.path == "/get_reward" else "items"
        status = 422 if isinstance(exc.error, _INPUT_ERRORS) else 500
        return JSONResponse({"detail": f"{where}[{exc.index}]: cannot be scored: {exc}"}, status)

    @app.exception_handler(ClientGone)
    async def _gone(request: Request, exc: ClientGone):
        return JSONResponse({"detail": "client disconnected; its items were withdrawn"}, 499)

    def check_size(count: int, what: str, longest: int) -> None:
        if count > max_items:
            raise HTTPException(413, f"{what}: {count} in one request, more than the server's limit of {max_items} "
                                     "(serve --max-items); send them in several requests")
        if longest > max_steps:
            raise HTTPException(422, f"{what}: a solution of {longest} steps, more than the server's limit of "
                                     f"{max_steps} (serve --max-steps)")

    @app.api_route("/health", methods=["GET", "HEAD"])
    async def health() -> dict[str, Any]:
        return {"status": "ok", "kind": prm.meta.kind, "segmentation": prm.meta.segmentation,
                "batches": batcher.batches}

    threshold = prm.threshold if threshold is None else threshold
    card = ModelCard(id=name or Path(prm.path).name, format=prm.format, kind=prm.meta.kind,
                     segmentation=prm.meta.segmentation, threshold=threshold, max_length=prm.meta.max_length,
                     base=prm.meta.base)

    @app.get("/v1/models", response_model=ModelList)
    async def models() -> ModelList:
        return ModelList(data=[card])

    @app.post("/v1/prm/score", response_model=ScoreResponse)
    async def score(request: ScoreRequest, http: Request) -> ScoreResponse:
        check_size(len(request.items), "items", 0)
        spans = [None if item.steps is not None else prm.segmenter.spans(item.response or "")
                 for item in request.items]
        items = [(item.prompt, item.steps if item.steps is not None else [item.response[a:b] for a, b in cuts])
                 for item, cuts in zip(request.items, spans)]
        check_size(len(items), "items", max(len(steps) for _, steps in items))
        results = []
        for item, cuts, scores in zip(request.items, spans, await _scores(batcher, http, items)):
            reward = step_reward(scores, request.aggregate, threshold)
            results.append(ScoreResult(id=item.id, step_scores=_json_scores(scores), step_spans=cuts,
                                       first_error=reward.first_error, aggregate=reward.reward))
        return ScoreResponse(results=results)

    @app.post("/get_reward", response_model=RewardResponse)
    async def get_reward(request: RewardRequest, http: Request) -> RewardResponse:
        check_size(len(request.query), "query", 0)
        prompts = request.prompts or [""] * len(request.query)
        for field, given in (("prompts", prompts), ("labels", request.labels)):
            if given is not None and len(given) != len(request.query):
                raise RequestValidationError([{"loc": ("body", field), "msg": "needs one entry per query",
                                               "type": "value_error"}])
        try:
            problems, responses, matched = openrlhf.split(request.query, prompts, request.labels or ())
        except ValueError as exc:
            raise RequestValidationError([{"loc": ("body", "labels"), "msg": str(exc), "type": "value_error"}])
        items = [(problem, prm.split(response)) for problem, response in zip(problems, responses)]
        check_size(len(items), "query", max((len(steps) for _, steps in items), default=0))
        rewards = [step_reward(scores, reward_aggregate, threshold) for scores in await _scores(batcher, http, items)]
        values = [r.reward for r in rewards]
        return RewardResponse(rewards=values, scores=values,
                              extra_logs={"prm_first_error": [float(r.first_error) for r in rewards],
                                          "prm_query_cut": [float(not m) for m in matched]})

    return app
