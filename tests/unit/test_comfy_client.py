"""The ComfyUI client against recorded wire shapes (httpx.MockTransport) and a
fake websocket connection; one real websocket round trip on 127.0.0.1."""

from __future__ import annotations

import json
import struct
import threading

import httpx
import pytest
from websockets.datastructures import Headers
from websockets.exceptions import (
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidMessage,
    InvalidStatus,
)
from websockets.frames import Close
from websockets.http11 import Response

from tests.conftest import closed_url
from tests.fakes.comfy_routes import URL, client_for
from zmm.backends.comfy import ComfyClient, OutputFile
from zmm.backends.comfy_events import Event, EventStream, StreamClosed
from zmm.errors import ComfyServerError, ComfyUnavailable, NotFound, WorkflowRejected


def raising(exc: Exception) -> ComfyClient:
    def handle(request: httpx.Request) -> httpx.Response:
        raise exc

    return ComfyClient(URL, transport=httpx.MockTransport(handle))


GRAPH = {"9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0]}}}


# -- POST /prompt ----------------------------------------------------------------

def test_submit_sends_our_ids_and_reads_the_answer():
    seen: list[httpx.Request] = []
    client = client_for({"POST /prompt": httpx.Response(200, json={
        "prompt_id": "job-1", "number": 0, "node_errors": {}})}, seen)
    result = client.submit(GRAPH, prompt_id="job-1", client_id="c1",
                           extra_data={"extra_pnginfo": {"zmm": {"seed": 1}}}, front=True)
    assert (result.prompt_id, result.number, result.node_errors) == ("job-1", 0.0, {})
    body = json.loads(seen[0].content)
    assert body == {"prompt": GRAPH, "prompt_id": "job-1", "client_id": "c1", "front": True,
                    "extra_data": {"extra_pnginfo": {"zmm": {"seed": 1}}}}


def test_submit_400_with_node_errors_is_one_readable_line_and_keeps_the_body():
    body = {"error": {"type": "prompt_outputs_failed_validation",
                      "message": "Prompt outputs failed validation", "details": "", "extra_info": {}},
            "node_errors": {"4": {"errors": [{
                "type": "value_not_in_list", "message": "Value not in list",
                "details": "ckpt_name: 'x' not in ['a', 'b']",
                "extra_info": {"input_name": "ckpt_name"}}],
                "dependent_outputs": ["9"], "class_type": "CheckpointLoaderSimple"}}}
    client = client_for({"POST /prompt": httpx.Response(400, json=body)})
    with pytest.raises(WorkflowRejected) as caught:
        client.submit(GRAPH, prompt_id="p", client_id="c")
    assert str(caught.value) == ("ComfyUI rejected the workflow: node 4 (CheckpointLoaderSimple): "
                                 "value_not_in_list: ckpt_name: 'x' not in ['a', 'b']")
    assert caught.value.body == body
    assert "\n" not in str(caught.value)


def test_submit_400_verbatim_invalid_input_type_example():
    body = {"error": {"type": "prompt_outputs_failed_validation",
                      "message": "Prompt outputs failed validation", "details": "", "extra_info": {}},
            "node_errors": {"1": {"errors": [{"type": "invalid_input_type",
                "message": "Failed to convert an input value to a INT value",
                "details": "width, abc, invalid literal for int() with base 10: 'abc'",
                "extra_info": {"input_name": "width",
                               "input_config": ["INT", {"default": 512, "min": 1, "max": 16384,
                                                        "step": 1}],
                               "received_value": "abc",
                               "exception_message": "invalid literal for int() with base 10: 'abc'"}}],
                "dependent_outputs": ["4"], "class_type": "EmptyImage"}}}
    client = client_for({"POST /prompt": httpx.Response(400, json=body)})
    with pytest.raises(WorkflowRejected, match=r"node 1 \(EmptyImage\): invalid_input_type: "
                                               r"width, abc, invalid literal"):
        client.submit(GRAPH, prompt_id="p", client_id="c")


def test_submit_400_required_input_missing_names_the_input():
    body = {"error": {"type": "prompt_outputs_failed_validation", "message": "x", "details": ""},
            "node_errors": {"6": {"errors": [{"type": "required_input_missing",
                "message": "Required input is missing", "details": "image",
                "extra_info": {"input_name": "image"}}],
                "dependent_outputs": ["5"], "class_type": "ImageInvert"}}}
    client = client_for({"POST /prompt": httpx.Response(400, json=body)})
    with pytest.raises(WorkflowRejected, match=r"node 6 \(ImageInvert\): required_input_missing: "
                                               r"image$"):
        client.submit(GRAPH, prompt_id="p", client_id="c")


def test_submit_400_invalid_prompt_uses_error_message_and_details():
    body = {"error": {"type": "invalid_prompt",
                      "message": "Cannot execute because node NoSuchNodeType does not exist.",
                      "details": "Node ID '#2'", "extra_info": {}}, "node_errors": {}}
    client = client_for({"POST /prompt": httpx.Response(400, json=body)})
    with pytest.raises(WorkflowRejected) as caught:
        client.submit(GRAPH, prompt_id="p", client_id="c")
    assert str(caught.value) == ("ComfyUI rejected the workflow: Cannot execute because node "
                                 "NoSuchNodeType does not exist. (Node ID '#2')")


def test_submit_400_long_choice_lists_are_cut():
    choices = [f"model-{i}.safetensors" for i in range(500)]
    body = {"error": {"type": "prompt_outputs_failed_validation"},
            "node_errors": {"4": {"class_type": "CheckpointLoaderSimple", "errors": [{
                "type": "value_not_in_list", "details": f"ckpt_name: 'x' not in {choices}"}]}}}
    client = client_for({"POST /prompt": httpx.Response(400, json=body)})
    with pytest.raises(WorkflowRejected) as caught:
        client.submit(GRAPH, prompt_id="p", client_id="c")
    assert len(str(caught.value)) < 400 and str(caught.value).endswith("…")


def test_submit_200_with_node_errors_is_returned_for_the_caller_to_judge():
    partial = {"prompt_id": "e3bda606", "number": 15,
               "node_errors": {"6": {"errors": [{"type": "required_input_missing",
                   "message": "Required input is missing", "details": "image",
                   "extra_info": {"input_name": "image"}}],
                   "dependent_outputs": ["5"], "class_type": "ImageInvert"}}}
    client = client_for({"POST /prompt": httpx.Response(200, json=partial)})
    result = client.submit(GRAPH, prompt_id="e3bda606", client_id="c")
    assert result.number == 15.0 and result.node_errors == partial["node_errors"]


def test_submit_500_text_plain_is_an_ambiguous_server_error():
    text = "500 Internal Server Error\n\nServer got itself in trouble"
    client = client_for({"POST /prompt": httpx.Response(
        500, text=text, headers={"content-type": "text/plain"})})
    with pytest.raises(ComfyServerError) as caught:
        client.submit(GRAPH, prompt_id="p", client_id="c")
    assert "500" in str(caught.value) and "Server got itself in trouble" in str(caught.value)
    assert not isinstance(caught.value, ComfyUnavailable)


@pytest.mark.parametrize("answer", [
    httpx.Response(200, text="<html>proxy</html>"),
    httpx.Response(200, json=["not", "a", "dict"]),
    httpx.Response(400, text="Bad Request"),
    httpx.Response(413, text="too big"),
])
def test_submit_unreadable_or_unexpected_answers_are_server_errors(answer):
    client = client_for({"POST /prompt": answer})
    with pytest.raises(ComfyServerError, match="POST /prompt"):
        client.submit(GRAPH, prompt_id="p", client_id="c")


def test_submit_without_an_answer_after_sending_is_ambiguous_not_unavailable():
    client = raising(httpx.ReadTimeout("read timed out"))
    with pytest.raises(ComfyServerError, match="may have taken the request"):
        client.submit(GRAPH, prompt_id="p", client_id="c")


def test_submit_that_never_connected_is_unavailable():
    client = raising(httpx.ConnectError("[Errno 111] Connection refused"))
    with pytest.raises(ComfyUnavailable) as caught:
        client.submit(GRAPH, prompt_id="p", client_id="c")
    assert caught.value.reason == "connection refused" and caught.value.url == URL


# -- unreachable ---------------------------------------------------------------------

def test_a_closed_port_is_connection_refused():
    client = ComfyClient(closed_url(), timeout=5)
    for call in (client.ping, client.queue, lambda: client.history("x")):
        with pytest.raises(ComfyUnavailable) as caught:
            call()
        assert caught.value.reason == "connection refused"
    assert "unreachable: connection refused" in str(caught.value)
    client.close()


@pytest.mark.parametrize("exc,reason", [
    (httpx.ConnectError("[Errno -3] Temporary failure in name resolution"), "name not resolved"),
    (httpx.ConnectError("[Errno -2] Name or service not known"), "name not resolved"),
    (httpx.ConnectTimeout("timed out"), "timed out after 30s"),
    (httpx.ReadTimeout("timed out"), "timed out after 30s"),
    (httpx.ConnectError("[Errno 113] No route to host"), "No route to host"),
])
def test_reasons_are_short_and_human(exc, reason):
    with pytest.raises(ComfyUnavailable) as caught:
        raising(exc).system_stats()
    assert caught.value.reason == reason


def test_ping_treats_anything_but_comfyui_as_down():
    with pytest.raises(ComfyUnavailable, match="404 .not a ComfyUI server"):
        client_for({}).ping()
    with pytest.raises(ComfyUnavailable, match="answered 502"):
        client_for({"GET /system_stats": httpx.Response(502, text="Bad Gateway")}).ping()
    stats = {"system": {"comfyui_version": "0.3.64"}, "devices": []}
    assert client_for({"GET /system_stats": httpx.Response(200, json=stats)}).ping() == stats


# -- queue, history, files ------------------------------------------------------

def test_queue_pending_is_sorted_into_run_order():
    def item(number, prompt_id, client_id="c1"):
        return [number, prompt_id, {"4": {}}, {"client_id": client_id}, ["4"]]

    # The recorded run: S(20) running; J2 deleted; heap order as a server might send it.
    raw = {"queue_running": [item(20, "S")],
           "queue_pending": [item(-23, "J3"), item(21, "J1"), item(-5.0, "J4"), item(1000.0, "J5"),
                             item(24, "J6"), item(2.5, "J7"), item(25, "J8"), item(26, "J9"),
                             item(21, "J0", None)]}
    state = client_for({"GET /queue": httpx.Response(200, json=raw)}).queue()
    assert [i.prompt_id for i in state.running] == ["S"]
    assert [i.prompt_id for i in state.pending] == ["J3", "J4", "J7", "J0", "J1", "J6", "J8",
                                                    "J9", "J5"]
    assert state.pending[0].number == -23.0 and state.pending[0].client_id == "c1"
    assert state.pending[3].client_id is None


def test_queue_that_cannot_be_read_is_a_server_error():
    client = client_for({"GET /queue": httpx.Response(200, json={"queue_pending": [[]]})})
    with pytest.raises(ComfyServerError):
        client.queue()


def test_history_empty_object_means_unknown_or_unfinished():
    client = client_for({"GET /history/abc": httpx.Response(200, json={})})
    assert client.history("abc") is None


def test_history_success_entry():
    entry = {"prompt": [0, "p1", {}, {"client_id": "c"}, ["9"]],
             "outputs": {"9": {"images": [{"filename": "basic_00001_.png", "subfolder": "probe",
                                           "type": "output"}]},
                         "12": {"text": ["not a file"]}},
             "status": {"status_str": "success", "completed": True,
                        "messages": [["execution_start", {"prompt_id": "p1", "timestamp": 1}],
                                     ["execution_cached", {"nodes": [], "prompt_id": "p1"}],
                                     ["execution_success", {"prompt_id": "p1", "timestamp": 2}]]},
             "meta": {"9": {"node_id": "9"}}}
    client = client_for({"GET /history/p1": httpx.Response(200, json={"p1": entry})})
    found = client.history("p1")
    assert found.completed and found.status_str == "success" and found.error is None
    assert found.outputs == [OutputFile("9", "basic_00001_.png", "probe", "output")]
    assert not found.interrupted


def test_history_error_and_interrupted_entries():
    error = {"prompt_id": "p2", "node_id": "2", "node_type": "ImageToMask",
             "exception_message": "index 3 is out of bounds\n", "exception_type": "IndexError"}
    errored = {"outputs": {}, "status": {"status_str": "error", "completed": False, "messages": [
        ["execution_start", {"prompt_id": "p2"}], ["execution_error", error]]}}
    stopped = {"outputs": {}, "status": {"status_str": "error", "completed": False, "messages": [
        ["execution_start", {"prompt_id": "p3"}],
        ["execution_interrupted", {"prompt_id": "p3", "node_id": "3", "node_type": "KSampler"}]]}}
    client = client_for({"GET /history/p2": httpx.Response(200, json={"p2": errored}),
                         "GET /history/p3": httpx.Response(200, json={"p3": stopped})})
    first, second = client.history("p2"), client.history("p3")
    assert first.error == error and not first.completed and not first.interrupted
    assert second.interrupted and second.error is None and second.outputs == []


def test_view_fetches_bytes_and_404_is_not_found():
    seen: list[httpx.Request] = []
    client = client_for({"GET /view": lambda r: httpx.Response(
        200 if r.url.params["filename"] == "a.png" else 404, content=b"\x89PNG")}, seen)
    assert client.view(OutputFile("9", "a.png", "zmm", "output")) == b"\x89PNG"
    assert dict(seen[0].url.params) == {"filename": "a.png", "subfolder": "zmm", "type": "output"}
    with pytest.raises(NotFound, match="zmm/b.png"):
        client.view(OutputFile("9", "b.png", "zmm", "output"))


def test_checkpoints_from_models_or_from_object_info():
    listed = client_for({"GET /models/checkpoints": httpx.Response(200, json=["a.safetensors"])})
    assert listed.checkpoints() == ["a.safetensors"]
    info = {"CheckpointLoaderSimple": {"input": {"required": {"ckpt_name": [
        ["random-sd15-arch-fp16.safetensors"], {"tooltip": "The name of the checkpoint."}]}}}}
    older = client_for({"GET /object_info/CheckpointLoaderSimple": httpx.Response(200, json=info)})
    assert older.checkpoints() == ["random-sd15-arch-fp16.safetensors"]
    combo = {"CheckpointLoaderSimple": {"input": {"required": {"ckpt_name": [
        "COMBO", {"options": ["b.safetensors"]}]}}}}
    newer = client_for({"GET /object_info/CheckpointLoaderSimple": httpx.Response(200, json=combo)})
    assert newer.checkpoints() == ["b.safetensors"]


def test_empty_body_posts_and_their_failures():
    seen: list[httpx.Request] = []
    ok = httpx.Response(200)
    client = client_for({"POST /queue": ok, "POST /interrupt": ok, "POST /free": ok}, seen)
    client.delete_from_queue(["a", "b"])
    client.delete_from_queue([])  # nothing to send
    client.interrupt("a")
    client.interrupt()
    client.free(unload_models=True, free_memory=False)
    assert [(r.url.path, json.loads(r.content)) for r in seen] == [
        ("/queue", {"delete": ["a", "b"]}), ("/interrupt", {"prompt_id": "a"}),
        ("/interrupt", {}), ("/free", {"unload_models": True, "free_memory": False})]
    with pytest.raises(ComfyServerError, match="404 to POST /free"):
        client_for({}).free()


def test_unexpected_status_on_a_read_names_status_and_body():
    client = client_for({"GET /queue": httpx.Response(503, text="warming up")})
    with pytest.raises(ComfyServerError, match="503 to GET /queue: warming up"):
        client.queue()


def test_ws_url_keeps_the_path_prefix_and_scheme():
    assert ComfyClient("http://h:8188").ws_url("abc") == "ws://h:8188/ws?clientId=abc"
    assert ComfyClient("https://h/comfy/").ws_url("a b") == "wss://h/comfy/ws?clientId=a+b"


# -- websocket ---------------------------------------------------------------------

class FakeSocket:
    """What websockets' sync ClientConnection offers zmm: recv(timeout), close()."""

    def __init__(self, frames):
        self.frames = list(frames)
        self.closed = False
        self.timeouts: list[float] = []

    def __enter__(self):
        return self

    def recv(self, timeout=None):
        self.timeouts.append(timeout)
        if not self.frames:
            raise TimeoutError("timed out")
        frame = self.frames.pop(0)
        if isinstance(frame, BaseException):
            raise frame
        return frame

    def close(self):
        self.closed = True


def stream_of(frames) -> tuple[EventStream, FakeSocket, list]:
    sock = FakeSocket(frames)
    calls = []

    def connect(url, **kwargs):
        calls.append((url, kwargs))
        return sock

    client = ComfyClient("http://127.0.0.1:8188", ws_connect=connect)
    return client.events("cid"), sock, calls


def text(kind, **data):
    return json.dumps({"type": kind, "data": data})


def test_text_frames_become_events():
    stream, _, calls = stream_of([
        text("status", status={"exec_info": {"queue_remaining": 0}}, sid="cid"),
        text("executing", node="3", display_node="3", prompt_id="P"),
        text("progress", value=1, max=4, prompt_id="P", node="3"),
        text("executing", node=None, prompt_id="P"),
    ])
    assert calls[0][0] == "ws://127.0.0.1:8188/ws?clientId=cid"
    # no keepalive thread: a ComfyUI silent for 20-40 s made it log a traceback on stderr
    assert calls[0][1]["ping_interval"] is None
    assert stream.recv(1) == Event("status", {"status": {"exec_info": {"queue_remaining": 0}},
                                              "sid": "cid"}, None)
    assert stream.recv(1).data["node"] == "3"
    progress = stream.recv(1)
    assert (progress.type, progress.prompt_id, progress.data["value"]) == ("progress", "P", 1)
    done = stream.recv(1)
    assert done.type == "executing" and done.data["node"] is None and done.prompt_id == "P"


def test_binary_preview_frames_and_garbage():
    meta = json.dumps({"node_id": "3", "prompt_id": "P", "image_type": "image/jpeg"}).encode()
    with_meta = struct.pack(">II", 4, len(meta)) + meta + b"JPEGDATA"
    plain = struct.pack(">II", 1, 2) + b"PNGDATA"
    stream, _, _ = stream_of(["not json", "[1, 2]", b"\x00\x01", with_meta, plain,
                              struct.pack(">II", 3, 1) + b"3hello"])
    first = stream.recv(1)  # the unreadable frames before it are skipped
    assert (first.type, first.prompt_id, first.data["node_id"], first.data["image"]) == (
        "preview", "P", "3", b"JPEGDATA")
    second = stream.recv(1)
    assert (second.type, second.prompt_id, second.data["image_type"]) == ("preview", None,
                                                                          "image/png")
    assert stream.recv(0.01) is None  # event 3 is skipped, then nothing more


def test_timeout_is_none():
    stream, sock, _ = stream_of([])
    assert stream.recv(0.05) is None
    assert 0 <= sock.timeouts[0] <= 0.05


@pytest.mark.parametrize("exc,reason", [
    (ConnectionClosedError(None, None), "the websocket dropped"),
    (ConnectionClosedError(Close(1011, "boom"), None), "the websocket closed (code 1011)"),
    (ConnectionClosedOK(Close(1000, ""), Close(1000, ""), True), "the server closed the websocket"),
])
def test_a_closed_socket_is_stream_closed(exc, reason):
    stream, sock, _ = stream_of([text("status"), exc])
    assert stream.recv(1).type == "status"
    with pytest.raises(StreamClosed) as caught:
        stream.recv(1)
    assert isinstance(caught.value, ComfyUnavailable) and caught.value.reason == reason
    with stream:
        pass
    assert sock.closed


def test_websocket_connect_failures_are_unavailable():
    def refused(url, **kwargs):
        raise ConnectionRefusedError(111, "Connection refused")

    def rejected(url, **kwargs):
        raise InvalidStatus(Response(403, "Forbidden", Headers(), b""))

    with pytest.raises(ComfyUnavailable, match="connection refused"):
        ComfyClient(URL, ws_connect=refused).events("c")
    with pytest.raises(ComfyUnavailable, match="HTTP 403"):
        ComfyClient(URL, ws_connect=rejected).events("c")


@pytest.mark.parametrize("failure", [
    TimeoutError("timed out during opening handshake"),
    ConnectionResetError(104, "Connection reset by peer"),
    EOFError("connection closed while reading HTTP status line"),
    InvalidMessage("did not receive a valid HTTP response"),
    ConnectionClosedError(None, None),
])
def test_transport_failures_while_opening_the_stream_are_unavailable(failure):
    def connect(url, **kwargs):
        raise failure

    with pytest.raises(ComfyUnavailable):
        ComfyClient(URL, ws_connect=connect).events("c")


@pytest.mark.parametrize("bug", [TypeError("connect() got an unexpected keyword argument"),
                                 AttributeError("'NoneType' object has no attribute 'send'"),
                                 KeyError("clientId")])
def test_a_programming_error_while_watching_propagates(bug):
    """Only a transport failure means ComfyUI is unavailable (jobs wait for it);
    a bug must surface, not keep `serve-worker` waiting for ComfyUI forever."""
    def connect(url, **kwargs):
        raise bug

    with pytest.raises(type(bug)):
        ComfyClient(URL, ws_connect=connect).events("c")
    stream, _, _ = stream_of([text("status"), bug])
    assert stream.recv(1).type == "status"
    with pytest.raises(type(bug)):
        stream.recv(1)


def test_a_real_websocket_round_trip():
    from websockets.sync.server import serve

    def handler(connection):
        assert connection.request.path == "/prefix/ws?clientId=real"
        connection.send(text("status", status={"exec_info": {"queue_remaining": 0}}, sid="real"))
        connection.send(struct.pack(">II", 1, 1) + b"JPEG")
        connection.close()

    with serve(handler, "127.0.0.1", 0) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        port = server.socket.getsockname()[1]
        client = ComfyClient(f"http://127.0.0.1:{port}/prefix", timeout=5)
        with client.events("real") as stream:
            assert stream.recv(5).data["sid"] == "real"
            assert stream.recv(5).type == "preview"
            with pytest.raises(StreamClosed):
                stream.recv(5)
        server.shutdown()
        thread.join(5)
    with pytest.raises(ComfyUnavailable, match="connection refused"):
        ComfyClient(closed_url(), timeout=5).events("x")
