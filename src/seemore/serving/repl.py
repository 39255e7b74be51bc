"""`seemore chat RUN IMAGE`: a conversation about one image in the terminal, each answer
printed as its tokens come. /image PATH switches the image (and starts over), /quit ends."""

from __future__ import annotations

from collections.abc import Callable

import torch

from seemore.data.images import load_image_tensor
from seemore.errors import UserError
from seemore.generation import check_sampling, generate
from seemore.serving.chat import conversation_ids

HELP = "ask about the image; /image PATH switches it, /quit ends"


def answer(model, pixels: torch.Tensor, turns: list[tuple[str, str]], write: Callable,
           max_new_tokens: int = 128, **sampling) -> str:
    """The model's next answer in the conversation, written as it grows."""
    tok = model.tokenizer
    ids = conversation_ids(tok, model.config.n_visual_tokens, turns)
    context = model.config.decoder.max_seq_len
    if len(ids) >= context:
        raise UserError(f"the conversation is {len(ids)} tokens, the model's context "
                        f"{context}: start over with /image")
    new: list[int] = []
    shown = ""
    for step in generate(model, [ids], pixels[None], max_new_tokens, **sampling):
        token = int(step[0])
        if token == tok.eos_id:
            break
        new.append(token)
        text = tok.decode(new)
        if not text.endswith("\ufffd"):  # a character still being spelled in bytes
            write(text[len(shown):])
            shown = text
    text = tok.decode(new)
    write(text[len(shown):] + "\n")
    return text


def chat(model, image, read: Callable[[str], str] = input, write: Callable = print,
         max_new_tokens: int = 128, **sampling) -> None:
    """The conversation loop: read a line, answer it, until /quit or the end of input."""
    # once, rather than an error for every question
    check_sampling(max_new_tokens, sampling.get("temperature", 0.0), sampling.get("top_k"),
                   sampling.get("top_p"), sampling.get("seed"))

    def out(text: str) -> None:
        write(text, end="", flush=True)

    def load(source):
        return load_image_tensor(source, model.config.vision.image_size,
                                 model.resize).to(model.device)

    pixels, turns = load(image), []
    write(HELP)
    while True:
        try:
            line = read("> ").strip()
        except EOFError:
            return
        if line in ("/quit", "/exit"):
            return
        if line.startswith("/image"):
            try:
                pixels, turns = load(line.removeprefix("/image").strip()), []
                write("new image; the conversation starts over")
            except UserError as e:
                write(f"error: {e}")
            continue
        if not line or line.startswith("/"):
            write(HELP)
            continue
        try:
            turns.append(("user", line))
            turns.append(("assistant", answer(model, pixels, turns, out, max_new_tokens,
                                              **sampling)))
        except UserError as e:
            turns = turns[:-1]
            write(f"error: {e}")
