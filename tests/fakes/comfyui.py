"""A fake ComfyUI server for tests and benchmarks: aiohttp (like the real
server) on 127.0.0.1, its own event loop on a background thread.

It follows docs/comfyui-protocol.md: status codes and JSON shapes, the WS
event order, caching of identical nodes, heap-ordered /queue, cooperative
interrupts, history lost on restart, real PNG outputs. Knobs make it fail the
ways the real one does. `python -m tests.fakes.comfyui` runs it standalone.
"""

from __future__ import annotations

import asyncio
import heapq
import io
import json
import logging
import os
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from tests.fakes import comfy_malice
from tests.fakes import comfyui_graph as graph
from tests.fakes.server import BackgroundServer
from tests.fakes.vram import GIB, VramLedger

OOM_MESSAGE = ("Allocation on device 0 would exceed allowed memory. (out of memory)\n"
               "Currently allocated     : 10.51 GiB\nRequested               : 2.50 GiB\n"
               "Device limit            : 11.99 GiB\nFree (according to CUDA): 0 bytes\n"
               "PyTorch limit (set to 1.00 GiB): 0 bytes\n")


def _ms() -> int:
    return int(time.time() * 1000)


class Interrupted(Exception):
    pass


class HandlerCrash(Exception):
    """Raised out of a handler: aiohttp answers with the same plain-text 500 page
    ("500 Internal Server Error\n\nServer got itself in trouble") the real server sends."""


# The crash pages are deliberate; their tracebacks would only clutter test output.
logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)


class ExecutionFailed(Exception):
    def __init__(self, node_id: str, node_type: str, exception_type: str, message: str) -> None:
        super().__init__(message)
        self.node_id, self.node_type = node_id, node_type
        self.exception_type, self.message = exception_type, message


class FakeComfyUI(BackgroundServer):
    def __init__(self, *, checkpoints=("sd_xl_base_1.0.safetensors", "v1-5-pruned-emaonly.safetensors"),
                 step_time: float = 0.0, load_time: float = 0.0, output_dir: Path | None = None,
                 ledger: VramLedger | None = None, checkpoint_vram: dict[str, int] | None = None,
                 loras=(), upscale_models=(),
                 host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        self.checkpoints = list(checkpoints)
        self.loras, self.upscale_models = list(loras), list(upscale_models)
        self.uploads: list[dict] = []  # every POST /upload/image: its form fields and answer
        self._fail_uploads: list[int] = []
        # The split files zmm's [models] defaults name (docs/models.md), in their folders.
        self.model_files: dict[str, list[str]] = {
            "diffusion_models": ["flux1-dev.safetensors", "flux1-schnell.safetensors",
                                 "sd3.5_large.safetensors", "sd3.5_medium.safetensors"],
            "text_encoders": ["clip_g.safetensors", "clip_l.safetensors",
                              "t5xxl_fp16.safetensors"],
            "vae": ["ae.safetensors", "sd3.5_vae.safetensors"],
        }
        self.step_time, self.load_time = step_time, load_time
        self.output_dir = Path(output_dir or tempfile.mkdtemp(prefix="fake-comfy-"))
        self.ledger, self.checkpoint_vram = ledger, checkpoint_vram or {}
        self.submissions: list[dict] = []
        self.runs: list[dict] = []
        self.refused: list[dict] = []  # every POST /prompt answered 400: prompt id and error
        self.interrupts: list[dict] = []
        self.frees: list[dict] = []
        self.deepest = 0  # the most prompts it ever held at once, running and pending
        self._fail_submits: list[tuple[int, bool]] = []
        self._fail_executions: list[tuple[str, str, str]] = []
        self._hang = threading.Event()
        self.malice: comfy_malice.Malice | None = None  # malicious mode (comfy_malice.KINDS)
        self._frozen = threading.Event()
        self._reset()

    def _reset(self) -> None:
        self.queue: list[list] = []  # heap of [number, prompt_id, prompt, extra, outputs]
        self.running: list | None = None
        self.history: dict[str, dict] = {}
        self.cache: dict[str, Any] = {}
        self.loaded: set[str] = set()
        self.counter = 0
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self.current_node: str | None = None
        self._interrupt = False
        self._pending_free: dict | None = None
        self._wake: asyncio.Event | None = None

    # -- lifecycle -------------------------------------------------------------------

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=1024**3, middlewares=[self._unless_frozen])
        for prefix in ("", "/api"):
            app.router.add_post(prefix + "/prompt", self.post_prompt)
            app.router.add_get(prefix + "/prompt", self.get_prompt)
            app.router.add_get(prefix + "/queue", self.get_queue)
            app.router.add_post(prefix + "/queue", self.post_queue)
            app.router.add_post(prefix + "/interrupt", self.post_interrupt)
            app.router.add_get(prefix + "/history", self.get_history)
            app.router.add_get(prefix + "/history/{prompt_id}", self.get_history_item)
            app.router.add_post(prefix + "/history", self.post_history)
            app.router.add_get(prefix + "/view", self.get_view)
            app.router.add_get(prefix + "/models", self.get_models)
            app.router.add_get(prefix + "/models/{folder}", self.get_model_folder)
            app.router.add_get(prefix + "/object_info", self.get_object_info)
            app.router.add_get(prefix + "/object_info/{node}", self.get_object_info_node)
            app.router.add_get(prefix + "/system_stats", self.get_system_stats)
            app.router.add_get(prefix + "/features", self.get_features)
            app.router.add_get(prefix + "/embeddings", self.get_embeddings)
            app.router.add_post(prefix + "/free", self.post_free)
            app.router.add_post(prefix + "/upload/image", self.post_upload_image)
        app.router.add_get("/ws", self.websocket)
        # Not ComfyUI's: lets a benchmark read the server-side timings of a subprocess fake.
        app.router.add_get("/fake/runs", self.get_runs)
        app.router.add_get("/fake/refused", self.get_refused)
        return app

    async def on_started(self) -> None:
        self._wake = asyncio.Event()
        self._executor = asyncio.ensure_future(self._execute_forever())

    async def on_stopping(self) -> None:
        self._executor.cancel()
        for ws in list(self.sockets.values()):
            await ws.close()

    def restart(self) -> None:
        """Like a real restart: queue, history, cache and loaded models are gone."""
        self.stop()
        if self.ledger is not None:
            self.ledger.release_prefix("comfyui:")
        self._reset()
        self.start()

    # -- knobs ---------------------------------------------------------------------------

    def fail_next_submits(self, n: int = 1, status: int = 500, accept_then_500: bool = False) -> None:
        self._fail_submits.extend([(status, accept_then_500)] * n)

    def drop_websockets(self) -> None:
        async def drop() -> None:
            for ws in list(self.sockets.values()):
                await ws.close()
        self.call(drop)

    def hang(self, on: bool = True) -> None:
        if on:
            self._hang.set()
        else:
            self._hang.clear()

    def malicious(self, kind: str | None, size: int = 300 << 20) -> comfy_malice.Malice | None:
        """Answer as a broken or hostile server would (tests/fakes/comfy_malice.py):
        `kind` one of comfy_malice.KINDS, None for the honest server again. "endless":
        a prompt that runs forever, sending progress, until it is interrupted."""
        assert kind is None or kind in comfy_malice.KINDS, kind
        self.malice = comfy_malice.Malice(kind, size) if kind else None
        self.hang(kind == "endless")
        return self.malice

    def freeze(self, on: bool = True) -> None:
        """Like a SIGSTOPped server: connections are accepted, nothing is answered,
        no event is sent and the running prompt makes no progress until thawed."""
        if on:
            self._frozen.set()
        else:
            self._frozen.clear()

    @web.middleware
    async def _unless_frozen(self, request: web.Request, handler):
        while self._frozen.is_set():
            await asyncio.sleep(0.02)
        return await handler(request)

    def forget_history(self) -> None:
        self.history.clear()

    def fail_next_execution(self, *, node_type="KSampler", exception_type="RuntimeError",
                            message="boom") -> None:
        self._fail_executions.append((node_type, exception_type, message))

    def oom_next_execution(self) -> None:
        self.fail_next_execution(node_type="KSampler", exception_type="torch.OutOfMemoryError",
                                 message=OOM_MESSAGE)

    def set_checkpoints(self, names: list[str]) -> None:
        self.checkpoints = list(names)

    def set_model_files(self, folder: str, names: list[str]) -> None:
        """The files of one model folder (diffusion_models, text_encoders, vae, ...)."""
        self.model_files[folder] = list(names)

    def fail_next_uploads(self, n: int = 1, status: int = 500) -> None:
        """The next uploads answer `status` (500: the real server's crash page)."""
        self._fail_uploads.extend([status] * n)

    @property
    def input_dir(self) -> Path:
        return self.output_dir / "input"

    def input_files(self) -> list[str]:
        """Files in the input folder, as LoadImage names them ("sub/name.png")."""
        if not self.input_dir.is_dir():
            return []
        return sorted(str(path.relative_to(self.input_dir)) for path in self.input_dir.rglob("*")
                      if path.is_file())

    def history_ids(self) -> list[str]:
        return list(self.history)

    def queue_ids(self) -> tuple[list[str], list[str]]:
        running = [self.running[1]] if self.running else []
        return running, [item[1] for item in sorted(self.queue, key=lambda i: (i[0], i[1]))]

    # -- HTTP ------------------------------------------------------------------------------

    def _types(self) -> dict[str, dict]:
        return {**graph.node_types(self.checkpoints, self.model_files),
                **graph.part_node_types(self.loras, self.upscale_models, self.input_files())}

    async def post_prompt(self, request: web.Request) -> web.Response:
        body = json.loads(await request.text())  # not JSON -> aiohttp's 500 text, like the real one
        self.submissions.append(body)
        fail = self._fail_submits.pop(0) if self._fail_submits else None
        if fail and not fail[1]:
            raise HandlerCrash("injected failure")
        if "prompt" not in body:
            return web.json_response({"error": {"type": "no_prompt", "message": "No prompt provided",
                                                "details": "No prompt provided", "extra_info": {}},
                                      "node_errors": {}}, status=400)
        prompt = body["prompt"]
        if not isinstance(prompt, dict):
            raise HandlerCrash("'list' object has no attribute 'keys'")
        number = self._number(body)
        types = self._types()
        error = graph.top_level_error(prompt, types)
        if error:
            return web.json_response({"error": error, "node_errors": {}}, status=400)
        outputs, node_errors = graph.validate(prompt, types)
        if not outputs:
            self.refused.append({"prompt_id": body.get("prompt_id"), "node_errors": node_errors})
            return web.json_response({"error": {
                "type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed "
                "validation", "details": "", "extra_info": {}}, "node_errors": node_errors}, status=400)
        prompt_id = str(body.get("prompt_id") or uuid.uuid4())
        extra = dict(body.get("extra_data") or {})
        if body.get("client_id"):
            extra["client_id"] = body["client_id"]
        heapq.heappush(self.queue, [number, prompt_id, prompt, extra, outputs])
        self.deepest = max(self.deepest, self._remaining())
        await self._broadcast_status()
        self._wake.set()
        if fail:
            raise HandlerCrash("injected failure after queuing")
        return web.json_response({"prompt_id": prompt_id, "number": number, "node_errors": node_errors})

    def _number(self, body: dict) -> float:
        counter = self.counter
        self.counter += 1
        if "number" in body:
            return float(body["number"])
        return -counter if body.get("front") else counter

    async def get_prompt(self, _request: web.Request) -> web.Response:
        return web.json_response({"exec_info": {"queue_remaining": self._remaining()}})

    def _remaining(self) -> int:
        return len(self.queue) + (1 if self.running else 0)

    async def get_queue(self, _request: web.Request) -> web.Response:
        return web.json_response({"queue_running": [self.running] if self.running else [],
                                  "queue_pending": list(self.queue)})

    async def post_queue(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("clear"):
            self.queue.clear()
        for prompt_id in body.get("delete", []):
            self.queue = [item for item in self.queue if item[1] != prompt_id]
            heapq.heapify(self.queue)
        await self._broadcast_status()
        return web.Response()

    async def post_interrupt(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else {}
        self.interrupts.append(body)
        target = body.get("prompt_id")
        if self.running and (target is None or target == self.running[1]):
            self._interrupt = True
        return web.Response()

    async def get_history(self, request: web.Request) -> web.Response:
        items = list(self.history.items())
        offset = int(request.query.get("offset", 0))
        limit = int(request.query.get("max_items", len(items)))
        return web.json_response(dict(items[offset:offset + limit]))

    async def get_history_item(self, request: web.Request) -> web.Response:
        prompt_id = request.match_info["prompt_id"]
        entry = self.history.get(prompt_id)
        hostile = await comfy_malice.history(request, self.malice) if self.malice and entry \
            else None
        if hostile is not None:
            return hostile
        return web.json_response({prompt_id: entry} if entry else {})

    async def post_history(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("clear"):
            self.history.clear()
        for prompt_id in body.get("delete", []):
            self.history.pop(prompt_id, None)
        return web.Response()

    async def get_view(self, request: web.Request) -> web.Response:
        hostile = await comfy_malice.view(request, self.malice) if self.malice else None
        if hostile is not None:
            return hostile
        filename = request.query.get("filename", "")
        subfolder = request.query.get("subfolder", "")
        kind = request.query.get("type", "output")
        if not filename or ".." in filename or filename.startswith("/"):
            return web.Response(status=400)
        base = (self.output_dir / ("temp" if kind == "temp" else kind if kind == "input" else "")).resolve()
        path = (base / subfolder / filename).resolve()
        if base not in path.parents:
            return web.Response(status=403)
        if not path.is_file():
            return web.Response(status=404)
        return web.Response(body=path.read_bytes(), content_type="image/png",
                            headers={"Content-Disposition": f'filename="{filename}"'})

    async def get_models(self, _request: web.Request) -> web.Response:
        return web.json_response(["checkpoints", *graph.MODEL_FOLDERS])

    async def get_model_folder(self, request: web.Request) -> web.Response:
        folder = request.match_info["folder"]
        if folder == "checkpoints":
            return web.json_response(self.checkpoints)
        if folder == "loras":
            return web.json_response(sorted(self.loras))
        if folder == "upscale_models":
            return web.json_response(sorted(self.upscale_models))
        if folder in graph.MODEL_FOLDERS:
            return web.json_response(sorted(self.model_files.get(folder, [])))
        return web.Response(status=404)

    async def get_object_info(self, _request: web.Request) -> web.Response:
        return web.json_response({name: graph.object_info_entry(name, node)
                                  for name, node in self._types().items()})

    async def get_object_info_node(self, request: web.Request) -> web.Response:
        name = request.match_info["node"]
        types = self._types()
        return web.json_response({name: graph.object_info_entry(name, types[name])} if name in types else {})

    async def get_system_stats(self, _request: web.Request) -> web.Response:
        if self.ledger is not None:
            device = {"name": "cuda:0 NVIDIA GeForce RTX 4090 : cudaMallocAsync", "type": "cuda",
                      "index": 0, "vram_total": self.ledger.total, "vram_free": self.ledger.free,
                      "torch_vram_total": self.ledger.total, "torch_vram_free": self.ledger.free}
        else:
            device = {"name": "cpu", "type": "cpu", "index": None, "vram_total": 25274793984,
                      "vram_free": 24170430464, "torch_vram_total": 25274793984,
                      "torch_vram_free": 24170430464}
        return web.json_response({"system": {
            "os": "posix", "ram_total": 25274793984, "ram_free": 24170430464,
            "comfyui_version": "0.3.64", "required_frontend_version": "1.27.10",
            "python_version": "3.11.7", "pytorch_version": "2.14.1+cu130", "embedded_python": False,
            "argv": ["main.py", "--listen", self.host, "--port", str(self.port)]},
            "devices": [device]})

    async def get_runs(self, _request: web.Request) -> web.Response:
        return web.json_response(self.runs)

    async def get_refused(self, _request: web.Request) -> web.Response:
        return web.json_response(self.refused)

    async def get_embeddings(self, _request: web.Request) -> web.Response:
        return web.json_response([])

    async def get_features(self, _request: web.Request) -> web.Response:
        return web.json_response({"supports_preview_metadata": True, "max_upload_size": 104857600})

    async def post_upload_image(self, request: web.Request) -> web.Response:
        """As server.py's image_upload: 400 with an empty body for a missing file, an
        empty name or a path leaving the folder; without overwrite, a same-named file
        with other bytes gets "name (1).ext", identical bytes keep the name."""
        post = await request.post()
        record = {key: (value.filename if hasattr(value, "filename") else value)
                  for key, value in post.items()}
        self.uploads.append(record)
        if self._fail_uploads:
            status = self._fail_uploads.pop(0)
            if status >= 500:
                raise HandlerCrash("injected upload failure")
            return web.Response(status=status)
        image = post.get("image")
        if not hasattr(image, "file") or not image.filename:
            return web.Response(status=400)
        kind = str(post.get("type") or "input")
        base = (self.output_dir / {"input": "input", "temp": "temp"}.get(kind, "")).resolve()
        subfolder = str(post.get("subfolder") or "")
        folder = (base / os.path.normpath(subfolder)).resolve()
        data = image.file.read()
        name = image.filename
        path = (folder / name).resolve()
        if base != path and base not in path.parents:
            return web.Response(status=400)
        if str(post.get("overwrite")) not in ("true", "1"):
            stem, suffix = os.path.splitext(name)
            counter = 1
            while path.exists() and path.read_bytes() != data:
                name = f"{stem} ({counter}){suffix}"
                path, counter = folder / name, counter + 1
        folder.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        answer = {"name": name, "subfolder": subfolder, "type": kind}
        record["answer"] = answer
        return web.json_response(answer)

    async def post_free(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else {}
        self.frees.append(body)
        self._pending_free = body  # applied by the executor when it is idle
        self._wake.set()
        return web.Response()

    # -- websocket -------------------------------------------------------------------------

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sid = request.query.get("clientId") or uuid.uuid4().hex
        self.sockets[sid] = ws  # a second socket with the same id takes over the first
        await ws.send_json({"type": "status", "data": {"status": {"exec_info": {
            "queue_remaining": self._remaining()}}, "sid": sid}})
        if self.running and self.running[3].get("client_id") == sid and self.current_node:
            await ws.send_json({"type": "executing", "data": {"node": self.current_node}})
        if self.malice is not None:
            await comfy_malice.on_connect(ws, self.malice)
        first = True
        async for message in ws:
            if message.type == WSMsgType.TEXT and first:
                data = json.loads(message.data)
                if data.get("type") == "feature_flags":
                    await ws.send_json({"type": "feature_flags", "data": {
                        "supports_preview_metadata": True, "max_upload_size": 104857600}})
            first = False
        # The real server forgets the id when any socket with it closes (the pitfall).
        self.sockets.pop(sid, None)
        return ws

    async def _send(self, client_id: str | None, kind: str, data: dict, *,
                    broadcast_if_unowned=False) -> None:
        message = {"type": kind, "data": data}
        if client_id is None:
            targets = list(self.sockets.values()) if broadcast_if_unowned else []
        else:
            targets = [self.sockets[client_id]] if client_id in self.sockets else []
        for ws in targets:
            try:
                await ws.send_json(message)
            except (ConnectionError, RuntimeError):
                pass

    async def _broadcast_status(self) -> None:
        for ws in list(self.sockets.values()):
            try:
                await ws.send_json({"type": "status", "data": {"status": {"exec_info": {
                    "queue_remaining": self._remaining()}}}})
            except (ConnectionError, RuntimeError):
                pass

    # -- executor ----------------------------------------------------------------------------

    async def _execute_forever(self) -> None:
        while True:
            if not self.queue:
                self._apply_free()
                self._wake.clear()
                await self._wake.wait()
                continue
            self.running = heapq.heappop(self.queue)
            await self._broadcast_status()
            await self._execute(*self.running)
            self.running = None
            self.current_node = None

    def _apply_free(self) -> None:
        if self._pending_free is None:
            return
        body, self._pending_free = self._pending_free, None
        if body.get("unload_models") or body.get("free_memory"):
            self.loaded.clear()
            if self.ledger is not None:
                self.ledger.release_prefix("comfyui:")
        if body.get("free_memory"):
            self.cache.clear()

    async def _execute(self, number, prompt_id, prompt, extra, outputs) -> None:
        client = extra.get("client_id")
        self._interrupt = False
        record = {"prompt_id": prompt_id, "started": time.monotonic(), "started_wall": time.time(),
                  "ended": None, "status": "success", "cached": False}
        self.runs.append(record)
        messages: list = []

        async def emit(kind: str, data: dict, broadcast=False) -> None:
            if kind in ("execution_start", "execution_cached", "execution_success",
                        "execution_error", "execution_interrupted"):
                data = dict(data, timestamp=_ms())
                messages.append([kind, data])
            await self._send(client, kind, data, broadcast_if_unowned=broadcast)

        await emit("execution_start", {"prompt_id": prompt_id})
        order = graph.execution_order(prompt, outputs)
        signatures = self._signatures(prompt, order)
        cached = [n for n in order if signatures[n] in self.cache]
        record["cached"] = len(cached) == len(order)
        await emit("execution_cached", {"nodes": cached, "prompt_id": prompt_id})
        results: dict[str, Any] = {}
        ui_outputs: dict[str, Any] = {}
        try:
            for node_id in order:
                if node_id in cached:
                    results[node_id] = self.cache[signatures[node_id]]
                    if prompt[node_id]["class_type"] in ("SaveImage", "PreviewImage"):
                        ui_outputs[node_id] = results[node_id]
                        await emit("executed", {"node": node_id, "display_node": node_id,
                                                "output": results[node_id], "prompt_id": prompt_id})
                    continue
                await self._check_interrupt(prompt_id, node_id, prompt)
                self.current_node = node_id
                await emit("progress_state", self._progress_state(prompt_id, node_id, 0, 1), True)
                await emit("executing", {"node": node_id, "display_node": node_id, "prompt_id": prompt_id})
                results[node_id] = await self._run_node(prompt_id, node_id, prompt, results, extra, emit)
                self.cache[signatures[node_id]] = results[node_id]
                if prompt[node_id]["class_type"] in ("SaveImage", "PreviewImage"):
                    ui_outputs[node_id] = results[node_id]
                    await emit("executed", {"node": node_id, "display_node": node_id,
                                            "output": results[node_id], "prompt_id": prompt_id})
                await emit("progress_state", self._progress_state(prompt_id, node_id, 1, 1), True)
            await emit("execution_success", {"prompt_id": prompt_id})
            status = {"status_str": "success", "completed": True, "messages": messages}
        except Interrupted as stop:
            record["status"] = "interrupted"
            await emit("execution_interrupted", {"prompt_id": prompt_id, "node_id": str(stop),
                                                 "node_type": prompt[str(stop)]["class_type"],
                                                 "executed": list(results)}, True)
            status = {"status_str": "error", "completed": False, "messages": messages}
            ui_outputs = {}
        except ExecutionFailed as failure:
            record["status"] = "error"
            await emit("execution_error", {
                "prompt_id": prompt_id, "node_id": failure.node_id, "node_type": failure.node_type,
                "executed": list(results), "exception_message": failure.message,
                "exception_type": failure.exception_type,
                "traceback": ["  File \"execution.py\", line 496, in execute\n"],
                "current_inputs": {}, "current_outputs": []})
            status = {"status_str": "error", "completed": False, "messages": messages}
            ui_outputs = {}
        self.history[prompt_id] = {
            "prompt": [number, prompt_id, prompt, extra, outputs], "outputs": ui_outputs,
            "status": status, "meta": {n: {"node_id": n, "display_node": n, "parent_node": None,
                                           "real_node_id": n} for n in ui_outputs}}
        record["ended"] = time.monotonic()
        record["ended_wall"] = time.time()
        self.running = None
        await self._broadcast_status()
        await self._send(client, "executing", {"node": None, "prompt_id": prompt_id})

    def _signatures(self, prompt: dict, order: list[str]) -> dict[str, str]:
        signatures: dict[str, str] = {}
        for node_id in order:
            node = prompt[node_id]
            inputs = {k: (signatures.get(str(v[0])), v[1]) if isinstance(v, list) else v
                      for k, v in graph.coerced_inputs(node, self._types()).items()}
            signatures[node_id] = json.dumps([node["class_type"], inputs], sort_keys=True, default=str)
        return signatures

    @staticmethod
    def _progress_state(prompt_id: str, node_id: str, value: float, maximum: float) -> dict:
        state = "finished" if value >= maximum else "running"
        return {"prompt_id": prompt_id, "nodes": {node_id: {
            "value": value, "max": maximum, "state": state, "node_id": node_id,
            "prompt_id": prompt_id, "display_node_id": node_id, "parent_node_id": None,
            "real_node_id": node_id}}}

    async def _check_interrupt(self, prompt_id: str, node_id: str, prompt: dict) -> None:
        step = 0
        while self._frozen.is_set() or (self._hang.is_set() and not self._interrupt):
            await asyncio.sleep(0.01)
            if self.malice is not None and self.malice.kind == "endless":  # busy forever
                step += 1
                await self._send(self.running[3].get("client_id") if self.running else None,
                                 "progress", {"value": step, "max": step + 1,
                                              "prompt_id": prompt_id, "node": node_id})
        if self._interrupt:
            self._interrupt = False
            raise Interrupted(node_id)

    async def _run_node(self, prompt_id, node_id, prompt, results, extra, emit) -> Any:
        node = prompt[node_id]
        kind = node["class_type"]
        inputs = graph.coerced_inputs(node, self._types())
        if self._fail_executions and self._fail_executions[0][0] == kind:
            _, exc_type, message = self._fail_executions.pop(0)
            raise ExecutionFailed(node_id, kind, exc_type, message)
        if kind in ("CheckpointLoaderSimple", "UNETLoader"):
            name = inputs["ckpt_name" if kind == "CheckpointLoaderSimple" else "unet_name"]
            await self._load(node_id, name, kind)
            return {"checkpoint": name}
        if kind in ("EmptyLatentImage", "EmptySD3LatentImage"):
            return {"size": (inputs["width"], inputs["height"]), "batch": inputs["batch_size"]}
        if kind == "EmptyImage":
            return {"size": (inputs["width"], inputs["height"]), "batch": inputs["batch_size"],
                    "color": inputs.get("color", 0)}
        if kind == "KSampler":
            steps = inputs["steps"]
            for step in range(1, steps + 1):
                await self._check_interrupt(prompt_id, node_id, prompt)
                if self.step_time:
                    await asyncio.sleep(self.step_time)
                await emit("progress", {"value": step, "max": steps, "prompt_id": prompt_id,
                                        "node": node_id}, True)
                await emit("progress_state", self._progress_state(prompt_id, node_id, step, steps), True)
            latent = results[str(inputs["latent_image"][0])]
            return dict(latent, color=inputs["seed"] % 0xFFFFFF)
        if kind in ("VAEDecode", "ImageInvert", "ImageBlur"):
            source = inputs.get("samples") or inputs.get("image")
            return dict(results[str(source[0])])
        part = self._run_part_node(kind, inputs, results)
        if part is not None:
            return part
        if kind in ("SaveImage", "PreviewImage"):
            image = results[str(inputs["images"][0])]
            return {"images": self._write_images(prompt, extra, image, kind,
                                                 inputs.get("filename_prefix", "ComfyUI"))}
        return {}

    def _run_part_node(self, kind: str, inputs: dict, results: dict) -> dict | None:
        """LoRA, image-input and upscale nodes: what they do to the image's size."""
        def source(name: str) -> dict:
            return dict(results[str(inputs[name][0])])

        if kind == "LoadImage":
            with Image.open(self.input_dir / inputs["image"]) as image:
                return {"size": image.size, "batch": 1}
        if kind == "VAEEncode":  # the VAE crops each side to a multiple of 8
            pixels = source("pixels")
            return dict(pixels, size=tuple(side // 8 * 8 for side in pixels["size"]))
        if kind == "LatentUpscaleBy":
            latent = source("samples")
            return dict(latent, size=tuple(round(side // 8 * inputs["scale_by"]) * 8
                                           for side in latent["size"]))
        if kind == "ImageScale":
            return dict(source("image"), size=(inputs["width"], inputs["height"]))
        if kind == "ImageUpscaleWithModel":  # a 4x model
            image = source("image")
            return dict(image, size=tuple(side * 4 for side in image["size"]))
        if kind in ("LoraLoader", "UpscaleModelLoader"):
            return {"loaded": inputs.get("lora_name") or inputs.get("model_name")}
        return None

    async def _load(self, node_id: str, name: str, kind: str = "CheckpointLoaderSimple") -> None:
        if name in self.loaded:
            return
        if self.load_time:
            await asyncio.sleep(self.load_time)
        if self.ledger is not None:
            size = self.checkpoint_vram.get(name, 12 * GIB if "xl" in name.lower() else 6 * GIB)
            if not self.ledger.allocate(f"comfyui:{name}", size, pid=os.getpid(),
                                        process_name="python3 main.py (ComfyUI)"):
                raise ExecutionFailed(node_id, kind, "torch.OutOfMemoryError",
                                      OOM_MESSAGE)
        self.loaded.add(name)

    def _write_images(self, prompt, extra, image, kind, prefix) -> list[dict]:
        subfolder, _, base = str(prefix).rpartition("/")
        folder = self.output_dir / ("temp" if kind == "PreviewImage" else "") / subfolder
        folder.mkdir(parents=True, exist_ok=True)
        if kind == "PreviewImage":
            base = f"ComfyUI_temp_{uuid.uuid4().hex[:5]}"
        taken = [int(p.name[len(base) + 1:len(base) + 6]) for p in folder.glob(f"{base}_*_.png")
                 if p.name[len(base) + 1:len(base) + 6].isdigit()]
        counter = max(taken, default=0) + 1
        info = PngInfo()
        info.add_text("prompt", json.dumps(prompt))
        for key, value in (extra.get("extra_pnginfo") or {}).items():
            info.add_text(key, json.dumps(value))
        color = image.get("color", 0)
        written = []
        for index in range(image.get("batch", 1)):
            name = f"{base}_{counter + index:05}_.png"
            buffer = io.BytesIO()
            Image.new("RGB", tuple(image["size"]), ((color >> 16) & 255, (color >> 8) & 255,
                                                    color & 255)).save(buffer, "PNG", pnginfo=info)
            (folder / name).write_bytes(buffer.getvalue())
            written.append({"filename": name, "subfolder": subfolder,
                            "type": "temp" if kind == "PreviewImage" else "output"})
        return written


def main() -> None:
    import argparse
    import signal

    parser = argparse.ArgumentParser(description="Run the fake ComfyUI server.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--step-time", type=float, default=0.0)
    parser.add_argument("--output-dir", type=Path, default=None)
    parser.add_argument("--checkpoints", default=None,
                        help="comma-separated checkpoint files (default: the two test ones)")
    args = parser.parse_args()
    extra = {"checkpoints": args.checkpoints.split(",")} if args.checkpoints else {}
    fake = FakeComfyUI(port=args.port, step_time=args.step_time, output_dir=args.output_dir,
                       **extra).start()
    print(fake.url, flush=True)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    stopped.wait()
    fake.stop()


if __name__ == "__main__":
    main()
