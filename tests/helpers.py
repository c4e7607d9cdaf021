"""Helpers the test modules share, written once: the command line in a process of its own and the test keys.

The step builders (``user()``, ``model()``, ``steps_of()``) and the database fixtures are in ``conftest.py``.
Imported as ``helpers`` (``from helpers import run_cli``), as the tests import ``conftest``.
"""

from __future__ import annotations

import atexit
import json
import locale
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
from typing import Any

import convstore

# The test keys: two distinct 32-byte keys and a wrong one.
K1, K2, WRONG = bytes(range(32)), bytes(range(32, 64)), bytes(32)

# What a command run by a test must not take from the developer's environment.
CLI_ENV_CLEARED = frozenset({"GEMINI_API_KEY", "CONVSTORE_DB", "CONVSTORE_KEYRING"})
# CONVSTORE_TEST_CLI_FRESH=1: every run_cli starts a fresh interpreter, as before the fork server.
FRESH = os.environ.get("CONVSTORE_TEST_CLI_FRESH") == "1"


def ring(*ids: str, active: str | None = None) -> convstore.Keyring:
    """A keyring of the test keys named by ``ids`` (``k1``: K1, ``k2``: K2; ``k1`` alone by default),
    the last one active unless ``active`` names another."""
    ids = ids or ("k1",)
    keys = {"k1": K1, "k2": K2}
    return convstore.Keyring({key_id: keys[key_id] for key_id in ids}, active=active or ids[-1])


def run_cli(
    *args: str,
    db: str | None = None,
    stdin: str | bytes | None = None,
    env: dict[str, str] | None = None,
    text: bool = True,
    stderr: Any = None,
    fresh: bool = False,
) -> subprocess.CompletedProcess[Any]:
    """``python -m convstore.cli [--db DB] ARGS``, without an API key, a store or a keyring from the
    environment (``env`` adds variables). Text by default, bytes with ``text=False``; stdout and stderr
    are captured unless ``stderr`` says where it goes.

    The command runs in a process of its own, with its own stdin, stdout, stderr, environment, working
    folder and exit status: a fork of a process that has imported what ``python -m convstore.cli`` imports
    before ``main()`` (about a CPU second a command, saved). ``fresh=True`` (or CONVSTORE_TEST_CLI_FRESH=1,
    or an environment that changes how Python starts) starts a new interpreter instead; tests/cli/
    test_cli_forks.py checks that both print the same."""
    clean = {k: v for k, v in os.environ.items() if k not in CLI_ENV_CLEARED}
    clean.update(env or {})
    command = [sys.executable, "-m", "convstore.cli", *(["--db", db] if db else []), *args]
    if not (fresh or FRESH or stderr is not None) and _FORKS.usable(clean):
        forked = _FORKS.run(command, clean, stdin, text)
        if forked is not None:
            return forked
    return subprocess.run(
        command,
        input=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE if stderr is None else stderr,
        text=text,
        env=clean,
        timeout=120,
        check=False,
    )


# The fork server: `python -c _SERVER FD` imports the command line and what it imports, then forgets the
# command line's own modules (convstore.cli.*: they read the environment as they load, e.g. the default
# store's path in the help), so each command loads them afresh in its own environment. For each request (a
# length-prefixed JSON of argv, environment and folder, with stdin, stdout and stderr as passed file
# descriptors) it forks a child that becomes that command: the three descriptors on 0, 1 and 2, the
# request's environment and folder, sys.argv as `python -m` sets it, then `sys.exit(main())` as
# convstore/cli/__main__.py does. The server answers the child's pid, then its exit status.
_SERVER = r"""
import json, os, socket, struct, sys
import convstore, convstore.cli
main_path = os.path.join(os.path.dirname(convstore.cli.__file__), "__main__.py")
for name in [name for name in sys.modules if name == "convstore.cli" or name.startswith("convstore.cli.")]:
    del sys.modules[name]
del convstore.cli
server = socket.socket(fileno=int(sys.argv[1]))
while True:
    head, fds, _, _ = socket.recv_fds(server, 4, 3)
    if not head:
        break
    (size,) = struct.unpack("!I", head)
    body = b""
    while len(body) < size:
        body += server.recv(size - len(body))
    request = json.loads(body)
    pid = os.fork()
    if pid == 0:
        server.close()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        sys.argv = [main_path, *request["args"]]
        from convstore.cli import main
        sys.exit(main())
    for fd in fds:
        os.close(fd)
    server.sendall(struct.pack("!i", pid))
    _, status = os.waitpid(pid, 0)
    server.sendall(struct.pack("!i", os.waitstatus_to_exitcode(status)))
"""

# What changes how an interpreter starts: a request whose environment differs from the server's in these
# runs in a fresh interpreter.
_STARTUP = ("PYTHON", "LANG", "LC_")


class _ForkServer:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._startup: dict[str, str] | None = None
        self._broken = not (hasattr(os, "fork") and hasattr(socket, "send_fds"))

    @staticmethod
    def _startup_of(env: dict[str, str]) -> dict[str, str]:
        return {k: v for k, v in env.items() if k.startswith(_STARTUP)}

    def usable(self, env: dict[str, str]) -> bool:
        if self._broken:
            return False
        return self._startup is None or self._startup == self._startup_of(env)

    def _start(self, env: dict[str, str]) -> socket.socket:
        ours, theirs = socket.socketpair()
        self._process = subprocess.Popen(
            [sys.executable, "-c", _SERVER, str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            env=env,
        )
        theirs.close()
        self._sock, self._startup = ours, self._startup_of(env)
        atexit.register(self.close)
        return ours

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._process is not None:
            self._process.wait(timeout=30)
            self._process = None

    def _receive(self, sock: socket.socket, timeout: float | None) -> int:
        sock.settimeout(timeout)
        data = b""
        while len(data) < 4:
            chunk = sock.recv(4 - len(data))
            if not chunk:
                raise ConnectionError("the CLI fork server ended")
            data += chunk
        return int(struct.unpack("!i", data)[0])

    def run(
        self, command: list[str], env: dict[str, str], stdin: str | bytes | None, text: bool
    ) -> subprocess.CompletedProcess[Any] | None:
        """The command's result, or None when a fresh interpreter should run it (another thread is using
        the server)."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            sock = self._sock or self._start(env)
            encoding = locale.getpreferredencoding(False)
            with (
                tempfile.TemporaryFile() as given,
                tempfile.TemporaryFile() as out,
                tempfile.TemporaryFile() as err,
            ):
                if stdin is not None:
                    given.write(stdin.encode(encoding) if isinstance(stdin, str) else stdin)
                    given.seek(0)
                    source = given.fileno()
                else:
                    source = os.open(os.devnull, os.O_RDONLY)
                body = json.dumps({"args": command[3:], "env": env, "cwd": os.getcwd()}).encode()
                try:
                    socket.send_fds(
                        sock, [struct.pack("!I", len(body))], [source, out.fileno(), err.fileno()]
                    )
                finally:
                    if stdin is None:
                        os.close(source)
                sock.sendall(body)
                pid = self._receive(sock, 30)
                try:
                    returncode = self._receive(sock, 120)
                except TimeoutError:
                    os.kill(pid, signal.SIGKILL)
                    self._receive(sock, 30)
                    raise subprocess.TimeoutExpired(command, 120) from None
                out.seek(0)
                err.seek(0)
                stdout, stderr = out.read(), err.read()
        except BaseException:
            self._broken = True  # a server out of step is not reused: fresh interpreters from here on
            raise
        finally:
            self._lock.release()
        if text:
            return subprocess.CompletedProcess(
                command, returncode, _decoded(stdout, encoding), _decoded(stderr, encoding)
            )
        return subprocess.CompletedProcess(command, returncode, stdout, stderr)


def _decoded(data: bytes, encoding: str) -> str:
    """As ``subprocess.run(text=True)`` decodes: the locale's encoding, universal newlines."""
    return data.decode(encoding).replace("\r\n", "\n").replace("\r", "\n")


_FORKS = _ForkServer()
