"""The official openai client against `seemore serve`: a question about an image, the answer
streamed as it is written, then a follow-up in the same conversation.

    seemore serve runs/default                                  # in another terminal
    python examples/openai_client.py scene.png "what color is the circle?"

Any OpenAI-compatible client works the same way: point its base URL at the server.
"""

from __future__ import annotations

import argparse
import base64
import mimetypes
import sys
from pathlib import Path

from openai import APIConnectionError, OpenAI


def image_part(path: str) -> dict:
    """An image as the API's image_url part: a data: URL (the server fetches nothing)."""
    kind = mimetypes.guess_type(path)[0] or "image/png"
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return {"type": "image_url", "image_url": {"url": f"data:{kind};base64,{data}"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image")
    parser.add_argument("question")
    parser.add_argument("--follow-up", default="how many objects are there?")
    parser.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    args = parser.parse_args()

    client = OpenAI(base_url=args.base_url, api_key="not-needed")
    try:
        model = client.models.list().data[0].id
    except APIConnectionError:
        sys.exit(f"no server answers at {args.base_url}: start one with `seemore serve RUN`")
    messages = [{"role": "user", "content": [{"type": "text", "text": args.question},
                                             image_part(args.image)]}]
    print(f"{args.question} -> ", end="", flush=True)
    answer = ""
    for chunk in client.chat.completions.create(model=model, messages=messages, stream=True):
        text = chunk.choices[0].delta.content or ""
        answer += text
        print(text, end="", flush=True)
    print()
    messages += [{"role": "assistant", "content": answer},
                 {"role": "user", "content": args.follow_up}]
    reply = client.chat.completions.create(model=model, messages=messages)
    print(f"{args.follow_up} -> {reply.choices[0].message.content}  ({reply.usage})")


if __name__ == "__main__":
    main()
