"""Community indexes on a real local HTTP server: publish -> index add -> search -> install by id -> run, the offline
cache, and every tampering an index or a mirror could try (each refused in one line, with nothing installed)."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from typer.testing import CliRunner

from assistant.cli import app
from registry.community.format import INDEX_FILE, index_schema
from registry.community.signing import load_private_key, sign
from tests.conftest import photo_array
from tests.plugin_folders import EXAMPLE_PLUGIN, code_folder, python_folder

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


class Server:
    """A static HTTP server on 127.0.0.1 (port chosen by the system) serving `folder`; it records each request's
    path and status."""

    def __init__(self, folder: Path) -> None:
        self.requests: list[tuple[str, int]] = []
        served = self

        class Handler(SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs) -> None:
                super().__init__(*args, directory=str(folder), **kwargs)

            def log_request(self, code="-", size="-") -> None:
                served.requests.append((self.path, int(code)))

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Stop serving (again: no effect)."""
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


def cli(home: Path, *args) -> object:
    """`diffplugin ARGS` on the machine whose data folder is `home`."""
    return runner.invoke(app, [str(a) for a in args], env={"DIFFPLUGIN_HOME": str(home)})


def ok(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def refused(result) -> str:
    """The one line a refusal prints (the error, as --json gives it)."""
    assert result.exit_code == 1, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])["error"]


def installed(home: Path) -> list[str]:
    """What the registry of `home` holds: ns/name/version folders, and whatever an install left in staging."""
    registry = home / "registry"
    return sorted(str(p.relative_to(registry)) for p in [*registry.glob("plugins/*/*/*"), *registry.glob(".staging/*")])


def cached_archives(home: Path) -> list[str]:
    return sorted(p.name for p in (home / "cache" / "community" / "archives").glob("*"))


@pytest.fixture
def publisher(tmp_path: Path) -> Path:
    """The publisher's data folder, with a key pair made by `index keygen`."""
    home = tmp_path / "publisher"
    ok(cli(home, "index", "keygen", "--json"))
    return home


@pytest.fixture
def index_dir(tmp_path: Path, publisher: Path) -> Path:
    """An index folder with the example plugin (acme/sharpen 1.0.0), published and signed."""
    folder = tmp_path / "index"
    published = ok(cli(publisher, "plugins", "publish", EXAMPLE_PLUGIN, "--index", folder, "--json"))
    assert published["signed"] and published["id"] == "acme/sharpen"
    # Published a minute ago: a Last-Modified within a second or two of the answer is too weak to revalidate with.
    a_minute_ago = time.time() - 60
    os.utime(folder / INDEX_FILE, (a_minute_ago, a_minute_ago))
    return folder


@pytest.fixture
def server(index_dir: Path) -> Iterator[Server]:
    served = Server(index_dir)
    yield served
    served.stop()


@pytest.fixture
def user(tmp_path: Path) -> Path:
    """Another machine: an empty data folder."""
    return tmp_path / "user"


def document(index_dir: Path) -> dict:
    return json.loads((index_dir / INDEX_FILE).read_text())


def write_document(index_dir: Path, data: dict) -> None:
    (index_dir / INDEX_FILE).write_text(json.dumps(data, indent=2))


def resign(entry: dict, key_file: Path) -> dict:
    entry = {k: v for k, v in entry.items() if k != "signature"}
    return {**entry, "signature": sign(entry, load_private_key(key_file))}


# ---------------------------------------------------------------------------------------------------- the journey
def test_published_on_one_machine_found_by_meaning_and_installed_by_id_on_another(
        user: Path, server: Server, tmp_path: Path) -> None:
    added = ok(cli(user, "index", "add", "community", server.url, "--json"))
    assert added["plugins"] == 1 and added["refused"] == [] and added["how"] == "downloaded"
    listed = ok(cli(user, "index", "list", "--json"))
    assert listed["indexes"][0]["require_signatures"] is True and list(listed["pins"]) == ["acme"]

    results = ok(cli(user, "plugins", "search", "the photo is soft, make it crisper", "--json"))["results"]
    assert results[0]["id"] == "acme/sharpen" and results[0]["source"] == "index", results[:3]
    assert results[0]["mark"] == "index:community" and results[0]["license"] == "MIT" and results[0]["signed"]
    assert any(r["source"] == "installed" for r in results)  # the built-ins are in the same ranking
    shown = ok(cli(user, "plugins", "show", "acme/sharpen", "--json"))
    assert shown["installed"] is False and shown["publisher"] == "ACME Imaging" and len(shown["examples"]) == 4

    error = refused(cli(user, "plugins", "install", "acme/sharpen", "--json"))  # code: the usual trust rule
    assert "--trust" in error and "acme/sharpen 1.0.0" in error and installed(user) == []
    done = ok(cli(user, "plugins", "install", "acme/sharpen", "--trust", "--json"))
    assert done["from_index"]["index"] == "community" and done["from_index"]["signed"]
    assert installed(user) == ["plugins/acme/sharpen/1.0.0"]
    assert ok(cli(user, "plugins", "show", "acme/sharpen", "--json"))["trust"]["how"] == "install --trust"

    photo = tmp_path / "cat.png"
    PIL.Image.fromarray(photo_array("chelsea", 64)).save(photo)
    ran = ok(cli(user, "apply", photo, "-p", "acme/sharpen", "-o", tmp_path / "sharp.png", "--json"))
    assert ran["plugins"] == ["acme/sharpen"]
    assert not np.array_equal(np.asarray(PIL.Image.open(tmp_path / "sharp.png")), np.asarray(PIL.Image.open(photo)))

    again = ok(cli(user, "plugins", "search", "make it crisper", "--limit", "1", "--json"))["results"]
    assert again[0]["id"] == "acme/sharpen" and again[0]["source"] == "installed"

    updated = ok(cli(user, "index", "update", "--json"))["indexes"][0]
    assert updated["how"] == "not modified" and server.requests[-1] == ("/index.json", 304)


def test_a_new_version_is_found_after_update_and_older_ones_stay_installable(
        user: Path, server: Server, index_dir: Path, publisher: Path, tmp_path: Path) -> None:
    ok(cli(user, "index", "add", "community", server.url, "--json"))
    ok(cli(publisher, "plugins", "publish", python_folder(tmp_path / "v2", version="2.0.0"), "--index", index_dir,
           "--json"))
    versions = [e["manifest"]["version"] for e in document(index_dir)["entries"]]
    assert versions == ["1.0.0", "2.0.0"]  # older versions kept
    assert ok(cli(user, "index", "update", "--json"))["indexes"][0]["how"] == "downloaded"
    assert ok(cli(user, "plugins", "install", "acme/sharpen", "--trust", "--json"))["version"] == "2.0.0"
    assert ok(cli(user, "plugins", "install", "acme/sharpen@1.0.0", "--trust", "--json"))["version"] == "1.0.0"


def test_an_index_changed_within_the_last_seconds_is_fetched_whole_again(user: Path, publisher: Path,
                                                                        tmp_path: Path) -> None:
    """Its Last-Modified has a one-second resolution: revalidating with it could miss a change made in the same
    second, so the next update downloads the document again instead of asking If-Modified-Since."""
    folder = tmp_path / "fresh"
    ok(cli(publisher, "plugins", "publish", EXAMPLE_PLUGIN, "--index", folder, "--json"))
    served = Server(folder)
    try:
        ok(cli(user, "index", "add", "fresh", served.url, "--json"))
        assert ok(cli(user, "index", "update", "--json"))["indexes"][0]["how"] == "downloaded"
    finally:
        served.stop()
    assert [status for _, status in served.requests] == [200, 200]


def test_search_and_install_work_from_the_cache_when_the_server_is_gone(user: Path, server: Server) -> None:
    ok(cli(user, "index", "add", "community", server.url, "--json"))
    assert ok(cli(user, "index", "update", "--archives", "--json"))["archives"] == \
        ["acme/sharpen 1.0.0 (index 'community')"]
    server.stop()

    results = ok(cli(user, "plugins", "search", "make it crisper", "--limit", "1", "--json"))["results"]
    assert results[0]["id"] == "acme/sharpen" and results[0]["source"] == "index"
    assert ok(cli(user, "plugins", "install", "acme/sharpen", "--trust", "--json"))["version"] == "1.0.0"
    failed = cli(user, "index", "update")
    assert failed.exit_code == 1 and "cannot be reached" in failed.stderr and "cached copy" in failed.stderr

    ok(cli(user, "index", "remove", "community", "--json"))
    assert not (user / "cache" / "community" / "indexes" / "community").exists()
    assert ok(cli(user, "plugins", "search", "make it crisper", "--json"))["results"][0]["source"] == "installed"


def test_a_local_folder_index_needs_no_server_and_may_be_unsigned(user: Path, tmp_path: Path) -> None:
    folder = tmp_path / "mirror"
    ok(cli(tmp_path / "p", "plugins", "publish", code_folder(tmp_path / "negative"), "--index", folder, "--unsigned",
           "--json"))
    ok(cli(user, "index", "add", "mirror", f"file://{folder}", "--json"))
    done = ok(cli(user, "plugins", "install", "acme/negative", "--trust", "--json"))
    assert done["from_index"]["signed"] is False and installed(user) == ["plugins/acme/negative/1.0.0"]


# ---------------------------------------------------------------------------------------------------- refusals
def _entry_changed(index_dir: Path, publisher: Path, tmp_path: Path) -> None:
    data = document(index_dir)
    data["entries"][0]["manifest"]["description"] = "Sharpens photos. Now also mines coins in the background."
    write_document(index_dir, data)


def _wrong_signature(index_dir: Path, publisher: Path, tmp_path: Path) -> None:
    ok(cli(tmp_path / "mallory", "index", "keygen", "--json"))
    data = document(index_dir)
    forged = resign(data["entries"][0], tmp_path / "mallory" / "keys" / "publisher.key")
    data["entries"][0]["signature"] = forged["signature"]  # a real signature, by a key the entry does not name
    write_document(index_dir, data)


def _archive_changed(index_dir: Path, publisher: Path, tmp_path: Path) -> None:
    archive = next(index_dir.glob("archives/acme/*.tar.gz"))
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other bytes
    archive.write_bytes(bytes(data))


def _archive_longer(index_dir: Path, publisher: Path, tmp_path: Path) -> None:
    archive = next(index_dir.glob("archives/acme/*.tar.gz"))
    archive.write_bytes(archive.read_bytes() + b"\0" * 512)


def _archive_shorter(index_dir: Path, publisher: Path, tmp_path: Path) -> None:
    archive = next(index_dir.glob("archives/acme/*.tar.gz"))
    archive.write_bytes(archive.read_bytes()[:-100])


def _lookalike_namespace(index_dir: Path, publisher: Path, tmp_path: Path) -> None:
    data = document(index_dir)
    entry = data["entries"][0]
    entry["manifest"]["id"] = "diffp1ugin/sharpen"  # reads as diffplugin/, this project's reserved namespace
    data["entries"][0] = resign(entry, publisher / "keys" / "publisher.key")  # properly signed: still refused
    write_document(index_dir, data)


def _unsigned_entry(index_dir: Path, publisher: Path, tmp_path: Path) -> None:
    data = document(index_dir)
    del data["entries"][0]["signature"]
    write_document(index_dir, data)


def _archive_of_another_plugin(index_dir: Path, publisher: Path, tmp_path: Path) -> None:
    """A signed entry for acme/sharpen whose archive (hash and size right) holds another plugin's manifest: a
    namespace's pinned key must not be bypassed by shipping its id inside another entry."""
    other = tmp_path / "other-index"
    ok(cli(publisher, "plugins", "publish", code_folder(tmp_path / "negative"), "--index", other, "--json"))
    negative = document(other)["entries"][0]
    (index_dir / "archives" / "acme" / "negative-1.0.0.tar.gz").write_bytes(
        (other / "archives" / "acme" / "negative-1.0.0.tar.gz").read_bytes())
    data = document(index_dir)
    data["entries"][0]["archive"] = negative["archive"]
    data["entries"][0] = resign(data["entries"][0], publisher / "keys" / "publisher.key")
    write_document(index_dir, data)


@pytest.mark.parametrize(("tamper", "at_add", "message"), [
    (_entry_changed, True, "the signature does not match the entry"),
    (_wrong_signature, True, "the signature does not match the entry"),
    (_unsigned_entry, True, "unsigned; this index requires signed entries"),
    (_lookalike_namespace, True, "is, or looks like, 'diffplugin/'"),
    (_archive_changed, False, "the archive's SHA-256 is"),
    (_archive_longer, False, "bytes, its entry says"),
    (_archive_shorter, False, "bytes, its entry says"),
    (_archive_of_another_plugin, False, "the archive's diffplugin.yaml is not the manifest its entry lists"),
], ids=lambda value: value.__name__.strip("_") if callable(value) else None)
def test_tampering_is_refused_in_one_line_with_nothing_installed(user: Path, server: Server, index_dir: Path,
                                                                 publisher: Path, tmp_path: Path, tamper,
                                                                 at_add: bool, message: str) -> None:
    tamper(index_dir, publisher, tmp_path)
    added = ok(cli(user, "index", "add", "community", server.url, "--json"))
    assert any(message in line for line in added["refused"]) == at_add, added["refused"]

    ref = "diffp1ugin/sharpen" if tamper is _lookalike_namespace else "acme/sharpen"
    result = cli(user, "plugins", "install", ref, "--trust")
    assert result.exit_code == 1 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and ref in lines[0], lines
    assert installed(user) == [] and cached_archives(user) == []


def test_a_namespace_stays_with_the_first_key_seen(user: Path, server: Server, publisher: Path,
                                                   tmp_path: Path) -> None:
    ok(cli(user, "index", "add", "community", server.url, "--json"))  # pins acme/ to the publisher's key
    mallory, other = tmp_path / "mallory", tmp_path / "other-index"
    ok(cli(mallory, "index", "keygen", "--json"))
    ok(cli(mallory, "plugins", "publish", python_folder(tmp_path / "v2", version="2.0.0"), "--index", other, "--json"))
    second = Server(other)
    try:
        added = ok(cli(user, "index", "add", "other", second.url, "--json"))
        assert len(added["refused"]) == 1 and "is pinned to" in added["refused"][0]
        newest = refused(cli(user, "plugins", "install", "acme/sharpen@2.0.0", "--trust", "--json"))
        assert "index 'other': acme/sharpen 2.0.0: signed by the key" in newest and "is pinned to" in newest
        # Without a version, the tampered newer one is named rather than an older one installed in silence.
        assert "is pinned to" in refused(cli(user, "plugins", "install", "acme/sharpen", "--trust", "--json"))
        assert installed(user) == []
        assert ok(cli(user, "plugins", "install", "acme/sharpen@1.0.0", "--trust", "--json"))["version"] == "1.0.0"

        # Told another way that acme changed keys, the user forgets the pin; the next key seen is pinned.
        ok(cli(user, "index", "remove", "community", "--json"))
        assert ok(cli(user, "index", "unpin", "acme", "--json"))["index"] == "community"
        assert ok(cli(user, "plugins", "install", "acme/sharpen", "--trust", "--json"))["version"] == "2.0.0"
        assert ok(cli(user, "index", "list", "--json"))["pins"]["acme"]["index"] == "other"
    finally:
        second.stop()


def test_yanked_versions_install_only_when_asked_for_exactly(user: Path, server: Server, index_dir: Path,
                                                              publisher: Path) -> None:
    yanked = ok(cli(publisher, "plugins", "yank", "acme/sharpen@1.0.0", "--index", index_dir, "--reason",
                    "halos on faces", "--json"))
    assert yanked["yanked"] is True
    ok(cli(user, "index", "add", "community", server.url, "--json"))
    error = refused(cli(user, "plugins", "install", "acme/sharpen", "--trust", "--json"))
    assert "every listed version of 'acme/sharpen' is yanked" in error and "acme/sharpen@1.0.0" in error
    assert installed(user) == []
    done = ok(cli(user, "plugins", "install", "acme/sharpen@1.0.0", "--trust", "--json"))
    assert any("yanked: halos on faces" in w for w in done["warnings"])


def test_an_index_that_is_not_one_is_not_added(user: Path, tmp_path: Path) -> None:
    folder = tmp_path / "junk"
    folder.mkdir()
    (folder / INDEX_FILE).write_text("<html>not json</html>")
    served = Server(folder)
    try:
        error = refused(cli(user, "index", "add", "junk", served.url, "--json"))
    finally:
        served.stop()
    assert "not a diffplugin index" in error
    assert ok(cli(user, "index", "list", "--json"))["indexes"] == []
    gone = refused(cli(user, "index", "add", "gone", served.url, "--json"))
    assert "cannot be reached" in gone and ok(cli(user, "index", "list", "--json"))["indexes"] == []


def test_publishing_refuses_a_published_version_and_another_key(publisher: Path, index_dir: Path,
                                                                tmp_path: Path) -> None:
    before = (index_dir / INDEX_FILE).read_bytes()
    again = refused(cli(publisher, "plugins", "publish", EXAMPLE_PLUGIN, "--index", index_dir, "--json"))
    assert "already published" in again
    ok(cli(tmp_path / "mallory", "index", "keygen", "--json"))
    other_key = refused(cli(tmp_path / "mallory", "plugins", "publish", python_folder(tmp_path / "v2", "2.0.0"),
                            "--index", index_dir, "--json"))
    assert "published here with the key" in other_key
    assert (index_dir / INDEX_FILE).read_bytes() == before
    assert sorted(p.name for p in index_dir.rglob("*") if p.is_file()) == ["index.json", "sharpen-1.0.0.tar.gz"]


def test_publishing_is_reproducible(publisher: Path, tmp_path: Path) -> None:
    first = ok(cli(publisher, "plugins", "publish", EXAMPLE_PLUGIN, "--index", tmp_path / "a", "--json"))
    second = ok(cli(publisher, "plugins", "publish", EXAMPLE_PLUGIN, "--index", tmp_path / "b", "--json"))
    assert first["sha256"] == second["sha256"]


def test_the_index_schema_in_docs_is_current() -> None:
    published = json.loads((ROOT / "docs" / "index-schema.json").read_text())
    assert published == index_schema(), "run `diffplugin index schema -o docs/index-schema.json`"


def test_the_example_publishes_serves_and_installs_into_an_empty_data_folder(tmp_path: Path, monkeypatch) -> None:
    import importlib.util

    script = ROOT / "examples" / "community" / "publish_and_install.py"
    spec = importlib.util.spec_from_file_location("publish_and_install", script)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    monkeypatch.setenv("DIFFPLUGIN_HOME", str(tmp_path / "unused"))  # the script sets it per step; restored after
    result = example.main(tmp_path)
    assert installed(tmp_path / "user") == ["plugins/acme/sharpen/1.0.0"]
    assert installed(tmp_path / "publisher") == []  # published, never installed there
    assert PIL.Image.open(result).size == PIL.Image.open(ROOT / "examples" / "photos" / "chelsea.jpg").size


def test_the_chat_browser_shows_indexed_plugins_and_installs_them(user: Path, server: Server, monkeypatch) -> None:
    import asyncio

    from textual.app import App

    from assistant.chat.plugins_screen import PluginsScreen
    from assistant.paths import open_registry

    ok(cli(user, "index", "add", "community", server.url, "--json"))
    monkeypatch.setenv("DIFFPLUGIN_HOME", str(user))
    registry = open_registry()

    class Host(App):
        def on_mount(self) -> None:
            self.push_screen(PluginsScreen(registry))

    def keys(table) -> list[str]:
        return [str(key.value) for key in table.rows]

    async def scenario() -> None:
        app = Host()
        async with app.run_test(size=(150, 48)) as pilot:
            await app.workers.wait_for_complete()
            await pilot.pause()
            browser = app.screen
            table = browser.query_one("#plugins")
            assert "index:acme/sharpen" in keys(table) and "diffplugin/derain" in keys(table)
            table.move_cursor(row=keys(table).index("index:acme/sharpen"))
            await pilot.pause()
            assert "offered by index 'community'" in str(browser.query_one("#manifest").render())
            await pilot.press("f4")
            await pilot.pause()
            question = str(app.screen.query_one(".question").render())
            assert "from index 'community'" in question and "runs its own Python code" in question
            await pilot.press("y")
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert "installed acme/sharpen 1.0.0" in str(browser.query_one("#plugin-status").render())
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert "acme/sharpen" in keys(table) and "index:acme/sharpen" not in keys(table)

    asyncio.run(scenario())
    assert installed(user) == ["plugins/acme/sharpen/1.0.0"]
