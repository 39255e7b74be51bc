"""Continuous batching (serving/engine.py): requests that join and leave between decode
steps get the tokens they would get alone, and share the steps."""

import threading

import pytest
import torch
from conftest import lively
from torch._dynamo.utils import counters

from seemore.config import apply_overrides, get_preset
from seemore.generation import generate
from seemore.objectives import build_model
from seemore.serving.engine import Engine, Request

QUESTIONS = ["what color is the circle?", "how many objects are there?",
             "where is the square?", "describe the image.", "is there a red triangle?"]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = apply_overrides(get_preset("tiny"), ["model.decoder.n_kv_heads=1"])
    return lively(build_model(config).eval())


def drain(request: Request) -> list[int]:
    tokens = []
    while (token := request.tokens.get(timeout=60)) is not None:
        tokens.append(token)
    return tokens


def alone(model, ids, image, n):
    tokens = []
    for step in generate(model, [ids], image[None], n):
        if int(step[0]) == model.tokenizer.eos_id:
            break
        tokens.append(int(step[0]))
    return tokens


@pytest.mark.parametrize("compile", [False, True])
def test_joining_and_leaving_requests_get_the_tokens_they_get_alone(model, compile):
    torch.manual_seed(1)
    images = torch.rand(len(QUESTIONS), 3, 32, 32)
    lengths = [40, 7, 25, 60, 3]
    prompts = [model.prompt_ids(q) for q in QUESTIONS]
    expected = [alone(model, p, im, n) for p, im, n in zip(prompts, images, lengths,
                                                          strict=True)]
    assert all(len(set(tokens)) >= min(3, n) for tokens, n in zip(expected, lengths,
                                                                  strict=True))
    engine = Engine(model, max_batch=3, compile=compile)
    graphs, compiled_steps = counters["stats"]["unique_graphs"], []
    if compile:
        step = engine.compiled
        engine.compiled = lambda *a: compiled_steps.append(1) or step(*a)
    try:
        first = engine.submit(Request(prompts[0], images[0], lengths[0]))
        assert first.tokens.get(timeout=60) is not None  # running before the others join
        requests = [first] + [engine.submit(Request(p, im, n)) for p, im, n in
                              zip(prompts[1:], images[1:], lengths[1:], strict=True)]
        got = [[expected[0][0]] + drain(first)] + [drain(r) for r in requests[1:]]
    finally:
        engine.close()
    assert got == expected
    assert all(r.reason in ("stop", "length") for r in requests)
    # five requests, at most three at a time, shared the steps
    assert engine.steps < sum(map(len, expected)) - len(expected)
    # compiled: one graph, made before the first request, none after
    assert (engine.warmed_s > 0) == compile
    assert counters["stats"]["unique_graphs"] == graphs
    assert (len(compiled_steps) > 10) == compile  # the steps of more than one request


def test_concurrent_submitters_and_a_bad_request(model):
    engine = Engine(model, max_batch=4)
    image = torch.rand(3, 32, 32)
    results = {}

    def client(i):
        request = engine.submit(Request(model.prompt_ids(QUESTIONS[i % 5]), image, 10,
                                        temperature=0.8, seed=i))
        results[i] = (drain(request), request.reason)

    try:
        bad = engine.submit(Request(model.prompt_ids("what?")[:5], image, 5))  # too few slots
        threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert drain(bad) == [] and bad.reason.startswith("error: every row needs")
        assert len(results) == 8 and all(reason in ("stop", "length")
                                         for _, reason in results.values())
        with pytest.raises(ValueError, match="the cache holds"):
            engine.submit(Request([1] * 1000))
    finally:
        engine.close()
