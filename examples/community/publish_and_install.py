"""Publish a plugin on one machine, find it by meaning and install it by id on another.

    python examples/community/publish_and_install.py OUT_DIR

Two data folders stand in for two machines: OUT_DIR/publisher makes a key and publishes the example plugin
(examples/plugins/acme-sharpen) into the index folder OUT_DIR/index; a static HTTP server on 127.0.0.1 serves that
folder; OUT_DIR/user, empty at first, adds the index, searches it, installs the plugin by id and runs it on
examples/photos/chelsea.jpg (-> OUT_DIR/chelsea-sharp.png). Each step is the `diffplugin` command shown, run
in this process so the embedding model loads once. Needs no network beyond 127.0.0.1 and no weights.
"""

from __future__ import annotations

import os
import shlex
import sys
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
PLUGIN = ROOT / "examples" / "plugins" / "acme-sharpen"
PHOTO = ROOT / "examples" / "photos" / "chelsea.jpg"


def diffplugin(home: Path, *args: object) -> None:
    """Run `diffplugin ARGS` with DIFFPLUGIN_HOME=home, as typed in a shell; stop on an error."""
    from assistant.cli import app

    words = [str(a) for a in args]
    print(f"\n$ DIFFPLUGIN_HOME={shlex.quote(str(home))} diffplugin {shlex.join(words)}", flush=True)
    os.environ["DIFFPLUGIN_HOME"] = str(home)
    code = app(words, standalone_mode=False)
    if code:
        raise SystemExit(code)


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def main(out: Path) -> Path:
    out = out.resolve()
    publisher, user, index = out / "publisher", out / "user", out / "index"

    # The publisher: a key pair, then the plugin, checked as an install would check it, archived and signed.
    diffplugin(publisher, "index", "keygen")
    diffplugin(publisher, "plugins", "publish", PLUGIN, "--index", index)

    # Any static web server can serve the index folder; here, Python's own on a free local port.
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(index)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    print(f"\nserving {index} at {url}")
    try:
        # The user, on another machine: add the index, find the plugin by what it does, install it by id.
        diffplugin(user, "index", "add", "community", url)
        diffplugin(user, "plugins", "search", "the photo is a bit soft, make it crisper", "--limit", "3")
        diffplugin(user, "plugins", "install", "acme/sharpen", "--trust")
    finally:
        server.shutdown()
        server.server_close()
    result = out / "chelsea-sharp.png"
    diffplugin(user, "apply", PHOTO, "-p", "acme/sharpen", "-o", result, "--overwrite")
    return result


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    sys.path.insert(0, str(ROOT))
    main(Path(sys.argv[1]))
