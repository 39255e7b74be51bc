"""Continuous batching: one thread owns the model and decodes every running request in one
batched step; a new request joins between two steps (after its own prefill) and a finished
one leaves, freeing its slot of the cache (layers/slot_cache.py). With greedy decoding a
request gets the same tokens whatever else runs beside it (tested).

With compile, the decode step runs through torch.compile: one graph for any number of
rows and any number of cache slots read, built when the engine is made (warm()), so that
no request waits for a compile.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch

from seemore.generation import sample
from seemore.layers.slot_cache import SlotCache


@dataclass(eq=False)  # one request is equal only to itself
class Request:
    """Prompt ids (with <image> slots when image is given, a (3, H, W) tensor) and how to
    sample. tokens receives each new token id, then None when the request ends; reason
    then says why: "stop" (eos), "length" (max_new_tokens or the end of the context) or
    "cancelled"."""

    ids: list[int]
    image: torch.Tensor | None = None
    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float | None = None
    seed: int | None = None
    top_k: int | None = None
    tokens: queue.Queue = field(default_factory=queue.Queue)
    reason: str = ""
    cancelled: bool = False


@dataclass(eq=False)
class _Running:
    request: Request
    slot: int
    length: int  # tokens in its cache
    last: int  # the newest token, to feed next
    made: int = 0
    generator: torch.Generator | None = None


def _decode(decoder, last: torch.Tensor, position: torch.Tensor, mask: torch.Tensor
            ) -> torch.Tensor:
    """One batched decode step: logits (B, vocab) after the rows' newest tokens last (B, 1),
    each written into its cache slot at its position (B,); mask (B, 1, 1, W), additive,
    hides the unwritten ones of the W slots read. (generation._decode_step's twin, but one
    position tensor serves as both the RoPE positions and the cache index: given the (B, 1)
    view as an input of its own, the compiled step with a dynamic batch ran slower.)"""
    return decoder(decoder.embed(last), position[:, None], mask, position)[:, -1]


class Engine:
    """Decodes the model's requests in batches of up to max_batch, with a cache of max_len
    positions per slot (the model's context, at most). submit() may be called from any
    thread; close() stops the loop. compile: run the decode steps through torch.compile,
    compiled here, before the engine takes a request (warmed_s says how long it took)."""

    def __init__(self, model, max_batch: int = 32, max_len: int | None = None,
                 compile: bool = False):
        self.model, self.max_batch = model, max_batch
        decoder = model.decoder
        c = decoder.config
        self.max_len = min(max_len or c.max_seq_len, c.max_seq_len)
        self.dtype = decoder.embed.weight.dtype
        # one slot more than a step ever reads: a read of the whole cache would be a size
        # of its own to torch.compile, and a second graph
        self.caches = [SlotCache(max_batch, c.kv_heads, self.max_len + 1, c.dim // c.n_heads,
                                 self.dtype, model.device) for _ in decoder.blocks]
        # with one slot every step is a lone request's, which decodes eagerly (_run_step)
        self.compiled = torch.compile(_decode) if compile and max_batch > 1 else None
        self.warmed_s = 0.0
        self.waiting: queue.Queue[Request] = queue.Queue()
        self.calls: queue.Queue = queue.Queue()
        self.free = list(range(max_batch))
        self.running: list[_Running] = []
        self.steps = 0  # batched decode steps run (for tests and logs)
        self.closed = False
        # every computation, the compiling included, runs in this one thread (see _loop)
        self.started, self.start_error = threading.Event(), None
        self.thread = threading.Thread(target=self._loop, name="seemore-engine", daemon=True)
        self.thread.start()
        self.started.wait()
        if self.start_error is not None:
            self.thread.join()
            raise self.start_error

    def submit(self, request: Request) -> Request:
        if not request.ids:
            raise ValueError("the prompt is empty")
        if len(request.ids) >= self.max_len:
            raise ValueError(f"the prompt is {len(request.ids)} tokens; the cache holds "
                             f"{self.max_len}")
        self.waiting.put(request)
        return request

    def call(self, fn) -> Future:
        """Run fn() in the engine's thread between two decode steps (it may use the model
        as it likes: drawing sets up caches of its own); returns its Future."""
        future: Future = Future()
        self.calls.put((fn, future))
        self.waiting.put(Request([]))  # wakes an idle loop
        return future

    def close(self) -> None:
        self.closed = True
        self.waiting.put(Request([]))  # wakes the loop
        self.thread.join()

    def _attach(self, rows: list[int]) -> None:
        index = torch.tensor(rows, device=self.model.device)
        for block, cache in zip(self.model.decoder.blocks, self.caches, strict=True):
            cache.rows = index
            block.attn.cache = cache

    def _finish(self, run: _Running, reason: str) -> None:
        run.request.reason = reason
        run.request.tokens.put(None)
        self.free.append(run.slot)

    def _admit(self, requests: list[Request]) -> None:
        """Prefill new requests in one batch (all with an image or all without), each in
        its own slot, right-padded to the longest, and emit their first tokens."""
        model, device = self.model, self.model.device
        slots = [self.free.pop() for _ in requests]
        try:
            longest = max(len(r.ids) for r in requests)
            ids = torch.full((len(requests), longest), model.tokenizer.pad_id, device=device)
            for row, r in enumerate(requests):
                ids[row, : len(r.ids)] = torch.tensor(r.ids, device=device)
            images = (None if requests[0].image is None else
                      torch.stack([r.image for r in requests]).to(device))
            self._attach(slots)
            x = model.embed(ids, images)
            positions = torch.arange(longest, device=device).expand(len(requests), -1)
            ends = torch.tensor([len(r.ids) - 1 for r in requests], device=device)
            logits = model.decoder(x, positions, None, 0, last=ends)[:, -1]
        except Exception:
            self.free += slots
            raise
        for r, slot, row in zip(requests, slots, logits, strict=True):
            generator = (torch.Generator(device=device).manual_seed(r.seed)
                         if r.seed is not None else None)
            self._emit(_Running(r, slot, len(r.ids), 0, generator=generator), row)

    def _admit_all(self) -> None:
        """Admit the waiting requests that free slots allow: those with an image in one
        prefill, those without in another; a batch that fails is retried one by one, so
        that only its bad requests fail."""
        new: list[Request] = []
        while len(new) < len(self.free):
            try:
                request = self.waiting.get(block=not (new or self.running))
            except queue.Empty:
                break
            if self.closed:
                return
            if not request.ids:  # a wake-up: a call() waits, or close()
                break
            if request.cancelled:
                request.reason = "cancelled"
                request.tokens.put(None)
            else:
                new.append(request)
        for group in ([r for r in new if r.image is not None],
                      [r for r in new if r.image is None]):
            if not group:
                continue
            try:
                self._admit(group)
            except Exception as e:
                if len(group) == 1:
                    group[0].reason = f"error: {e}"
                    group[0].tokens.put(None)
                    continue
                for request in group:
                    try:
                        self._admit([request])
                    except Exception as e:  # one bad request must not stop the others
                        request.reason = f"error: {e}"
                        request.tokens.put(None)

    def _emit(self, run: _Running, logits: torch.Tensor) -> None:
        r = run.request
        token = int(sample(logits[None], r.temperature, r.top_k, r.top_p, run.generator)[0])
        if token == self.model.tokenizer.eos_id:
            return self._finish(run, "stop")
        r.tokens.put(token)
        run.made, run.last = run.made + 1, token
        if r.cancelled:
            return self._finish(run, "cancelled")
        if run.made >= r.max_new_tokens or run.length + 1 >= self.max_len:
            return self._finish(run, "length")
        if run not in self.running:
            self.running.append(run)

    def _run_step(self, slots: list[int], last: list[int], lengths: list[int]
                  ) -> torch.Tensor:
        """Logits (B, vocab) of a decode step of the rows in slots, whose newest tokens are
        last and whose caches hold lengths tokens each."""
        device = self.model.device
        self._attach(slots)
        window = max(lengths) + 1  # the slots a step reads: up to the longest row's newest
        position = torch.tensor(lengths, device=device)  # (B,)
        hidden = torch.arange(window, device=device) > position[:, None]  # (B, window)
        mask = torch.zeros(hidden.shape, dtype=self.dtype, device=device).masked_fill_(
            hidden, float("-inf"))[:, None, None]  # additive, as generate's
        last_ids = torch.tensor(last, device=device)[:, None]  # (B, 1)
        # compiled: one graph for any number of rows but 1 (which torch.compile would give a
        # graph of its own); a lone request decodes eagerly, which through the server was
        # no slower (there each token's trip through HTTP outweighs the step)
        if self.compiled is None or len(slots) == 1:
            return _decode(self.model.decoder, last_ids, position, mask)
        for tensor in (last_ids, position, mask, self.caches[0].rows):
            torch._dynamo.mark_dynamic(tensor, 0)
        torch._dynamo.mark_dynamic(mask, 3)
        return self.compiled(self.model.decoder, last_ids, position, mask)

    def _step(self) -> None:
        """One batched decode step of every running request."""
        runs = self.running
        self.running = []
        logits = self._run_step([run.slot for run in runs], [run.last for run in runs],
                                [run.length for run in runs])
        self.steps += 1
        for run, row in zip(runs, logits, strict=True):
            run.length += 1
            self._emit(run, row)

    def warm(self) -> None:
        """Compile the decode step, with the first two slots, free yet: the keys it writes
        are overwritten before any request's mask can show them (a slot's positions are
        written in order)."""
        start = time.perf_counter()
        self._run_step([0, 1], [0, 0], [2, 2])
        self.warmed_s = time.perf_counter() - start

    def _fail(self, runs: list[_Running], error: Exception) -> None:
        """End runs with the error (their callers report it); the engine goes on."""
        for run in runs:
            self._finish(run, f"error: {error}")

    @torch.inference_mode()
    def _loop(self) -> None:
        """Warm up, then admit and decode until closed. This thread does all the computing:
        a CPU's OpenMP runtime (libgomp) gives each thread that computes in parallel a pool
        of workers of its own, and with more workers than cores it stops letting them spin
        between two parallel regions, so that every small kernel waits for its workers to
        wake (README, "Serve and chat", measures it). `seemore serve` loads the model in a
        thread that ends, taking its pool along."""
        try:
            if self.compiled is not None:
                self.warm()
        except Exception as e:
            self.start_error = e
            return
        finally:
            self.started.set()
        while not self.closed:
            while not self.calls.empty():
                fn, future = self.calls.get()
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(fn())
                    except Exception as e:
                        future.set_exception(e)
            if self.free:
                self._admit_all()
            if self.running:
                runs = list(self.running)
                try:
                    self._step()
                except Exception as e:
                    self.running = []
                    self._fail(runs, e)
