"""Conversations that outlive the app: messages, and every version of the photo with the plan that made it.

One SQLite file (`chat.sqlite3`) in the data folder; version images are PNG files beside it, one folder per
conversation. The user's own photo is only ever read: version 0 is a copy of it.
"""

from __future__ import annotations

import builtins
import json
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from plugins.errors import DiffPluginError

SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY, title TEXT NOT NULL, photo TEXT, current INTEGER NOT NULL DEFAULT -1,
    created TEXT NOT NULL, updated TEXT NOT NULL, pending TEXT);
CREATE TABLE IF NOT EXISTS messages (
    conversation TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE, seq INTEGER NOT NULL,
    role TEXT NOT NULL, text TEXT NOT NULL, created TEXT NOT NULL, PRIMARY KEY (conversation, seq));
CREATE TABLE IF NOT EXISTS versions (
    conversation TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE, idx INTEGER NOT NULL,
    file TEXT NOT NULL, plan TEXT, label TEXT NOT NULL, created TEXT NOT NULL, PRIMARY KEY (conversation, idx));
"""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Conversation:
    id: str
    title: str
    photo: str | None
    current: int
    created: str
    updated: str
    pending: str | None = None  # the proposed plan (JSON) that has not run yet

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "pending"}


@dataclass(frozen=True)
class Message:
    role: str  # "user", "assistant" or "error"
    text: str


@dataclass(frozen=True)
class Version:
    index: int
    file: Path
    plan: dict[str, Any] | None  # the plan that made it from the version before (None for the original)
    label: str


class DamagedStore(DiffPluginError, ValueError):
    """The conversations file is not a database, or a damaged one; it is never changed or replaced."""


class ConversationStore:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / "chat.sqlite3"
        with self._db() as db:
            db.executescript(SCHEMA)
            columns = {row[1] for row in db.execute("PRAGMA table_info(conversations)")}
            if "pending" not in columns:  # a store from before proposed plans were kept
                db.execute("ALTER TABLE conversations ADD COLUMN pending TEXT")

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        # A connection per call: the app's worker threads use the store too, and sqlite3 connections must not
        # cross threads.
        db = sqlite3.connect(self.path, timeout=30)
        try:
            db.execute("PRAGMA foreign_keys = ON")
            with db:
                yield db
        except sqlite3.DatabaseError as err:
            if err.sqlite_errorcode & 0xFF not in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
                raise
            raise DamagedStore(f"{self.path}: the saved conversations cannot be read ({err}); the file was left as "
                               "it is: move it aside (e.g. rename it to chat.sqlite3.damaged) and the chat starts a "
                               "new one") from None
        finally:
            db.close()

    def create(self, title: str, photo: Path | None = None) -> Conversation:
        now, cid = _now(), uuid.uuid4().hex[:12]
        with self._db() as db:
            db.execute("INSERT INTO conversations VALUES (?, ?, ?, -1, ?, ?, NULL)",
                       (cid, title, str(photo) if photo else None, now, now))
        return self.get(cid)

    def get(self, conversation: str) -> Conversation:
        with self._db() as db:
            rows = db.execute("SELECT * FROM conversations WHERE id = ? OR id LIKE ? ORDER BY updated DESC",
                              (conversation, conversation + "%")).fetchall()
        if not rows:
            raise KeyError(f"no conversation {conversation!r}; `diffplugin chat --list` shows them")
        if len(rows) > 1 and rows[0][0] != conversation:
            raise KeyError(f"{conversation!r} matches {len(rows)} conversations; give more of the id")
        return Conversation(*rows[0])

    def latest(self) -> Conversation | None:
        listed = self.list(1)
        return listed[0] if listed else None

    def latest_started(self) -> Conversation | None:
        """The most recent conversation with a photo or something the user said: one left empty (the chat opened
        without a photo and closed) never hides the last real one from `--continue`."""
        with self._db() as db:
            row = db.execute("SELECT * FROM conversations c WHERE c.photo IS NOT NULL OR EXISTS (SELECT 1 FROM "
                             "messages m WHERE m.conversation = c.id AND m.role = 'user') "
                             "ORDER BY c.updated DESC, c.rowid DESC LIMIT 1").fetchone()
        return Conversation(*row) if row else None

    def list(self, limit: int = 50) -> list[Conversation]:
        with self._db() as db:
            rows = db.execute("SELECT * FROM conversations ORDER BY updated DESC, rowid DESC LIMIT ?",
                              (limit,)).fetchall()
        return [Conversation(*row) for row in rows]

    def version_folder(self, conversation: str) -> Path:
        folder = self.folder / "versions" / conversation
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def add_message(self, conversation: str, role: str, text: str) -> None:
        with self._db() as db:
            # One statement: two threads saying something at once cannot take the same sequence number.
            db.execute("INSERT INTO messages SELECT ?, COALESCE(MAX(seq), -1) + 1, ?, ?, ? FROM messages "
                       "WHERE conversation = ?", (conversation, role, text, _now(), conversation))
            db.execute("UPDATE conversations SET updated = ? WHERE id = ?", (_now(), conversation))

    def set_pending(self, conversation: str, plan: dict[str, Any] | None) -> None:
        with self._db() as db:
            db.execute("UPDATE conversations SET pending = ? WHERE id = ?",
                       (json.dumps(plan) if plan else None, conversation))

    def set_photo(self, conversation: str, photo: Path) -> None:
        with self._db() as db:
            db.execute("UPDATE conversations SET photo = ?, title = ?, updated = ? WHERE id = ?",
                       (str(photo), photo.name, _now(), conversation))

    def messages(self, conversation: str) -> builtins.list[Message]:  # `list` here is the method above
        with self._db() as db:
            rows = db.execute("SELECT role, text FROM messages WHERE conversation = ? ORDER BY seq",
                              (conversation,)).fetchall()
        return [Message(*row) for row in rows]

    def add_version(self, conversation: str, file: Path, plan: dict[str, Any] | None, label: str) -> Version:
        """Append a version after the current one; versions after the current one (undone edits) are dropped,
        as in any editor's undo history."""
        with self._db() as db:
            current = db.execute("SELECT current FROM conversations WHERE id = ?", (conversation,)).fetchone()[0]
            dropped = db.execute("SELECT file FROM versions WHERE conversation = ? AND idx > ?",
                                 (conversation, current)).fetchall()
            db.execute("DELETE FROM versions WHERE conversation = ? AND idx > ?", (conversation, current))
            index = current + 1
            db.execute("INSERT INTO versions VALUES (?, ?, ?, ?, ?, ?)",
                       (conversation, index, str(file), json.dumps(plan) if plan else None, label, _now()))
            db.execute("UPDATE conversations SET current = ?, updated = ? WHERE id = ?", (index, _now(), conversation))
        for (old,) in dropped:
            if old != str(file):
                Path(old).unlink(missing_ok=True)
        return Version(index, file, plan, label)

    def versions(self, conversation: str) -> builtins.list[Version]:
        with self._db() as db:
            rows = db.execute("SELECT idx, file, plan, label FROM versions WHERE conversation = ? ORDER BY idx",
                              (conversation,)).fetchall()
        return [Version(i, Path(f), json.loads(p) if p else None, label) for i, f, p, label in rows]

    def set_current(self, conversation: str, index: int) -> None:
        with self._db() as db:
            db.execute("UPDATE conversations SET current = ?, updated = ? WHERE id = ?", (index, _now(), conversation))
