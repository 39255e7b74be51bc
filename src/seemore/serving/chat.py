"""An OpenAI chat-completions request as seemore's prompt: its messages, their images and its
sampling settings, checked. Every problem is an APIError with the HTTP status and the
message a client sees (OpenAI's error object), never an exception from deep inside.

A conversation about one image is the format the model trained on
(prompt.conversation_sequence): <bos>, the visual tokens, then each user turn and
"\\n", each assistant turn and <eos>; the prompt ends after the last user turn's "\\n".
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from pathlib import Path

import torch

from seemore.data.images import load_image_tensor
from seemore.errors import UserError
from seemore.prompt import question_ids
from seemore.tokenizer import Tokenizer


class APIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.kind = status, message, param, kind

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param,
                          "code": None}}


@dataclass
class ChatPrompt:
    ids: list[int]
    image: torch.Tensor | None
    max_tokens: int
    temperature: float
    top_p: float | None
    seed: int | None
    stop: list[str]
    stream: bool
    include_usage: bool = False  # stream_options: a last chunk with the usage
    top_k: int | None = None  # not OpenAI's; vLLM's and seemore's own sampling have it


# OpenAI parameters that would change the answer and that this server does not implement,
# with the values that leave them off: a request setting one is refused rather than
# answered as if it had not (max_completion_tokens and stop are implemented)
UNSUPPORTED = {
    "logprobs": (None, False), "top_logprobs": (None, 0), "logit_bias": (None, {}),
    "tools": (None, []), "tool_choice": (None, "none", "auto"), "functions": (None, []),
    "response_format": (None, {"type": "text"}),
    "frequency_penalty": (None, 0, 0.0), "presence_penalty": (None, 0, 0.0),
}


def _number(body: dict, key: str, kind: type, default, low: float, high: float):
    value = body.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            kind is int and not isinstance(value, int)) or not low <= value <= high:
        raise APIError(400, f"{key} must be a{'n integer' if kind is int else ' number'} "
                            f"from {low} to {high}, got {value!r}", key)
    return kind(value)


def _image_bytes(url: str, allow_dir: Path | None, max_bytes: int) -> tuple[bytes, str]:
    """The bytes of an image_url: a data: URL, or a path under allow_dir."""
    if url.startswith("data:"):
        header, sep, data = url.partition(",")
        if not sep or ";base64" not in header:
            raise APIError(400, "an image data: URL must be base64 "
                                "(data:image/png;base64,...)", "messages")
        if len(data) * 3 // 4 > max_bytes:
            raise APIError(413, f"the image is over the server's limit of {max_bytes:,} "
                                "bytes", "messages")
        try:
            return base64.b64decode(data, validate=True), "the data: URL's image"
        except (binascii.Error, ValueError):
            raise APIError(400, "the image data: URL is not valid base64", "messages") from None
    if url.startswith(("http://", "https://")):
        raise APIError(400, "image URLs are not fetched by this server; send the image as a "
                            "data: URL (base64)", "messages")
    if allow_dir is None:
        raise APIError(400, "local image paths are refused (start the server with "
                            "--allow-local-files DIR to allow paths under DIR)", "messages")
    path = Path(url.removeprefix("file://")).resolve()
    if not path.is_relative_to(allow_dir):
        raise APIError(403, f"{url}: outside the allowed folder", "messages")
    if not path.is_file():
        raise APIError(400, f"{url}: no such file", "messages")
    if path.stat().st_size > max_bytes:
        raise APIError(413, f"{url}: over the server's limit of {max_bytes:,} bytes",
                       "messages")
    return path.read_bytes(), url


def _content(message: dict, i: int, allow_dir: Path | None, max_bytes: int
             ) -> tuple[str, bytes | None, str]:
    """A message's text, and the bytes of its image (None without one) and their name."""
    content = message.get("content")
    if isinstance(content, str):
        return content, None, ""
    if not isinstance(content, list):
        raise APIError(400, f"messages[{i}].content must be a string or a list of parts",
                       "messages")
    texts, image, name = [], None, ""
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image_url":
            url = part.get("image_url")
            url = url.get("url") if isinstance(url, dict) else url
            if not isinstance(url, str):
                raise APIError(400, f"messages[{i}]: an image_url part needs a url",
                               "messages")
            if image is not None:
                raise APIError(400, "one image per conversation: this model sees one",
                               "messages")
            image, name = _image_bytes(url, allow_dir, max_bytes)
        else:
            raise APIError(400, f"messages[{i}]: content parts are text or image_url, got "
                                f"{kind!r}", "messages")
    return " ".join(texts), image, name


def conversation_ids(tokenizer: Tokenizer, n_visual: int, turns: list[tuple[str, str]]
                     ) -> list[int]:
    """The prompt of a conversation about one image: turns are (role, text), "user" or
    "assistant", the last a user's; the model writes the next answer."""
    ids = [tokenizer.bos_id] + [tokenizer.image_id] * n_visual
    for role, text in turns:
        ids += (question_ids(tokenizer, text) if role == "user"
                else tokenizer.encode(text, what="answer") + [tokenizer.eos_id])
    return ids


def parse_chat(body: object, model, answers: bool, allow_dir: Path | None = None,
               max_image_bytes: int = 20 * 2**20) -> ChatPrompt:
    """The prompt of a chat-completions body for model. answers: whether it is a VLM that
    answers about images (else a language model that continues text)."""
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(
            isinstance(m, dict) for m in messages):
        raise APIError(400, "messages must be a non-empty list of objects", "messages")
    if body.get("n", 1) != 1:
        raise APIError(400, "n must be 1", "n")
    for key, off in UNSUPPORTED.items():
        if body.get(key) not in off:
            raise APIError(400, f"{key} is not supported by this server", key)
    context = model.config.decoder.max_seq_len
    limits = {key: _number(body, key, int, None, 1, context)
              for key in ("max_tokens", "max_completion_tokens")}
    if None not in limits.values() and len(set(limits.values())) > 1:
        raise APIError(400, "max_tokens and max_completion_tokens differ; give one",
                       "max_completion_tokens")
    settings = dict(
        max_tokens=limits["max_completion_tokens"] or limits["max_tokens"] or 64,
        temperature=_number(body, "temperature", float, 0.0, 0, 2),
        top_p=_number(body, "top_p", float, None, 0, 1),
        seed=_number(body, "seed", int, None, 0, 2**63 - 1),
        top_k=_number(body, "top_k", int, None, 1, 2**31 - 1))
    stop = body.get("stop") or []
    stop = [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
        raise APIError(400, "stop must be a string or a list of non-empty strings", "stop")
    turns, image, name = [], None, ""
    for i, message in enumerate(messages):
        role = message.get("role")
        if role not in ("system", "user", "assistant"):
            raise APIError(400, f"messages[{i}].role must be system, user or assistant, got "
                                f"{role!r}", "messages")
        text, picture, where = _content(message, i, allow_dir, max_image_bytes)
        if picture is not None:
            if image is not None:
                raise APIError(400, "one image per conversation: this model sees one",
                               "messages")
            image, name = picture, where
        if role != "system":
            turns.append((role, text))
    if not turns or turns[-1][0] != "user" or not turns[-1][1].strip():
        raise APIError(400, "the last message must be a user message with text", "messages")
    tok = model.tokenizer
    try:
        if not answers:
            if image is not None:
                raise APIError(400, "this is a language model: it reads no images",
                               "messages")
            ids = [tok.bos_id] + tok.encode(" ".join(t for _, t in turns), what="prompt")
            pixels = None
        else:
            if image is None:
                raise APIError(400, "this model answers about an image: give one as an "
                                    "image_url part", "messages")
            pixels = load_image_tensor(image, model.config.vision.image_size, model.resize,
                                       name)
            ids = conversation_ids(tok, model.config.n_visual_tokens, turns)
    except UserError as e:
        raise APIError(400, str(e), "messages") from None
    if len(ids) >= context:
        raise APIError(400, f"the prompt is {len(ids)} tokens; the model's context is "
                            f"{context}", "messages")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise APIError(400, "stream_options must be an object", "stream_options")
    return ChatPrompt(ids, pixels, stop=stop, stream=bool(body.get("stream")),
                      include_usage=bool(options.get("include_usage")), **settings)
