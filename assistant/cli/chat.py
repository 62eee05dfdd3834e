"""`diffplugin chat`: the terminal assistant (Textual). Heavy imports wait until the app has drawn its first frame."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from assistant.cli.common import CliError, JsonOption, RegistryOption, emit, reported
from assistant.cli.edit import LLMOption, LLMTimeoutOption
from assistant.cli.help import CliApp

if TYPE_CHECKING:
    from assistant.chat.session import ChatSession
    from assistant.chat.store import Conversation, ConversationStore


class Preview(StrEnum):
    """`chat --preview`: how photos are drawn in the terminal."""

    AUTO = "auto"
    HALFCELL = "halfcell"
    UNICODE = "unicode"


def chat_command(
    photo: Annotated[Path | None, typer.Argument(help="The photo to edit (never modified; versions are copies).")]
        = None,
    resume: Annotated[str | None, typer.Option(help="Resume a conversation by id (or its first characters).")]
        = None,
    last: Annotated[bool, typer.Option("--continue", help="Resume the most recent conversation with a photo or a "
                                                        "request (with none, start a new one and say so).")] = False,
    list_them: Annotated[bool, typer.Option("--list", help="List saved conversations and exit.")] = False,
    preview: Annotated[Preview, typer.Option(help="How photos are drawn: auto (graphics where the terminal has them, "
                                                  "else coloured cells), halfcell or unicode.")] = Preview.AUTO,
    registry: RegistryOption = None,
    llm: LLMOption = None,
    llm_timeout: LLMTimeoutOption = None,
    as_json: JsonOption = False,
) -> None:
    """Edit a photo by conversation: ask, check the plan, run it, undo, export.

        diffplugin chat examples/photos/rocket-foggy-dusk.jpg
        diffplugin chat --continue
    """
    with reported(as_json):
        from assistant.chat.store import ConversationStore
        from assistant.paths import data_dir

        store = ConversationStore(data_dir() / "chat")
        if list_them:
            conversations = store.list()
            emit([c.to_json() for c in conversations], as_json, lambda: _show(conversations))
            return
        if as_json:
            raise CliError("--json applies to --list; the chat itself is interactive")
        if sum([photo is not None, resume is not None, last]) > 1:
            raise CliError("give a PHOTO, --resume ID or --continue, not several")
        from assistant.chat.app import ChatApp, load_keymap

        load_keymap()  # a broken keymap.yaml is a one-line error here, not inside the app
        session = _session(store, registry, photo, resume, last)

        ChatApp(session, renderer=preview.value, llm=llm, llm_timeout=llm_timeout).run()


def _session(store: ConversationStore, registry: Path | None, photo: Path | None, resume: str | None,
             last: bool) -> ChatSession:
    from assistant.chat.session import ChatSession
    from assistant.paths import open_registry
    from plugins.data.photos import load_photo

    folder = open_registry(registry)
    if resume:
        try:
            return ChatSession.resume(store, folder, store.get(resume).id)
        except KeyError as err:
            raise CliError(err.args[0]) from None
    if last:
        conversation = store.latest_started()
        if conversation is not None:
            return ChatSession.resume(store, folder, conversation.id)
        # Someone who asked to continue wants to chat: a new conversation, saying why, rather than an exit.
        session = ChatSession.start(store, folder)
        session.notice = "There is no earlier conversation to continue, so this is a new one."
        return session
    if photo is not None:
        load_photo(photo)  # a bad photo is a one-line error here, before the screen opens
    return ChatSession.start(store, folder, photo)


def _show(conversations: list[Conversation]) -> None:
    if not conversations:
        typer.echo("No conversations yet: `diffplugin chat PHOTO` starts one.")
    for c in conversations:
        typer.echo(f"{c.id}  {c.updated}  {c.title}")


def register(app: CliApp) -> None:
    app.command("chat")(chat_command)
