"""The child process that runs a local GGUF model through llama.cpp (`python -m assistant.planning.local_llm_worker
MODEL.gguf`).

llama.cpp is native code: built for another processor it dies on an illegal instruction (SIGILL), and a bad model
file can crash it outright. Running it here, away from the planner, turns such a crash into an error the planner
can report (see `local_llm.py`, the other end of the pipe).

Protocol, one JSON object per line. The worker first answers `{"ready": MODEL}`, or `{"error": WHY}` and exits
when the model cannot be loaded. Then each request on stdin, `{"messages": [{"role", "content"}...],
"max_tokens": N, "stop": [...], "schema": {...}}`, gets `{"content": TEXT}` or `{"error": WHY}` on stdout. With a
JSON schema, decoding is constrained by the grammar llama.cpp derives from it, so the text is JSON of that shape
(unless `max_tokens` cuts it short). The worker exits when stdin closes, so it never outlives the process that
started it.
"""

from __future__ import annotations

import json
import os
import sys
from typing import IO, TypedDict


class ChatMessage(TypedDict):
    role: str  # "system", "user" or "assistant"
    content: str


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m assistant.planning.local_llm_worker MODEL.gguf", file=sys.stderr)
        return 2
    # The protocol gets the real stdout to itself: llama.cpp and Python libraries may print, and their output
    # must not be read as an answer, so everything else written to fd 1 goes to stderr.
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    try:
        model = _load(argv[0])
    except Exception as err:  # reported to the parent, which turns it into a plan note
        _send(replies, {"error": f"{type(err).__name__}: {err}"})
        return 1
    _send(replies, {"ready": argv[0]})
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            messages: list[ChatMessage] = request["messages"]
            completion = model.create_chat_completion(messages=messages, temperature=0.0,
                                                      max_tokens=int(request.get("max_tokens", 256)),
                                                      stop=request.get("stop") or None,
                                                      grammar=_grammar(request.get("schema")))
            _send(replies, {"content": completion["choices"][0]["message"]["content"] or ""})
        except Exception as err:  # one bad request is answered, the worker stays up for the next
            _send(replies, {"error": f"{type(err).__name__}: {err}"})
    return 0


def _load(path: str):  # -> llama_cpp.Llama, imported here only: the parent never loads the native library
    from llama_cpp import Llama

    return Llama(model_path=path, n_ctx=2048, seed=0, verbose=False)


def _grammar(schema: dict | None):  # -> llama_cpp.LlamaGrammar | None
    """The grammar for `schema`. Built here rather than through `response_format`, whose conversion quietly falls
    back to any JSON when the schema has a feature it does not support: a schema it cannot follow is an error."""
    if not schema:
        return None
    from llama_cpp import LlamaGrammar

    return LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)


def _send(stream: IO[str], message: dict[str, str]) -> None:
    stream.write(json.dumps(message) + "\n")
    stream.flush()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
