"""A lean HTTP/1.1 client for JSON POSTs to one OpenAI-compatible endpoint: keep-alive connections in an
O(1) pool, stdlib only.

Why not httpx: at 256 requests in flight its connection pool (httpcore) scans every connection on each
request and on each response (about a quarter of the client's CPU in a profile of the knowledge build),
and building an httpx request and response costs more than the whole request here. This client does
what the chat model needs and no more: ``POST`` a JSON body, read a JSON answer (``content-length``,
chunked or until close; gzip or deflate), over ``http://`` or ``https://`` (certifi's roots when
installed, else the system's; ``SSL_CERT_FILE`` honoured), through the proxy the environment names
(``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``NO_PROXY``; ``CONNECT`` for https).

>>> pool = HTTPPool("http://127.0.0.1:8000/v1", headers={"authorization": "Bearer ..."})  # doctest: +SKIP
>>> status, headers, body = await pool.post("/chat/completions", b'{"model": "m", "messages": []}')  # doctest: +SKIP
>>> await pool.aclose()  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
import urllib.parse
import zlib
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING

from .errors import LLMCallError

if TYPE_CHECKING:
    import ssl

__all__ = ["HTTPPool"]

_KEEPALIVE_S = 5.0  # an idle connection older than this is closed, not reused (servers drop them)
_MAX_HEADER_BYTES = 64 * 1024


class _Connection:
    __slots__ = ("idle_since", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0

    def reusable(self, now: float) -> bool:
        # at_eof: the server closed it while idle (the loop saw the FIN), so a request would be lost on it.
        return not self.reader.at_eof() and not self.writer.is_closing() and now - self.idle_since < _KEEPALIVE_S

    def close(self) -> None:
        self.writer.close()


class HTTPPool:
    """Keep-alive connections to the origin of ``base_url``, at most ``max_connections`` at once.

    Idle connections are a LIFO stack (the warmest first), a semaphore bounds those in use: taking and
    returning a connection is O(1) whatever the number in flight. ``timeout`` covers one whole request
    (connect, send, answer). Nothing is retried here: retries belong to the caller's policy.
    ``headers`` (the key among them) go out with every request and are never part of a ``repr``.
    """

    def __init__(
        self,
        base_url: str,
        *,
        headers: Mapping[str, str] | None = None,
        max_connections: int = 256,
        timeout: float = 120.0,
        ssl_context: ssl.SSLContext | None = None,
        trust_env: bool = True,
    ) -> None:
        url = urllib.parse.urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._tls = url.scheme == "https"
        self._host = url.hostname
        self._port = url.port or (443 if self._tls else 80)
        self._path = url.path.rstrip("/")
        default_port = self._port == (443 if self._tls else 80)
        host_header = self._host if default_port else f"{self._host}:{self._port}"
        if ":" in self._host and not default_port:  # an IPv6 literal
            host_header = f"[{self._host}]:{self._port}"
        self._ssl = (ssl_context or _default_ssl_context()) if self._tls else None
        self._proxy = _proxy_for(url) if trust_env else None
        # Plain http through a proxy: the request line names the absolute URL and the proxy relays it.
        self._target_prefix = f"http://{host_header}" if self._proxy is not None and not self._tls else ""
        lines = [f"host: {host_header}", "content-type: application/json", "accept: application/json"]
        lines += ["accept-encoding: gzip, deflate", "user-agent: kecpm"]
        if self._target_prefix and self._proxy is not None and self._proxy.auth:
            lines.append(f"proxy-authorization: {self._proxy.auth}")
        lines += [f"{name.lower()}: {value}" for name, value in (headers or {}).items()]
        self._head = ("\r\n".join(lines) + "\r\n").encode("latin-1")
        self._idle: deque[_Connection] = deque()
        self._slots = asyncio.Semaphore(max_connections)
        self._closed = False
        self.opened = 0  # connections opened so far (a measure of keep-alive reuse)

    def __repr__(self) -> str:
        return f"HTTPPool({self.base_url!r}, idle={len(self._idle)}, opened={self.opened})"

    async def post(self, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        """``(status, headers, body)`` of ``POST base_url + path``; raises LLMCallError (kind
        ``connection``, ``timeout`` or ``malformed_response``) when no whole answer comes back."""
        if self._closed:
            raise RuntimeError("the HTTP pool is closed")
        request = b"".join(
            (
                f"POST {self._target_prefix}{self._path}{path} HTTP/1.1\r\n".encode("latin-1"),
                self._head,
                b"content-length: %d\r\n\r\n" % len(body),
                body,
            )
        )
        async with self._slots:
            connection = None
            try:
                async with asyncio.timeout(self.timeout):
                    connection = self._take_idle() or await self._connect()
                    connection.writer.write(request)
                    status, headers, payload, keep = await _read_response(connection.reader)
            except TimeoutError:
                if connection is not None:
                    connection.close()
                raise LLMCallError(
                    f"no answer from {self.base_url} within {self.timeout:g} s", kind="timeout"
                ) from None
            except (OSError, EOFError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                if connection is not None:
                    connection.close()
                raise LLMCallError(
                    f"connection to {self.base_url} failed: {type(exc).__name__}: {exc}", kind="connection"
                ) from exc
            except _BadResponse as exc:
                if connection is not None:
                    connection.close()
                raise LLMCallError(
                    f"{self.base_url} sent a malformed HTTP answer: {exc}", kind="malformed_response"
                ) from None
            if keep and not self._closed:
                connection.idle_since = time.monotonic()
                self._idle.append(connection)
            else:
                connection.close()
        return status, headers, _decode(headers.get("content-encoding", ""), payload)

    def _take_idle(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            if connection.reusable(now):
                return connection
            connection.close()
        return None

    async def _connect(self) -> _Connection:
        self.opened += 1
        if self._proxy is None:
            reader, writer = await asyncio.open_connection(
                self._host, self._port, ssl=self._ssl, server_hostname=self._host if self._tls else None
            )
            return _Connection(reader, writer)
        reader, writer = await asyncio.open_connection(self._proxy.host, self._proxy.port)
        if self._tls:
            # A tunnel through the proxy, then TLS with the endpoint inside it.
            authority = f"{self._host}:{self._port}"
            head = f"CONNECT {authority} HTTP/1.1\r\nhost: {authority}\r\n"
            if self._proxy.auth:
                head += f"proxy-authorization: {self._proxy.auth}\r\n"
            writer.write((head + "\r\n").encode("latin-1"))
            status_line = await reader.readuntil(b"\r\n\r\n")
            if status_line.split(b" ", 2)[1:2] != [b"200"]:
                writer.close()
                raise OSError(f"the proxy refused the tunnel: {status_line.splitlines()[0].decode('latin-1')}")
            assert self._ssl is not None
            await writer.start_tls(self._ssl, server_hostname=self._host)
        return _Connection(reader, writer)

    async def aclose(self) -> None:
        """Close the idle connections now; those in use close when their request ends."""
        self._closed = True
        closing = list(self._idle)
        self._idle.clear()
        for connection in closing:
            connection.close()
        for connection in closing:
            with contextlib.suppress(Exception):
                await connection.writer.wait_closed()


class _BadResponse(Exception):
    pass


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes, bool]:
    """``(status, headers, body, keep_alive)`` of one HTTP/1.x response (1xx interim answers skipped)."""
    while True:
        head = await reader.readuntil(b"\r\n\r\n")
        if len(head) > _MAX_HEADER_BYTES:
            raise _BadResponse("headers too long")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise _BadResponse(f"status line {lines[0][:80]!r}")
        status = int(parts[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if status >= 200:
            break
    keep = parts[0] == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = await _read_chunked(reader)
    elif (length := headers.get("content-length")) is not None:
        if not length.isdigit():
            raise _BadResponse(f"content-length {length!r}")
        body = await reader.readexactly(int(length))
    elif status in (204, 304):
        body = b""
    else:  # the body ends with the connection
        body, keep = await reader.read(), False
    return status, headers, body, keep


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    chunks = []
    while True:
        size_line = await reader.readuntil(b"\r\n")
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise _BadResponse(f"chunk size {size_line[:40]!r}") from None
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                pass
            return b"".join(chunks)
        chunk = await reader.readexactly(size + 2)
        chunks.append(chunk[:-2])


def _decode(encoding: str, body: bytes) -> bytes:
    encoding = encoding.lower().strip()
    if not encoding or encoding == "identity" or not body:
        return body
    try:
        if encoding == "gzip":
            return zlib.decompress(body, 16 + zlib.MAX_WBITS)
        if encoding == "deflate":
            try:
                return zlib.decompress(body)
            except zlib.error:  # raw deflate, as some servers send it
                return zlib.decompress(body, -zlib.MAX_WBITS)
    except zlib.error as exc:
        raise LLMCallError(f"the answer's {encoding} body does not decode: {exc}", kind="malformed_response") from exc
    raise LLMCallError(f"the answer has an unsupported content-encoding {encoding!r}", kind="malformed_response")


class _Proxy:
    __slots__ = ("auth", "host", "port")

    def __init__(self, host: str, port: int, auth: str | None) -> None:
        self.host = host
        self.port = port
        self.auth = auth


def _proxy_for(url: urllib.parse.SplitResult) -> _Proxy | None:
    """The proxy the environment names for ``url`` (``HTTPS_PROXY``, ``HTTP_PROXY``, ``NO_PROXY``), if any."""
    import urllib.request  # its imports (email, http.client) are needed only here

    assert url.hostname is not None
    proxies = urllib.request.getproxies()
    address = proxies.get(url.scheme)
    if not address or urllib.request.proxy_bypass(url.hostname):
        return None
    proxy = urllib.parse.urlsplit(address if "://" in address else f"http://{address}")
    if proxy.scheme != "http" or not proxy.hostname:
        raise ValueError(f"only http:// proxies are supported, not {proxy.scheme}://{proxy.hostname}")
    auth = None
    if proxy.username is not None:
        credentials = f"{urllib.parse.unquote(proxy.username)}:{urllib.parse.unquote(proxy.password or '')}"
        auth = "Basic " + base64.b64encode(credentials.encode()).decode("ascii")
    return _Proxy(proxy.hostname, proxy.port or 80, auth)


def _default_ssl_context() -> ssl.SSLContext:
    import ssl

    try:
        import certifi  # the roots httpx and requests use, when installed
    except ImportError:
        return ssl.create_default_context()
    context = ssl.create_default_context(cafile=certifi.where())
    context.load_default_certs()  # and the system's, so a corporate root in the system store still works
    return context
