"""Per-request cost of the HTTP framework alone: the /v1/generate body parsed and answered (no decoding), Starlette
with the project's hand-written checks against FastAPI with a pydantic model, in-process (httpx ASGI transport)."""
import asyncio, json, statistics, time
import httpx
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from s2s_runtime.serving.http.config import ServerConfig
from s2s_runtime.serving.http.requests import parse_generate

config = ServerConfig()
ANSWER = {"results": [{"text": "HH EH L OW", "tokens": ["HH", "EH", "L", "OW"], "ids": [1, 2, 3, 4], "score": -0.5}]}

async def starlette_route(request):
    asked = parse_generate(await request.body(), config)
    return JSONResponse(ANSWER)

class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inputs: str | list[str]
    options: dict = {}
    target_prefix: list | None = None
    stream: bool = False

fast = FastAPI()
@fast.post("/v1/generate")
async def fastapi_route(body: Body):
    return ANSWER

plain = Starlette(routes=[Route("/v1/generate", starlette_route, methods=["POST"])])
payload = {"inputs": ["hello", "world"], "options": {"strategy": "beam", "beam_size": 4}}

async def run(app, n=3000):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x") as c:
        for _ in range(200):
            await c.post("/v1/generate", json=payload)
        t = time.perf_counter()
        for _ in range(n):
            r = await c.post("/v1/generate", json=payload)
        assert r.status_code == 200
        return (time.perf_counter() - t) / n * 1e6

res = {"starlette": [], "fastapi": []}
for _ in range(3):
    res["starlette"].append(asyncio.run(run(plain)))
    res["fastapi"].append(asyncio.run(run(fast)))
print({k: f"median {statistics.median(v):.0f} µs/request ({', '.join(f'{x:.0f}' for x in v)})" for k, v in res.items()})
