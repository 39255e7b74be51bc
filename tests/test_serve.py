"""`seemore serve`: OpenAI's chat-completions API on a tiny trained run, answered by the
continuous-batching engine: the same answers as model.ask, streamed or whole, concurrent
requests batched, and every bad request a 4xx with an error object, the server alive."""

import base64
import io
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from PIL import Image

from seemore.cli import main
from seemore.data.shapes import ShapesWorld
from seemore.objectives.load import load_folder
from seemore.serving.app import Limits, create_app

fastapi_testclient = pytest.importorskip("fastapi.testclient")
EXAMPLES = Path(__file__).parents[1] / "examples"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("serve") / "run"
    assert main(["train", "--preset", "tiny", "--out", str(out), "--no-progress",
                 "train.steps=40", "train.final_eval_scenes=2"]) == 0
    return out


@pytest.fixture(scope="module")
def served(run):
    model = load_folder(run)
    app = create_app(model, "tiny", True, Limits(max_batch=4, max_image_bytes=200_000))
    with fastapi_testclient.TestClient(app) as client:
        yield model, client, app


def data_url(image: Image.Image, kind: str = "PNG") -> str:
    buffer = io.BytesIO()
    image.save(buffer, kind)
    return f"data:image/{kind.lower()};base64," + base64.b64encode(buffer.getvalue()).decode()


def scene(i: int = 0) -> Image.Image:
    return Image.fromarray(ShapesWorld(32).labelled("test", i).image)


def ask(question: str, image: Image.Image | None = None, **settings) -> dict:
    content: list = [{"type": "text", "text": question}]
    if image is not None:
        content.append({"type": "image_url", "image_url": {"url": data_url(image)}})
    return {"model": "tiny", "messages": [{"role": "user", "content": content}], **settings}


def test_health_and_models(served):
    _, client, _ = served
    assert client.get("/health").json()["status"] == "ok"
    assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["tiny"]


def test_answers_equal_the_models_own_whole_and_streamed(served):
    model, client, _ = served
    for i, question in enumerate(["what color is the circle?", "how many objects are there?",
                                  "describe the image."]):
        expected = model.ask(scene(i), question)
        reply = client.post("/v1/chat/completions", json=ask(question, scene(i))).json()
        assert reply["choices"][0]["message"]["content"] == expected
        assert reply["choices"][0]["finish_reason"] == "stop"
        assert reply["usage"]["prompt_tokens"] == len(model.prompt_ids(question))
        with client.stream("POST", "/v1/chat/completions",
                           json=ask(question, scene(i), stream=True)) as response:
            lines = [line for line in response.iter_lines() if line]
        assert lines[-1] == "data: [DONE]"
        chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
        assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == expected
        assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_max_completion_tokens_limits_the_answer_as_max_tokens_does(served):
    """The openai client's newer name for max_tokens used to be ignored."""
    _, client, _ = served
    body = ask("describe the image.", scene())
    reply = client.post("/v1/chat/completions", json={**body, "max_completion_tokens": 2})
    assert reply.json()["usage"]["completion_tokens"] == 2
    harmless = {"user": "me", "stream_options": None, "logprobs": False, "tools": [],
                "response_format": {"type": "text"}, "presence_penalty": 0}
    assert client.post("/v1/chat/completions", json={**body, **harmless}).status_code == 200


def test_top_k_limits_the_sampling(served):
    """top_k (vLLM's extension, which seemore's own sampling has) used to be ignored: at
    temperature 2 with top_k 1 the answer is the greedy one, and without it is not."""
    model, client, _ = served
    body = ask("describe the image.", scene(), max_tokens=24, temperature=2.0, seed=0)

    def answer(**extra) -> str:
        reply = client.post("/v1/chat/completions", json={**body, **extra})
        return reply.json()["choices"][0]["message"]["content"]

    greedy = model.caption(scene(), max_new_tokens=24)  # "describe the image." is the prompt
    assert answer(top_k=1) == greedy != answer()
    assert answer(top_k=3) == model.caption(scene(), max_new_tokens=24, temperature=2.0,
                                            top_k=3, seed=0)
    reply = client.post("/v1/chat/completions", json={**body, "top_k": 0})
    assert reply.status_code == 400 and "top_k must be an integer from 1" in reply.text


def test_multi_turn_and_max_tokens(served):
    _, client, _ = served
    body = ask("what color is the circle?", scene())
    body["messages"] += [{"role": "assistant", "content": "red"},
                         {"role": "user", "content": "how many objects are there?"}]
    assert client.post("/v1/chat/completions", json=body).status_code == 200
    reply = client.post("/v1/chat/completions", json=ask("describe the image.", scene(),
                                                         max_tokens=2)).json()
    assert reply["usage"]["completion_tokens"] == 2
    assert reply["choices"][0]["finish_reason"] == "length"


def test_concurrent_requests_share_decode_steps(served):
    model, client, app = served
    steps = app.state.engine.steps
    replies = {}

    def one(i):
        replies[i] = client.post("/v1/chat/completions",
                                 json=ask("describe the image.", scene(i % 3)))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert [r.status_code for r in replies.values()] == [200] * 8
    tokens = sum(r.json()["usage"]["completion_tokens"] for r in replies.values())
    assert app.state.engine.steps - steps < tokens - 8  # fewer steps than one at a time


BAD = {
    "malformed JSON": (b"{not json", 400, "not JSON"),
    "no image": (ask("what color is the circle?"), 400, "give one as an image_url"),
    "bad base64": ({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "hi"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}]}]},
        400, "not valid base64"),
    "not an image": ({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "hi"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,"
                                            + base64.b64encode(b"hello").decode()}}]}]},
        400, "image"),
    "image over the limit": (ask("hi", Image.effect_noise((400, 400), 64).convert("RGB")),
                             413, "over the server's limit"),
    "unknown model": ({**ask("hi", scene()), "model": "gpt-4"}, 404, "does not exist"),
    "empty prompt": (ask("   ", scene()), 400, "user message with text"),
    "prompt over the context": (ask("what color " * 200, scene()), 400, "context"),
    "characters the tokenizer lacks": (ask("what colour is the ✓?", scene()), 400,
                                       "characters the tokenizer does not know"),
    "an http URL": ({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "hi"},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]},
        400, "not fetched"),
    "a local path": ({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "hi"},
        {"type": "image_url", "image_url": {"url": "/etc/passwd"}}]}]},
        400, "--allow-local-files"),
    "n=2": ({**ask("hi", scene()), "n": 2}, 400, "n must be 1"),
    "bad temperature": ({**ask("hi", scene()), "temperature": "hot"}, 400, "temperature"),
    "no messages": ({"model": "tiny"}, 400, "messages must be"),
    # what this server does not do is refused, not ignored
    "logprobs": ({**ask("hi", scene()), "logprobs": True}, 400, "logprobs is not supported"),
    "tools": ({**ask("hi", scene()), "tools": [{"type": "function", "function": {
        "name": "f"}}]}, 400, "tools is not supported"),
    "json mode": ({**ask("hi", scene()), "response_format": {"type": "json_object"}}, 400,
                  "response_format is not supported"),
    "a penalty": ({**ask("hi", scene()), "frequency_penalty": 0.5}, 400,
                  "frequency_penalty is not supported"),
    "two token limits": ({**ask("hi", scene()), "max_tokens": 3, "max_completion_tokens": 5},
                         400, "max_tokens and max_completion_tokens differ"),
}


def test_local_files_only_under_the_allowed_folder_and_a_timeout(run, tmp_path):
    model = load_folder(run)
    (tmp_path / "allowed").mkdir()
    inside, outside = tmp_path / "allowed" / "scene.png", tmp_path / "scene.png"
    scene().save(inside)
    scene().save(outside)

    def with_path(path):
        return {"messages": [{"role": "user", "content": [
            {"type": "text", "text": "what color is the circle?"},
            {"type": "image_url", "image_url": {"url": str(path)}}]}]}

    app = create_app(model, "tiny", True, allow_dir=(tmp_path / "allowed").resolve())
    with fastapi_testclient.TestClient(app) as client:
        reply = client.post("/v1/chat/completions", json=with_path(inside))
        assert reply.json()["choices"][0]["message"]["content"] == model.ask(
            scene(), "what color is the circle?")
        assert client.post("/v1/chat/completions", json=with_path(outside)).status_code == 403
        escape = tmp_path / "allowed" / ".." / "scene.png"
        assert client.post("/v1/chat/completions", json=with_path(escape)).status_code == 403
    app = create_app(model, "tiny", True, Limits(timeout_s=1e-6))
    with fastapi_testclient.TestClient(app) as client:
        response = client.post("/v1/chat/completions", json=ask("describe the image.", scene()))
        assert response.status_code == 408 and "limit" in response.json()["error"]["message"]


def test_a_full_queue_is_429_with_retry_after(run):
    model = load_folder(run)
    app = create_app(model, "tiny", True, Limits(max_queue=1, timeout_s=3))
    app.state.engine.submit = lambda request: request  # held: never decoded, times out
    with fastapi_testclient.TestClient(app) as client:
        held = threading.Thread(target=client.post, args=("/v1/chat/completions",),
                                kwargs={"json": ask("describe the image.", scene())})
        held.start()
        while client.get("/health").json()["pending"] < 1:
            time.sleep(0.01)
        response = client.post("/v1/chat/completions", json=ask("hi", scene()))
        assert response.status_code == 429 and response.headers["retry-after"] == "1"
        assert response.json()["error"]["type"] == "rate_limit_error"
        held.join()
        assert client.get("/health").json()["pending"] == 0


def test_a_model_that_does_not_draw_says_so(served):
    _, client, _ = served
    response = client.post("/v1/images/generations", json={"prompt": "a red circle"})
    assert response.status_code == 400
    assert "does not draw" in response.json()["error"]["message"]


@pytest.mark.parametrize("case", BAD)
def test_bad_requests_are_4xx_with_an_error_object(served, case):
    _, client, _ = served
    body, status, words = BAD[case]
    if isinstance(body, bytes):
        response = client.post("/v1/chat/completions", content=body,
                               headers={"content-type": "application/json"})
    else:
        response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == status, response.text
    assert words in response.json()["error"]["message"]
    assert client.post("/v1/chat/completions", json=ask("hi", scene())).status_code == 200


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def live_server(model):
    """seemore's app on a free port of 127.0.0.1, in a thread; yields its /v1 URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(model, "tiny", True), port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_the_openai_client_talks_to_seemore_serve(run):
    openai = pytest.importorskip("openai")
    model = load_folder(run)
    with live_server(model) as url:
        client = openai.OpenAI(base_url=url, api_key="none")
        messages = [{"role": "user", "content": [
            {"type": "text", "text": "what color is the circle?"},
            {"type": "image_url", "image_url": {"url": data_url(scene())}}]}]
        reply = client.chat.completions.create(model="tiny", messages=messages)
        expected = model.ask(scene(), "what color is the circle?")
        assert reply.choices[0].message.content == expected
        streamed = "".join(chunk.choices[0].delta.content or "" for chunk in
                           client.chat.completions.create(model="tiny", messages=messages,
                                                          stream=True))
        assert streamed == expected
        chunks = list(client.chat.completions.create(
            model="tiny", messages=messages, stream=True, max_completion_tokens=3,
            stream_options={"include_usage": True}))
        assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens <= 3
        assert all(chunk.usage is None for chunk in chunks[:-1])
        with pytest.raises(openai.BadRequestError, match="give one as an image_url"):
            client.chat.completions.create(model="tiny", messages=[
                {"role": "user", "content": "what color is the circle?"}])


def example(name: str, *args: str) -> str:
    done = subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_the_client_example_says_when_no_server_answers(tmp_path):
    with socket.socket() as free:  # a port nothing listens on
        free.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{free.getsockname()[1]}/v1"
    done = subprocess.run([sys.executable, str(EXAMPLES / "openai_client.py"), "x.png", "q",
                           "--base-url", url], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip() == (f"no server answers at {url}: start one with "
                                   "`seemore serve RUN`")


def test_the_examples_run_as_written(run, tmp_path):
    model = load_folder(run)
    image = tmp_path / "scene.png"
    scene().save(image)
    out = example("image_captioning.py", str(run), str(image))
    assert out.strip() == f"{image}: {model.caption(scene())}"
    assert example("image_captioning.py", str(run)).count("truth: ") == 4
    question = "what color is the circle?"
    line = f"{question} -> {model.ask(scene(), question)}"
    out = example("visual_question_answering.py", str(run), str(image), question)
    assert out.strip() == line
    assert "answers exactly right" in example("visual_question_answering.py", str(run))
    with live_server(model) as url:
        out = example("openai_client.py", str(image), question, "--base-url", url)
    assert out.startswith(line + "\n")
    assert "how many objects are there? -> " in out


def test_seemore_chat_holds_a_conversation(run, tmp_path, monkeypatch, capsys):
    model = load_folder(run)
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    scene(0).save(first)
    scene(1).save(second)
    lines = iter(["what color is the circle?", "how many objects are there?",
                  f"/image {tmp_path / 'missing.png'}", f"/image {second}",
                  "what color is the circle?", "/quit"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(lines))
    assert main(["chat", str(run), str(first)]) == 0
    out = capsys.readouterr().out.splitlines()
    answers = [line for line in out if line and not line.startswith(("ask about", "new image",
                                                                      "error"))]
    assert answers[0] == model.ask(scene(0), "what color is the circle?")
    assert answers[-1] == model.ask(scene(1), "what color is the circle?")
    assert any(line.startswith("error: ") and "missing.png" in line for line in out)


def test_seemore_chat_refuses_bad_sampling_before_the_first_question(run, tmp_path, capsys):
    """It used to answer every question with the same error."""
    scene(0).save(tmp_path / "a.png")
    assert main(["chat", str(run), str(tmp_path / "a.png"), "--temperature", "-1"]) == 2
    assert "temperature must be 0 (greedy) or more" in capsys.readouterr().err


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("no chromium (.ci/run installs Debian's)")
    return path


def test_the_web_page_streams_an_answer_in_a_real_browser(run, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    model = load_folder(run)
    image = tmp_path / "scene.png"
    scene(2).resize((256, 256), Image.Resampling.NEAREST).save(image)
    question = "what color is the circle?"
    expected = model.ask(scene(2), question)
    caption = model.caption(scene(2))
    with live_server(model) as url, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 760, "height": 640})
        page.goto(url.removesuffix("/v1") + "/")
        sync_api.expect(page.locator("#model")).to_have_text("tiny")
        sync_api.expect(page.locator("#drawing")).to_be_hidden()  # this model does not draw
        page.set_input_files("#file", str(image))
        sync_api.expect(page.locator("#preview")).to_be_visible()
        page.fill("#question", question)
        page.click("#send")
        sync_api.expect(page.locator("#answer")).to_have_text(expected, timeout=20_000)
        page.click("#caption")
        sync_api.expect(page.locator("#answer")).to_have_text(caption, timeout=20_000)
        page.fill("#question", "   ")
        page.click("#send")
        sync_api.expect(page.locator("#error")).to_contain_text("user message with text")
        browser.close()


def test_a_compile_that_fails_falls_back_or_stops_clearly(run, monkeypatch, caplog):
    """Where torch.compile fails (here: made to), the default serves eagerly and says why;
    an explicit --compile stops with the reason instead."""
    from seemore.errors import UserError
    from seemore.serving.app import start_engine
    from seemore.serving.engine import Engine

    def broken(self):
        raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found\nmore lines")

    monkeypatch.setattr(Engine, "warm", broken)
    model = load_folder(run)
    with caplog.at_level("WARNING", logger="seemore.serve"):
        engine = start_engine(model, 2, None)
    try:
        assert engine.compiled is None
        assert "No working C++ compiler found" in caplog.text and "more lines" not in caplog.text
    finally:
        engine.close()
    with pytest.raises(UserError, match="--compile: torch.compile failed here "
                                        r"\(InvalidCxxCompiler: No working C\+\+ compiler"):
        start_engine(model, 2, True)


def test_a_port_in_use_is_a_clear_error_before_the_model_loads(run):
    """uvicorn used to log the bind error after the model had loaded, and exit with 0."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "seemore", "serve", str(run), "--port",
                                 str(port), "--no-compile"], capture_output=True, text=True,
                                timeout=120)
    assert result.returncode == 2
    assert f"error: cannot serve on 127.0.0.1:{port}: address already in use" in (
        result.stderr.lower())
    assert "serving" not in result.stdout


@pytest.mark.parametrize("args, message", [
    (["--port", "99999"], "--port must be 0 to 65535, got 99999"),  # was an OverflowError
    (["--max-batch", "0"], "--max-batch and --max-queue must be at least 1"),
    (["--timeout", "nan"], "--timeout positive"),
])
def test_bad_server_settings_are_refused_before_the_model_loads(tmp_path, capsys, args, message):
    """Checked before anything is read: the run folder here does not even exist."""
    assert main(["serve", str(tmp_path / "no-run"), *args]) == 2
    assert message in capsys.readouterr().err
