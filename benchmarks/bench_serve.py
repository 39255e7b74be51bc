"""Serving: `seemore serve` on 127.0.0.1 driven by the official openai client.

    python benchmarks/bench_serve.py [--run RUN] [--preset default] [--clients 1,8,32,64]

Without --run, a model of the preset with random weights is saved and served (the speed
does not depend on the weights; its answers are not meaningful). The server compiles its
decode step before it answers (--no-compile: it decodes eagerly); the time until it
answers is reported. Each level of concurrent
clients sends --requests questions about shapes-world images, up to --max-tokens new tokens
each: requests/s, new tokens/s, p50 and p99 latency, errors (must be 0); then the server's
peak RSS. Then a fault run: --fault-requests mixed requests of which a third are malformed
(the kinds tests/test_serve.py checks): how many 5xx (must be 0), whether every bad one got
a 4xx, whether every good one got the model's own answer (its greedy `ask`), and whether
the server still answers.
"""

import argparse
import base64
import io
import json
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from common import count, counts, emit, machine, run_main  # noqa: E402

from seemore.config import get_preset  # noqa: E402
from seemore.data.shapes import ShapesWorld  # noqa: E402
from seemore.objectives import build_model  # noqa: E402
from seemore.objectives.load import load_folder  # noqa: E402

QUESTIONS = ["what color is the circle?", "how many objects are there?",
             "where is the square?", "what shape is the red object?"]


def data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def messages(question: str, url: str) -> list:
    return [{"role": "user", "content": [{"type": "text", "text": question},
                                         {"type": "image_url", "image_url": {"url": url}}]}]


def start_server(run: Path, max_batch: int, compile: bool) -> tuple[subprocess.Popen, str]:
    """The server and its URL, once it answers (it compiles its decode step first, unless
    not compile)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "seemore", "serve", str(run), "--port",
                               str(port), "--max-batch", str(max_batch),
                               "--compile" if compile else "--no-compile"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and server.poll() is None:
        try:
            if httpx.get(url + "/health").status_code == 200:
                return server, url
        except httpx.HTTPError:
            time.sleep(0.1)
    server.kill()
    sys.exit("the server did not start")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def level(client: openai.OpenAI, name: str, clients: int, requests: int, max_tokens: int,
          urls: list[str]) -> dict:
    def one(i: int) -> tuple[float, int, bool]:
        start = time.perf_counter()
        try:
            reply = client.chat.completions.create(
                model=name, messages=messages(QUESTIONS[i % len(QUESTIONS)], urls[i % 8]),
                max_tokens=max_tokens)
            return time.perf_counter() - start, reply.usage.completion_tokens, True
        except openai.OpenAIError:
            return time.perf_counter() - start, 0, False

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one, range(requests)))
    seconds = time.perf_counter() - start
    latencies = sorted(r[0] for r in results)
    return {"clients": clients, "requests_per_s": round(requests / seconds, 1),
            "new_tokens_per_s": round(sum(r[1] for r in results) / seconds, 1),
            "p50_s": round(statistics.median(latencies), 3),
            "p99_s": round(latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 3),
            "errors": sum(not r[2] for r in results)}


def faults(url: str, name: str, total: int, answers: dict[tuple[str, int], str],
           urls: list[str]) -> dict:
    """total requests, a third malformed, sent by 8 clients in random order."""
    bad_bodies = [
        b"{not json", json.dumps({"model": name}).encode(),
        json.dumps({"model": name, "messages": [{"role": "user", "content": "hi"}]}).encode(),
        json.dumps({"model": "gpt-4", "messages": messages("hi", urls[0])}).encode(),
        json.dumps({"model": name, "messages": messages(
            "hi", "data:image/png;base64,@@@")}).encode(),
        json.dumps({"model": name, "messages": messages(
            "hi", "data:image/png;base64," + base64.b64encode(b"no image").decode())}).encode(),
        json.dumps({"model": name, "messages": messages("   ", urls[0])}).encode(),
        json.dumps({"model": name, "messages": messages("what " * 400, urls[0])}).encode(),
        json.dumps({"model": name, "messages": messages("hi", "https://x.org/a.png")}).encode(),
        json.dumps({"model": name, "n": 3, "messages": messages("hi", urls[0])}).encode(),
    ]
    rng = random.Random(0)
    jobs = [("bad", rng.choice(bad_bodies)) if i % 3 == 0 else
            ("good", (QUESTIONS[i % len(QUESTIONS)], i % 8)) for i in range(total)]
    rng.shuffle(jobs)
    http = httpx.Client(base_url=url, timeout=120)

    def send(job):
        kind, what = job
        if kind == "bad":
            response = http.post("/v1/chat/completions", content=what,
                                 headers={"content-type": "application/json"})
            return kind, response.status_code, None
        question, image = what
        response = http.post("/v1/chat/completions", json={
            "model": name, "messages": messages(question, urls[image])})
        content = response.json()["choices"][0]["message"]["content"] \
            if response.status_code == 200 else None
        return kind, response.status_code, content == answers[what]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(send, jobs))
    alive = http.get("/health").status_code == 200
    return {"requests": total, "malformed": sum(k == "bad" for k, _, _ in results),
            "status_5xx": sum(s >= 500 for _, s, _ in results),
            "bad_all_4xx": all(400 <= s < 500 for k, s, _ in results if k == "bad"),
            "good_all_correct": all(s == 200 and ok for k, s, ok in results if k == "good"),
            "alive": alive}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=None, help="a trained run (default: random weights)")
    parser.add_argument("--preset", default="default")
    parser.add_argument("--clients", type=counts, default=[1, 8, 32, 64])
    parser.add_argument("--requests", type=count, default=200, help="per level")
    parser.add_argument("--max-tokens", type=count, default=16)
    parser.add_argument("--max-batch", type=count, default=64)
    parser.add_argument("--fault-requests", type=count, default=1000)
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                        help="serve with the decode step compiled (seemore serve's default "
                             "where it works); --no-compile: eager")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(args.run) if args.run else Path(tmp) / "model"
        if not args.run:
            torch.manual_seed(0)
            build_model(get_preset(args.preset)).save_pretrained(run)
        model = load_folder(run)
        world = ShapesWorld(model.config.vision.image_size)
        images = [Image.fromarray(world.labelled("test", i).image) for i in range(8)]
        urls = [data_url(im) for im in images]
        answers = {(q, i): model.ask(images[i], q) for q in QUESTIONS for i in range(8)}
        start = time.perf_counter()
        server, url = start_server(run, args.max_batch, args.compile)
        name = run.resolve().name
        figures: dict = {"benchmark": "serve", "run": str(args.run or f"{args.preset} "
                         "(random weights)"), "max_tokens": args.max_tokens,
                         "max_batch": args.max_batch, "requests_per_level": args.requests,
                         "compile": args.compile,
                         "server_start_s": round(time.perf_counter() - start, 1)}
        print(f"server up in {figures['server_start_s']} s (compile {args.compile})")
        try:
            client = openai.OpenAI(base_url=url + "/v1", api_key="none", timeout=120)
            levels = []
            for clients in args.clients:
                result = level(client, name, clients, args.requests, args.max_tokens, urls)
                levels.append(result)
                print(f"{clients:>3} clients: {result['requests_per_s']:.1f} requests/s, "
                      f"{result['new_tokens_per_s']:.0f} new tokens/s, p50 "
                      f"{result['p50_s']:.3f} s, p99 {result['p99_s']:.3f} s, "
                      f"{result['errors']} errors")
            figures["levels"] = levels
            if len(levels) > 1:
                figures["speedup_over_one_client"] = {
                    str(r["clients"]): round(r["requests_per_s"] / levels[0]["requests_per_s"],
                                             2) for r in levels[1:]}
                print("requests/s over one client's:", figures["speedup_over_one_client"])
            fault = faults(url, name, args.fault_requests, answers, urls)
            figures["fault_run"] = fault
            print(f"fault run: {fault}")
            figures["server_peak_rss_mb"] = round(peak_rss_mb(server.pid))
            print(f"server peak RSS {figures['server_peak_rss_mb']} MB")
        finally:
            server.terminate()
            server.wait(timeout=30)
    emit({**figures, **machine()})


if __name__ == "__main__":
    run_main(main)
