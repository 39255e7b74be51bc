import re

import numpy as np
import pytest
import torch
from conftest import lively
from torch._dynamo.utils import counters

from seemore.config import apply_overrides, get_preset
from seemore.errors import UserError
from seemore.generation import generate, sample
from seemore.objectives import build_model

QUESTIONS = ["what color is the circle?", "how many objects are there?", "is there a red square?",
             "where is the large blue triangle?"]


def _greedy(model, questions, images, use_cache, n=24, compile=False):
    prompts = [model.prompt_ids(q) for q in questions]
    steps = list(generate(model, prompts, images, n, use_cache=use_cache, compile=compile))
    return torch.stack(steps, dim=1)  # (B, steps)


@pytest.fixture
def lively_model():
    return lively(build_model(get_preset("tiny")).eval())


def _varied(tokens: torch.Tensor) -> bool:
    """Whether the rows wrote many different tokens and no two rows the same: what makes
    two decoding paths agreeing mean something."""
    rows = [tuple(row.tolist()) for row in tokens]
    return len(set(tokens.flatten().tolist())) >= 8 and len(set(rows)) == len(rows)


@pytest.mark.parametrize("overrides", [[], ["model.decoder.n_kv_heads=1"],
                                       ["model.projector.tokens=cls"]])
def test_cached_greedy_equals_recomputing_the_whole_sequence(overrides):
    model = lively(build_model(apply_overrides(get_preset("tiny"), overrides)).eval())
    images = torch.randn(4, 3, 32, 32)
    cached = _greedy(model, QUESTIONS, images, use_cache=True)
    uncached = _greedy(model, QUESTIONS, images, use_cache=False)
    assert cached.shape[1] > 5 and _varied(cached)
    assert torch.equal(cached, uncached)


def test_each_row_of_a_batch_equals_the_prompt_generated_alone(lively_model):
    images = torch.randn(4, 3, 32, 32)
    batched = _greedy(lively_model, QUESTIONS, images, use_cache=True)
    assert _varied(batched)
    for row, question in enumerate(QUESTIONS):
        alone = _greedy(lively_model, [question], images[row:row + 1], use_cache=True)[0]
        n = alone.shape[0]
        assert torch.equal(batched[row, :n], alone)


def test_generation_under_autocast_keeps_its_cache_in_the_autocast_dtype(lively_model):
    """Keys and values come out of their projection in bf16 under autocast: the cache
    holds them so, and cached decoding still equals recomputing the whole sequence."""
    images = torch.randn(4, 3, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cached = _greedy(lively_model, QUESTIONS, images, use_cache=True)
        uncached = _greedy(lively_model, QUESTIONS, images, use_cache=False)
    assert _varied(cached)
    assert torch.equal(cached, uncached)


def test_compiled_decode_step_gives_the_same_tokens(lively_model):
    """Prompts of about 50 tokens, 24 new ones: five four-step chunks, then three single
    steps, each reading more of the cache than the one before."""
    images = torch.randn(4, 3, 32, 32)
    eager = _greedy(lively_model, QUESTIONS, images, use_cache=True)
    assert _varied(eager)
    graphs = counters["stats"]["unique_graphs"]
    for _ in range(2):  # the second call reuses the compiled step
        assert torch.equal(_greedy(lively_model, QUESTIONS, images, True, compile=True), eager)
    # one graph for the chunks and one for the single steps, whatever the number of slots
    # they read
    assert counters["stats"]["unique_graphs"] - graphs == 2
    alone = _greedy(lively_model, QUESTIONS[:1], images[:1], use_cache=True)
    assert torch.equal(_greedy(lively_model, QUESTIONS[:1], images[:1], True, compile=True),
                       alone)


def test_compiled_guided_steps_give_the_same_tokens(lively_model):
    """Drawing's path: guidance (a second batch of prompts), a vocabulary and an embedding
    added at each step, one step a compiled call, each reading one more cache slot."""
    tok = lively_model.tokenizer
    prompts = [[tok.bos_id, *tok.encode(q)[:n]] for q, n in zip(QUESTIONS, (9, 14, 6, 11),
                                                                  strict=True)]
    uncond = [[tok.bos_id]] * len(prompts)
    extra = torch.randn(24, lively_model.config.decoder.dim)

    def tokens(compile):
        steps = generate(lively_model, prompts, None, 24, stop_at_eos=False, compile=compile,
                         vocab=range(10, len(tok)), uncond=uncond, guidance=2.0,
                         step_embeddings=extra)
        return torch.stack(list(steps), dim=1)

    eager = tokens(False)
    assert _varied(eager) and int(eager.min()) >= 10
    assert torch.equal(tokens(True), eager)


def test_sample_greedy_top_k_and_top_p():
    logits = torch.tensor([[1.0, 3.0, 2.0, -1.0]])
    assert sample(logits).item() == 1
    g = torch.Generator().manual_seed(0)
    draws = {sample(logits, 1.0, top_k=2, generator=g).item() for _ in range(200)}
    assert draws == {1, 2}
    # probabilities ~ [0.09, 0.66, 0.24, 0.01]: top_p 0.7 keeps the two likeliest
    draws = {sample(logits, 1.0, top_p=0.7, generator=g).item() for _ in range(200)}
    assert draws == {1, 2}
    draws = {sample(logits, 1.0, top_p=0.5, generator=g).item() for _ in range(50)}
    assert draws == {1}


def test_generation_stops_at_eos_and_respects_max_new_tokens(tiny_model):
    images = torch.randn(1, 3, 32, 32)
    steps = _greedy(tiny_model, QUESTIONS[:1], images, use_cache=True, n=7)
    assert steps.shape[1] == 7  # the untrained model writes no <eos> this soon
    eos = tiny_model.tokenizer.eos_id

    def eos_first(module, inputs, logits):  # make <eos> the likeliest token everywhere
        return logits.index_add(-1, torch.tensor([eos]), torch.full_like(logits[..., :1], 1e4))

    hook = tiny_model.decoder.lm_head.register_forward_hook(eos_first)
    try:
        steps = _greedy(tiny_model, QUESTIONS[:1], images, use_cache=True, n=7)
    finally:
        hook.remove()
    assert steps.tolist() == [[eos]]


def test_prompt_longer_than_the_context_is_rejected_with_both_lengths(tiny_model):
    context = tiny_model.config.decoder.max_seq_len
    prompt = tiny_model.prompt_ids("a" * (context + 10))
    with pytest.raises(UserError, match=rf"{len(prompt)} tokens long .* context is {context}"):
        next(generate(tiny_model, [prompt], torch.randn(1, 3, 32, 32), 5))


@pytest.mark.parametrize("sampling, message", [
    ({"max_new_tokens": 0}, "max_new_tokens must be at least 1, got 0"),
    ({"max_new_tokens": -1}, "max_new_tokens must be at least 1, got -1"),
    ({"temperature": -1.0}, "temperature must be 0 (greedy) or more, got -1.0"),
    ({"temperature": float("nan")}, "temperature must be 0 (greedy) or more, got nan"),
    ({"temperature": 1.0, "top_k": 0}, "top_k must be at least 1, got 0"),
    ({"temperature": 1.0, "top_p": 2.0}, "top_p must be above 0 and at most 1, got 2.0"),
    ({"temperature": 1.0, "top_p": 0.0}, "top_p must be above 0 and at most 1, got 0.0"),
    # these failed deep inside, on a comparison or in torch.Generator.manual_seed
    ({"temperature": "0.5"}, "temperature must be a number, got '0.5'"),
    ({"temperature": 1.0, "top_k": 2.5}, "top_k must be a whole number or None, got 2.5"),
    ({"temperature": 1.0, "seed": "a"}, "seed must be a whole number or None, got 'a'"),
    ({"max_new_tokens": None}, "max_new_tokens must be a whole number, got None"),
])
def test_bad_sampling_settings_are_refused_by_name(tiny_model, sampling, message):
    """Through the Python API these reached the tensors: a negative temperature sampled
    the unlikeliest tokens (garbage, silently), top_k=0 and max_new_tokens=-1 stopped with
    a shape error."""
    sampling = {"max_new_tokens": 5, **sampling}
    with pytest.raises(UserError, match=re.escape(message)):
        tiny_model.ask(torch.rand(3, 32, 32).numpy().transpose(1, 2, 0), "what color?",
                       **sampling)


def test_a_caption_of_no_tokens_is_refused_not_defaulted(tiny_model):
    with pytest.raises(UserError, match="max_new_tokens must be at least 1, got 0"):
        tiny_model.caption(torch.rand(32, 32, 3).numpy(), max_new_tokens=0)


def test_a_question_that_is_not_text_is_refused(tiny_model):
    with pytest.raises(UserError, match="the question must be text, got int"):
        tiny_model.ask(torch.rand(32, 32, 3).numpy(), 5)


def test_numpy_numbers_are_sampling_settings_too(tiny_model):
    image = torch.rand(32, 32, 3).numpy()
    assert tiny_model.ask(image, "what color?", max_new_tokens=np.int64(3),
                          temperature=np.float32(0.5), top_k=np.int64(2), seed=np.int64(0))


def test_ask_batch_refuses_one_question_for_a_list(tiny_model):
    """A question string used to count as one question per character."""
    image = torch.rand(32, 32, 3).numpy()
    with pytest.raises(UserError, match="ask_batch takes a list of questions, one per image; "
                                        r"got a str \(ask takes one\)"):
        tiny_model.ask_batch([image], "what color?")


def test_ask_batch_pairs_images_with_questions(tiny_model):
    image = torch.rand(32, 32, 3).numpy()
    with pytest.raises(UserError, match="one question per image: 1 images and 2 questions"):
        tiny_model.ask_batch([image], ["what color?", "what shape?"])
    assert tiny_model.ask_batch([], []) == []
