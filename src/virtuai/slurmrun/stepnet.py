"""Job steps across the nodes of a multi-node job: the batch task's hub and the step agents.

A job submitted with ``-N K`` is a gang of K tasks, one per node.  Task 0 runs the
batch script; tasks 1..K-1 run ``agent``: they connect to task 0 at
``MASTER_ADDR:MASTER_PORT`` (the gang's rendezvous, which every task of a gang can
reach by construction), prove that they hold the job's token and wait for step
requests.  ``srun`` in the batch script talks to the hub over a Unix socket in the
batch task's private directory; the hub sends each node's ranks to its agent, and
relays their output and exit codes back.  Once every agent has joined, the hub stops
listening; the script and its steps get a fresh ``MASTER_PORT`` for their own
rendezvous.

Security: both ends prove knowledge of ``VIRTUAI_JOB_TOKEN`` (an HMAC challenge in each
direction, the token never sent), so a process that grabbed the port cannot run
commands in the job nor have an agent run its commands.  Every frame after the
handshake carries an HMAC-SHA256 under a per-connection session key over its direction,
sequence number and payload: frames cannot be forged, replayed or reordered.  The
payload is not encrypted (as Slurm's step I/O is not).

Frames: 4-byte big-endian length, 32-byte MAC (zeros before a key exists and on the
Unix socket, which only the job's user can open), JSON payload.  Standard library only:
this file is shipped with the job's runner.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

MAX_FRAME = 16 * 2**20
MAX_HANDSHAKE = 4096
HANDSHAKE_TIMEOUT_S = 10.0
JOIN_TIMEOUT_S = 300.0
CHUNK = 65536
_HEADER = struct.Struct(">I")
_NO_MAC = bytes(32)
# A step rank's own node facts: never taken from node 0's environment.
NODE_LOCAL = (
    "CUDA_VISIBLE_DEVICES",
    "SLURM_JOB_GPUS",
    "GPU_DEVICE_ORDINAL",
    "SLURM_GPUS_ON_NODE",
    "VIRTUAI_NODE",
    "VIRTUAI_TASK_INDEX",
    "HOSTNAME",
    "TMPDIR",
    "VIRTUAI_SLURM_NODE_TMP",
)


class ChannelError(Exception):
    """The other end broke the protocol, failed to authenticate, or went away."""


def _mac(key: bytes, *parts: bytes) -> bytes:
    return hmac.new(key, b"|".join(parts), hashlib.sha256).digest()


class Channel:
    """Framed JSON over a stream socket; authenticated once ``key`` is set."""

    def __init__(self, sock: socket.socket, *, outgoing: bytes, incoming: bytes) -> None:
        self.sock = sock
        self.key: bytes | None = None
        self._out_label, self._in_label = outgoing, incoming
        self._sent = self._received = 0
        self._lock = threading.Lock()

    def send(self, message: Mapping[str, Any]) -> None:
        payload = json.dumps(message, separators=(",", ":")).encode()
        with self._lock:
            mac = _NO_MAC
            if self.key is not None:
                mac = _mac(self.key, self._out_label, str(self._sent).encode(), payload)
                self._sent += 1
            self.sock.sendall(_HEADER.pack(len(payload)) + mac + payload)

    def recv(self, limit: int = MAX_FRAME) -> dict[str, Any] | None:
        """The next message; ``None`` at a clean end of stream."""
        header = self._exactly(_HEADER.size + 32, eof_ok=True)
        if header is None:
            return None
        (size,) = _HEADER.unpack(header[: _HEADER.size])
        if size > limit:
            raise ChannelError(f"a frame of {size} bytes (at most {limit})")
        payload = self._exactly(size, eof_ok=False) or b""
        if self.key is not None:
            want = _mac(self.key, self._in_label, str(self._received).encode(), payload)
            if not hmac.compare_digest(want, header[_HEADER.size :]):
                raise ChannelError("a frame with a bad MAC")
            self._received += 1
        try:
            message = json.loads(payload)
        except ValueError:
            raise ChannelError("a frame that is not JSON") from None
        if not isinstance(message, dict):
            raise ChannelError("a frame that is not a JSON object")
        return message

    def _exactly(self, size: int, *, eof_ok: bool) -> bytes | None:
        data = b""
        while len(data) < size:
            try:
                chunk = self.sock.recv(size - len(data))
            except OSError as error:
                raise ChannelError(str(error)) from None
            if not chunk:
                if eof_ok and not data:
                    return None
                raise ChannelError("the connection closed in the middle of a frame")
            data += chunk
        return data

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def _field(message: Mapping[str, Any] | None, name: str) -> str:
    value = (message or {}).get(name)
    if not isinstance(value, str):
        raise ChannelError(f"the handshake has no {name}")
    return value


def agent_handshake(sock: socket.socket, token: str, index: int, host: str) -> Channel:
    """The agent's side: proves the hub knows the token, then that it does."""
    channel = Channel(sock, outgoing=b"agent", incoming=b"hub")
    mine = secrets.token_hex(16)
    channel.send({"op": "hello", "index": index, "nonce": mine})
    answer = channel.recv(MAX_HANDSHAKE)
    theirs = _field(answer, "nonce")
    proof = _mac(token.encode(), b"hub", mine.encode(), theirs.encode()).hex()
    if not hmac.compare_digest(proof, _field(answer, "proof")):
        raise ChannelError("the batch task did not prove it holds the job's token")
    own = _mac(token.encode(), b"agent", theirs.encode(), mine.encode()).hex()
    channel.send({"op": "proof", "proof": own, "host": host})
    channel.key = _mac(token.encode(), b"session", theirs.encode(), mine.encode())
    return channel


def hub_handshake(sock: socket.socket, token: str) -> tuple[Channel, int, str]:
    """The hub's side: ``(channel, task index, host name)`` of a genuine agent."""
    channel = Channel(sock, outgoing=b"hub", incoming=b"agent")
    hello = channel.recv(MAX_HANDSHAKE)
    theirs, index = _field(hello, "nonce"), (hello or {}).get("index")
    if not isinstance(index, int) or index < 1:
        raise ChannelError("the handshake has no task index")
    mine = secrets.token_hex(16)
    proof = _mac(token.encode(), b"hub", theirs.encode(), mine.encode()).hex()
    channel.send({"op": "challenge", "nonce": mine, "proof": proof})
    answer = channel.recv(MAX_HANDSHAKE)
    want = _mac(token.encode(), b"agent", mine.encode(), theirs.encode()).hex()
    if not hmac.compare_digest(want, _field(answer, "proof")):
        raise ChannelError("a peer that does not hold the job's token")
    channel.key = _mac(token.encode(), b"session", mine.encode(), theirs.encode())
    return channel, index, _field(answer, "host")[:255]


def exit_code(returncode: int) -> int:
    return returncode if returncode >= 0 else 128 - returncode


# -- the hub (in the batch task) -------------------------------------------------------------


class _Agent:
    def __init__(self, index: int, host: str, channel: Channel) -> None:
        self.index, self.host, self.channel = index, host, channel
        self.alive = True


class _Step:
    """One ``srun`` client's remote ranks: where their frames go back to."""

    def __init__(self, client: Channel, ranks: dict[int, int]) -> None:
        self.client = client
        self.waiting = dict(ranks)  # rank -> node index, until its exit is relayed


class Hub:
    """Task 0's end: agents join over TCP, ``srun`` clients ask over a Unix socket."""

    def __init__(self, token: str, tasks: int, address: str, port: int, socket_path: str) -> None:
        self.token, self.tasks = token, tasks
        self.agents: dict[int, _Agent] = {}
        self.steps: dict[str, _Step] = {}
        self.lock = threading.Lock()
        self.socket_path = socket_path
        self.listener = _listen(address, port)
        self.unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.unix.bind(socket_path)
        os.chmod(socket_path, 0o600)
        self.unix.listen(16)

    def join(self, timeout: float = JOIN_TIMEOUT_S) -> list[str]:
        """Wait for every agent; the host names of the allocation's nodes, in task order."""
        deadline = time.monotonic() + timeout
        while len(self.agents) < self.tasks - 1:
            left = deadline - time.monotonic()
            if left <= 0:
                missing = sorted(set(range(1, self.tasks)) - set(self.agents))
                raise ChannelError(
                    f"node(s) {', '.join(map(str, missing))} of the allocation never joined "
                    f"(waited {timeout:.0f}s)"
                )
            self.listener.settimeout(min(left, 1.0))
            try:
                sock, _peer = self.listener.accept()
            except TimeoutError:
                continue
            sock.settimeout(HANDSHAKE_TIMEOUT_S)
            try:
                channel, index, host = hub_handshake(sock, self.token)
            except (ChannelError, OSError) as error:
                print(f"srun: warning: refused a step agent: {error}", file=sys.stderr)
                sock.close()
                continue
            if index >= self.tasks or index in self.agents:
                channel.close()
                continue
            sock.settimeout(None)
            self.agents[index] = _Agent(index, host, channel)
        self.listener.close()
        for agent in self.agents.values():
            threading.Thread(target=self._from_agent, args=(agent,), daemon=True).start()
        threading.Thread(target=self._serve_clients, daemon=True).start()
        return [self.agents[i].host for i in range(1, self.tasks)]

    def close(self) -> None:
        """The batch step ended: every agent may end too."""
        for agent in self.agents.values():
            if agent.alive:
                with contextlib.suppress(OSError):
                    agent.channel.send({"op": "bye"})
        self.unix.close()

    def _serve_clients(self) -> None:
        while True:
            try:
                sock, _peer = self.unix.accept()
            except OSError:
                return
            channel = Channel(sock, outgoing=b"hub", incoming=b"srun")
            threading.Thread(target=self._client, args=(channel,), daemon=True).start()

    def _client(self, client: Channel) -> None:
        step_id = ""
        try:
            request = client.recv()
            if request is None or request.get("op") != "run":
                return
            step_id = str(request["step"])
            parts: dict[int, list[dict[str, Any]]] = {
                int(node): ranks for node, ranks in request["nodes"].items()
            }
            step = _Step(client, {int(r["rank"]): node for node, rs in parts.items() for r in rs})
            with self.lock:
                self.steps[step_id] = step
            for node, ranks in parts.items():
                agent = self.agents.get(node)
                message = {
                    "op": "run",
                    "step": step_id,
                    "ranks": ranks,
                    "argv": request["argv"],
                    "cwd": request.get("cwd", ""),
                }
                if agent is None or not self._send(agent, message):
                    self._lost(step_id, node)
            while (asked := client.recv()) is not None:
                if asked.get("op") == "signal":
                    self._signal(step_id, int(asked["signo"]))
        except (ChannelError, OSError, KeyError, ValueError, TypeError) as error:
            print(f"srun: error: step {step_id or '?'}: {error}", file=sys.stderr)
        finally:
            # srun went away (or ended): whatever of its step still runs is killed.
            if step_id and self.steps.get(step_id) is not None and self.steps[step_id].waiting:
                self._signal(step_id, signal.SIGKILL)
            with self.lock:
                self.steps.pop(step_id, None)
            client.close()

    def _send(self, agent: _Agent, message: Mapping[str, Any]) -> bool:
        try:
            agent.channel.send(message)
        except OSError:
            return False
        return True

    def _signal(self, step_id: str, signo: int) -> None:
        step = self.steps.get(step_id)
        nodes = set(step.waiting.values()) if step else set()
        for node in nodes:
            agent = self.agents.get(node)
            if agent is not None and agent.alive:
                self._send(agent, {"op": "signal", "step": step_id, "signo": signo})

    def _from_agent(self, agent: _Agent) -> None:
        try:
            while (message := agent.channel.recv()) is not None:
                step_id = str(message.get("step"))
                with self.lock:
                    step = self.steps.get(step_id)
                if step is None:
                    continue
                if message.get("op") == "exit":
                    step.waiting.pop(int(message["rank"]), None)
                with contextlib.suppress(OSError):
                    step.client.send(message)
        except (ChannelError, KeyError, ValueError) as error:
            print(f"srun: error: node {agent.index} ({agent.host}): {error}", file=sys.stderr)
        agent.alive = False
        with self.lock:
            affected = [s for s, step in self.steps.items() if agent.index in step.waiting.values()]
        for step_id in affected:
            self._lost(step_id, agent.index)

    def _lost(self, step_id: str, node: int) -> None:
        """Fail the step's ranks on a node that is gone (its task ended or cannot be reached)."""
        step = self.steps.get(step_id)
        if step is None:
            return
        for rank in [r for r, n in step.waiting.items() if n == node]:
            step.waiting.pop(rank, None)
            with contextlib.suppress(OSError):
                step.client.send({"op": "lost", "step": step_id, "rank": rank, "node": node})


def _listen(address: str, port: int) -> socket.socket:
    """Every address of this node, as torch's TCPStore listens: ``MASTER_ADDR`` is how the
    *others* reach it, which need not be an address of its own here (this machine's tasks
    get loopback, another machine's its registered address).  The handshake guards it."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("::" if family == socket.AF_INET6 else "", port))
    listener.listen(64)
    return listener


def free_port(address: str) -> int:
    """A port free right now on ``address`` (another process may take it before use)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((address, 0))
        except OSError:
            probe.bind(("", 0))
        return int(probe.getsockname()[1])


# -- srun's end of the Unix socket -----------------------------------------------------------


def remote_step(
    socket_path: str,
    step: int | str,
    nodes: Mapping[int, Sequence[Mapping[str, Any]]],
    argv: Sequence[str],
    on_output: Callable[[int, int, bytes], None],
    on_exit: Callable[[int, int], None] = lambda rank, code: None,
) -> tuple[Channel, threading.Thread, dict[int, int]]:
    """Ask the hub to run ``nodes`` (node -> [{rank, env}]); a thread relays their output to
    ``on_output(rank, fd, data)`` and fills the returned codes (rank -> exit code)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(socket_path)
    channel = Channel(sock, outgoing=b"srun", incoming=b"hub")
    channel.send(
        {
            "op": "run",
            "step": str(step),
            "nodes": {str(n): list(r) for n, r in nodes.items()},
            "argv": list(argv),
            "cwd": os.getcwd(),
        }
    )
    codes: dict[int, int] = {}
    wanted = sum(len(r) for r in nodes.values())

    def relay() -> None:
        try:
            while len(codes) < wanted and (message := channel.recv()) is not None:
                op, rank = message.get("op"), int(message.get("rank", -1))
                if op == "out":
                    on_output(rank, int(message["fd"]), base64.b64decode(message["data"]))
                elif op == "exit":
                    codes[rank] = int(message["code"])
                    on_exit(rank, codes[rank])
                elif op == "lost":
                    on_output(
                        rank,
                        2,
                        f"srun: error: node {message.get('node')}: its task is gone; "
                        f"rank {rank} lost\n".encode(),
                    )
                    codes[rank] = 255
                    on_exit(rank, 255)
        except (ChannelError, ValueError, KeyError) as error:
            print(f"srun: error: lost the batch step's hub: {error}", file=sys.stderr)
        for node_ranks in nodes.values():
            for item in node_ranks:
                codes.setdefault(int(item["rank"]), 255)

    thread = threading.Thread(target=relay, daemon=True)
    thread.start()
    return channel, thread, codes


# -- the agent (tasks 1..K-1) ----------------------------------------------------------------


class Agent:
    """Runs the ranks the hub sends, with this node's own GPUs and ``srun`` shims."""

    def __init__(self, channel: Channel, env: Mapping[str, str], bin_dir: str) -> None:
        self.channel = channel
        self.env = dict(env)
        self.bin_dir = bin_dir
        self.procs: dict[str, list[subprocess.Popen[bytes]]] = {}
        self.lock = threading.Lock()

    def serve(self) -> int:
        """Until the hub says bye (0) or goes away (1)."""
        try:
            while (message := self.channel.recv()) is not None:
                op = message.get("op")
                if op == "bye":
                    self._kill_all()
                    return 0
                if op == "run":
                    self._run(message)
                elif op == "signal":
                    self._signal(str(message["step"]), int(message["signo"]))
        except (ChannelError, KeyError, ValueError, TypeError) as error:
            print(f"virtuai step agent: {error}", file=sys.stderr)
        print("virtuai step agent: the batch task went away", file=sys.stderr)
        self._kill_all()
        return 1

    def forward(self, signo: int) -> None:
        with self.lock:
            procs = [p for ps in self.procs.values() for p in ps]
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signo)

    def _run(self, message: Mapping[str, Any]) -> None:
        step = str(message["step"])
        argv = [str(a) for a in message["argv"]]
        cwd = str(message.get("cwd") or "")
        if cwd and not os.path.isdir(cwd):
            here = os.getcwd()
            self._out(
                step,
                -1,
                2,
                f"slurmstepd: error: couldn't chdir to `{cwd}': going to `{here}'\n".encode(),
            )
            cwd = here
        for item in message["ranks"]:
            rank = int(item["rank"])
            env = self._rank_env(item["env"])
            try:
                proc = subprocess.Popen(
                    argv,
                    env=env,
                    cwd=cwd or None,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )
            except OSError as error:
                text = f"slurmstepd: error: execve(): {argv[0]}: {error.strerror or error}\n"
                self._out(step, rank, 2, text.encode())
                self._send({"op": "exit", "step": step, "rank": rank, "code": 2})
                continue
            with self.lock:
                self.procs.setdefault(step, []).append(proc)
            threading.Thread(target=self._watch, args=(step, rank, proc), daemon=True).start()

    def _rank_env(self, given: Mapping[str, str]) -> dict[str, str]:
        env = {str(k): str(v) for k, v in given.items()}
        for name in NODE_LOCAL:
            env.pop(name, None)
            if name in self.env:
                env[name] = self.env[name]
        # The gang's MASTER_ADDR, unless the script chose its own, is how *this* node
        # reaches node 0 (loopback there may be another machine's address here).
        if env.get("MASTER_ADDR") == env.get("VIRTUAI_SLURM_MASTER_ADDR") and self.env.get(
            "MASTER_ADDR"
        ):
            env["MASTER_ADDR"] = self.env["MASTER_ADDR"]
        # The batch task's private bin is not on this node: this agent's own shims are.
        path = [p for p in env.get("PATH", "").split(os.pathsep) if "virtuai-slurm-" not in p]
        env["PATH"] = os.pathsep.join([self.bin_dir, *path])
        env.pop("VIRTUAI_SLURM_HUB", None)
        gpus = [g for g in self.env.get("CUDA_VISIBLE_DEVICES", "").split(",") if g]
        env["SLURM_GPUS_ON_NODE"] = str(len(gpus))
        per_task = env.get("SLURM_GPUS_PER_TASK", "")
        local = int(env.get("SLURM_LOCALID", "0") or 0)
        if per_task.isascii() and per_task.isdigit() and int(per_task) > 0:
            mine = gpus[local * int(per_task) : (local + 1) * int(per_task)]
            if len(mine) == int(per_task):
                env["CUDA_VISIBLE_DEVICES"] = env["SLURM_STEP_GPUS"] = ",".join(mine)
        return env

    def _watch(self, step: str, rank: int, proc: subprocess.Popen[bytes]) -> None:
        readers = [
            threading.Thread(target=self._pump, args=(step, rank, fd, stream), daemon=True)
            for fd, stream in ((1, proc.stdout), (2, proc.stderr))
        ]
        for reader in readers:
            reader.start()
        code = exit_code(proc.wait())
        for reader in readers:
            reader.join()
        self._send({"op": "exit", "step": step, "rank": rank, "code": code})
        with self.lock:
            running = self.procs.get(step, [])
            if proc in running:
                running.remove(proc)
            if not running:
                self.procs.pop(step, None)

    def _pump(self, step: str, rank: int, fd: int, stream: IO[bytes] | None) -> None:
        assert stream is not None
        with stream:
            while chunk := os.read(stream.fileno(), CHUNK):
                self._out(step, rank, fd, chunk)

    def _out(self, step: str, rank: int, fd: int, data: bytes) -> None:
        self._send(
            {
                "op": "out",
                "step": step,
                "rank": rank,
                "fd": fd,
                "data": base64.b64encode(data).decode(),
            }
        )

    def _send(self, message: Mapping[str, Any]) -> None:
        with contextlib.suppress(OSError):
            self.channel.send(message)

    def _signal(self, step: str, signo: int) -> None:
        with self.lock:
            procs = list(self.procs.get(step, []))
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signo)

    def _kill_all(self) -> None:
        self.forward(signal.SIGKILL)


def connect_agent(
    address: str, port: int, token: str, index: int, host: str, timeout: float = JOIN_TIMEOUT_S
) -> Channel:
    """Connect to the batch task, retrying while it is not listening yet."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            sock = socket.create_connection((address, port), timeout=HANDSHAKE_TIMEOUT_S)
        except OSError as error:
            last = error
            time.sleep(0.2)
            continue
        try:
            channel = agent_handshake(sock, token, index, host)
        except (ChannelError, OSError) as error:
            # Not the batch task (another process on the port, or a stale one): try again.
            sock.close()
            last = error
            time.sleep(0.5)
            continue
        sock.settimeout(None)
        return channel
    raise ChannelError(f"cannot reach the batch task at {address}:{port}: {last}")
