"""`Sandbox`: the fake UltraCart served on a background thread, with its control API in-process."""

from __future__ import annotations

import threading
from types import TracebackType

from ucsandbox.models import BASE_PATH, DEFAULT_CLIENT_ID
from ucsandbox.server import SandboxHTTPServer
from ucsandbox.state import SandboxState


class Sandbox(SandboxState):
    """A local UltraCart on loopback; port 0 picks a free port.

    >>> with Sandbox() as sandbox:
    ...     access, refresh = sandbox.issue_tokens("DEMO1")
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        client_id: str = DEFAULT_CLIENT_ID,
        client_secret: str | None = None,
    ) -> None:
        super().__init__(client_id=client_id, client_secret=client_secret)
        self._address = (host, port)
        self._server: SandboxHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Sandbox:
        """Bind and serve in a daemon thread; returns self."""
        if self._server is not None:
            raise RuntimeError("sandbox already started")
        self.stopping.clear()
        server = SandboxHTTPServer(self._address, self)
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="ucsandbox", daemon=True
        )
        thread.start()
        self._server, self._thread = server, thread
        return self

    def stop(self) -> None:
        """Stop serving; injected delays and held connections end at once."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self.stopping.set()
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The server root, e.g. http://127.0.0.1:PORT (control endpoints live under /__sandbox/)."""
        if self._server is None:
            raise RuntimeError("sandbox not started")
        return self._server.root_url

    @property
    def base_url(self) -> str:
        """What `ULTRACART_BASE_URL` should be, e.g. http://127.0.0.1:PORT/rest/v2."""
        return self.url + BASE_PATH

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("sandbox not started")
        return int(self._server.server_address[1])
