"""Sampling and the decode loop.

Prompts of different lengths are left-padded into one batch. Each row gets its own RoPE
positions (counting from its first real token) and a boolean mask hides the padding, so a
row of a batch decodes exactly as it would alone. With the KV cache (the default) the prompt
is run once (prefill) and each step runs only the newest token, attending over the slots
of the preallocated cache written so far, with a mask (compiled, their number is a dynamic
size, so that one graph serves every step); without it every step recomputes the whole
sequence, slower, with the same tokens.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterator

import torch

from seemore.errors import UserError


def sample(logits: torch.Tensor, temperature: float = 0.0, top_k: int | None = None,
           top_p: float | None = None, generator: torch.Generator | None = None
           ) -> torch.Tensor:
    """Next token ids (B,) from logits (B, vocab). temperature 0 means greedy."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # drop a token when the tokens before it already hold top_p of the mass
        drop = probs.cumsum(dim=-1) - probs > top_p
        drop = drop.scatter(-1, order, drop)  # back to vocabulary order
        logits = logits.masked_fill(drop, float("-inf"))
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def check_sampling(max_new_tokens: int, temperature: float, top_k: int | None,
                   top_p: float | None, seed: int | None = None) -> None:
    """Refuse settings that would otherwise reach the tensors: a negative temperature
    samples the unlikeliest tokens, top_k=0 or max_new_tokens=-1 fails on a shape, a
    temperature of "0.5" on a comparison deep inside."""
    whole, real = numbers.Integral, numbers.Real
    for name, value, kind, optional in (("max_new_tokens", max_new_tokens, whole, False),
                                        ("temperature", temperature, real, False),
                                        ("top_k", top_k, whole, True),
                                        ("top_p", top_p, real, True),
                                        ("seed", seed, whole, True)):
        if not isinstance(value, kind) and not (optional and value is None):
            what = "a whole number" if kind is whole else "a number"
            raise UserError(f"{name} must be {what}{' or None' if optional else ''}, "
                            f"got {value!r}")
    if max_new_tokens < 1:
        raise UserError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if not temperature >= 0:  # NaN too
        raise UserError(f"temperature must be 0 (greedy) or more, got {temperature}")
    if top_k is not None and top_k < 1:
        raise UserError(f"top_k must be at least 1, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise UserError(f"top_p must be above 0 and at most 1, got {top_p}")


def _attention_mask(valid: torch.Tensor, n_new: int) -> torch.Tensor:
    """Mask (B, 1, n_new, S) for the last n_new of S positions: causal, hiding padded keys.
    A padded query still sees itself, so no row of the softmax is empty (that would be NaN,
    and NaN times a zero weight is still NaN in later layers)."""
    S = valid.shape[1]
    q_pos = torch.arange(S - n_new, S, device=valid.device)[:, None]  # (n_new, 1)
    k_pos = torch.arange(S, device=valid.device)[None, :]  # (1, S)
    causal = k_pos <= q_pos  # (n_new, S)
    return (causal & (valid[:, None, :] | (k_pos == q_pos))).unsqueeze(1)


def _decode_step(decoder, ids: torch.Tensor, extra: torch.Tensor | None,
                 positions: torch.Tensor, keys: torch.Tensor, pos: torch.Tensor
                 ) -> torch.Tensor:
    """One cached step: logits (B, vocab) after the newest tokens ids (B, 1). They are
    embedded here, so that a compiled step does it inside its graph
    (README, "Where the time goes"), plus extra when given (drawing: the step's code
    position embedding), and written into the cache at index pos (a 1-element tensor, so
    that a compiled step serves every slot). keys (B, W): the additive mask of the first W
    cache slots, the ones the step reads (those written, its own included); compiled, W is
    a dynamic size, so that one graph serves every W."""
    x = decoder.embed(ids)
    if extra is not None:
        x = x + extra
    return decoder(x, positions, keys[:, None, None], pos)[:, -1]


CHUNK = 4  # greedy steps a compiled call decodes (README, "Where the time goes")


def _decode_chunk(decoder, ids: torch.Tensor, positions: torch.Tensor, keys: torch.Tensor,
                  pos: torch.Tensor) -> torch.Tensor:
    """CHUNK greedy cached steps in one call -> their tokens (B, CHUNK). ids (B, 1): the
    newest tokens, at positions (B, 1), written to cache slot pos (a 1-element tensor);
    each step then feeds its argmax to the next one. keys (B, W): the additive mask of the
    first W cache slots, the ones every step reads (W = pos + CHUNK: up to the last step's
    own slot), where each step reveals its own slot. One compiled call for several steps
    pays dynamo's guards, the gathering of the weights and the call itself once for all of
    them."""
    tokens = []
    for j in range(CHUNK):
        keys[:, pos + j] = 0
        logits = _decode_step(decoder, ids, None, positions + j, keys, pos + j)
        ids = logits.argmax(-1, keepdim=True)
        tokens.append(ids)
    return torch.cat(tokens, 1)


def compiled_chunk(decoder):
    """_decode_chunk compiled as compiled_step is (one graph per batch size), kept on the
    decoder."""
    if getattr(decoder, "_compiled_chunk", None) is None:
        decoder._compiled_chunk = torch.compile(_decode_chunk, dynamic=False,
                                                options={"cpp_wrapper": True})
    return decoder._compiled_chunk


def compiled_step(decoder):
    """The decode step compiled by torch.compile (inductor), kept on the decoder so that
    later calls reuse it. A one-token step of a small model is mostly per-kernel overhead:
    inductor fuses the elementwise kernels, and its C++ wrapper calls the rest without going
    through Python (about 1.4 ms -> 0.7 ms per step for seemore-classic on 2 CPU cores).
    Shapes are static but the number of cache slots read, which generate marks dynamic:
    kernels for one batch size ran faster than ones for any batch size (4319 against 3532
    tokens/s at batch 16); past torch's limit of 8 graphs a new batch size falls back to
    the eager step."""
    if getattr(decoder, "_compiled_step", None) is None:
        decoder._compiled_step = torch.compile(_decode_step, dynamic=False,
                                               options={"cpp_wrapper": True})
    return decoder._compiled_step


@torch.inference_mode()
def generate(model, prompts: list[list[int]], images: torch.Tensor | None,
             max_new_tokens: int, temperature: float = 0.0, top_k: int | None = None,
             top_p: float | None = None, use_cache: bool = True, seed: int | None = None,
             stop_at_eos: bool = True, compile: bool = False, vocab: range | None = None,
             uncond: list[list[int]] | None = None, guidance: float = 1.0,
             step_embeddings: torch.Tensor | None = None) -> Iterator[torch.Tensor]:
    """Yield the next token of every row (B,) per step, until every row has produced <eos>
    or max_new_tokens is reached. Rows that are done yield <pad>. stop_at_eos=False always
    runs max_new_tokens steps (for benchmarks and images). compile=True runs each cached
    step through torch.compile: the first call at a batch size compiles (about a minute on
    a cold inductor cache), later calls decode several times faster; greedy steps then run
    CHUNK a call. vocab: sample only these token ids. step_embeddings (max_new_tokens, D):
    added to the embedding of the token sampled at each step (for drawing: where in the
    image each code goes).

    Classifier-free guidance: uncond holds one more prompt per row, without the condition
    (for drawing, without the caption). Both run side by side in one batch, each step
    samples from uncond + guidance * (cond - uncond) logits, and the token goes to both."""
    if uncond is not None and images is not None:
        raise ValueError("classifier-free guidance is for prompts without images")
    check_sampling(max_new_tokens, temperature, top_k, top_p, seed)
    n_rows = len(prompts)
    prompts = prompts + (uncond or [])
    tok, context = model.tokenizer, model.config.decoder.max_seq_len
    longest = max(len(p) for p in prompts)
    if longest > context:
        raise UserError(f"the prompt is {longest} tokens long but the model's context is "
                        f"{context} tokens")
    max_new_tokens = min(max_new_tokens, context - longest)
    device = model.device
    generator = (torch.Generator(device=device).manual_seed(int(seed)) if seed is not None
                 else None)

    B = len(prompts)
    ids = torch.full((B, longest), tok.pad_id, dtype=torch.long, device=device)
    for row, p in enumerate(prompts):
        ids[row, longest - len(p):] = torch.tensor(p, device=device)
    valid = ids != tok.pad_id  # (B, T)
    positions = (valid.long().cumsum(-1) - 1).clamp(min=0)  # (B, T)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    x = model.embed(ids, images)  # (B, T, D)

    decoder = model.decoder
    padded = not bool(valid.all())  # without padding, plain causal attention needs no mask
    mask = _attention_mask(valid, longest) if padded else None
    step, keys = _decode_step, valid  # with the cache: the step and its cache slots, below
    # one cache length per model when compiling, so that the compiled step is reused
    length = context if compile else longest + max_new_tokens
    if use_cache:
        step = compiled_step(decoder) if compile else _decode_step
        # under autocast the keys and values come out of their projection in its dtype
        autocast = torch.is_autocast_enabled(device.type)
        decoder.setup_cache(B, length, torch.get_autocast_dtype(device.type) if autocast
                            else x.dtype)
        # the cache slots a row sees, as a mask added to the attention scores (0 or -inf),
        # made once a step for every layer: a compiled step's attention converting a
        # boolean mask in each layer took 1.4x as long at 240 keys
        keys = torch.full((B, length), float("-inf"), dtype=x.dtype, device=device)
        keys[:, :longest].masked_fill_(valid, 0)
    # compiled greedy decoding without guidance, vocabulary or step embeddings runs CHUNK
    # steps a call; their tokens wait in pending
    chunked = (use_cache and compile and temperature == 0 and uncond is None
               and vocab is None and step_embeddings is None)
    pending: list[torch.Tensor] = []
    mark_dynamic = None
    if compile:  # torch._dynamo takes 0.9 s to import; looked up through it at every step,
        # maybe_mark_dynamic cost 26 us a call, bound here 1 us
        from torch._dynamo import maybe_mark_dynamic as mark_dynamic
    try:
        logits = decoder(x, positions, mask, last=True)[:, -1]
        for i in range(max_new_tokens):
            if pending:
                nxt = pending.pop(0)
            else:
                if uncond is not None:
                    cond_logits, uncond_logits = logits.float().chunk(2)
                    logits = uncond_logits + guidance * (cond_logits - uncond_logits)
                if vocab is not None:
                    allowed = torch.full_like(logits, float("-inf"))
                    allowed[:, vocab.start:vocab.stop] = 0
                    logits = logits + allowed
                nxt = sample(logits, temperature, top_k, top_p, generator)
                if uncond is not None:
                    nxt = nxt.repeat(2)
            nxt = nxt.masked_fill(done, tok.pad_id)
            yield nxt[:n_rows]
            if stop_at_eos:
                done |= nxt == tok.eos_id
            if done.all() or i == max_new_tokens - 1:
                return
            extra = None if step_embeddings is None else step_embeddings[i]
            position = positions[:, -1:] + 1  # (B, 1)
            if use_cache:
                positions = position
                if pending:  # a chunk has already fed this token to the next step
                    continue
                pos = torch.tensor([longest + i], device=device)
                chunk = chunked and i + CHUNK < max_new_tokens
                # the slots the step reads: those written so far and its own (a chunk's:
                # up to its last step's); compiled, their number is a dynamic size
                read = keys[:, :longest + i + (CHUNK if chunk else 1)]
                if mark_dynamic is not None:
                    mark_dynamic(read, 1)
                if chunk:
                    tokens = compiled_chunk(decoder)(decoder, nxt[:, None], position, read, pos)
                    pending = list(tokens.unbind(1))
                    continue
                read[:, -1] = 0
                logits = step(decoder, nxt[:, None], extra, position, read, pos)
            else:
                x_new = decoder.embed(nxt[:, None])  # (B, 1, D)
                if extra is not None:
                    x_new = x_new + extra
                positions = torch.cat([positions, position], dim=1)
                valid = torch.cat([valid, torch.ones(B, 1, dtype=torch.bool, device=device)], 1)
                x = torch.cat([x, x_new], dim=1)
                mask = _attention_mask(valid, x.shape[1]) if padded else None
                logits = decoder(x, positions, mask, last=True)[:, -1]
    finally:
        decoder.clear_cache()


def generate_text(model, prompts: list[list[int]], images: torch.Tensor | None,
                  max_new_tokens: int, **sampling) -> list[str]:
    """Decoded completions of a batch of prompts (everything before <eos>)."""
    rows: list[list[int]] = [[] for _ in prompts]
    for step in generate(model, prompts, images, max_new_tokens, **sampling):
        for row, t in enumerate(step.tolist()):
            rows[row].append(t)
    eos = model.tokenizer.eos_id
    return [model.tokenizer.decode(r[: r.index(eos)] if eos in r else r) for r in rows]
