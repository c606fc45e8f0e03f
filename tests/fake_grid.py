"""A fake Flower Grid for tests: every node's real ClientApp called in this process, messages through the wire.

The fake Grid delivers each Message to the real ClientApp after a round trip of its content through Flower's wire
format (protobuf), and delivers the reply the same way. No Ray, no network, no SuperLink.
"""

from __future__ import annotations

import contextlib
import copy
import math
import uuid
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from flwr.app import Context, Error, Message, RecordDict
from flwr.common.serde import recorddict_from_proto, recorddict_to_proto
from flwr.proto.recorddict_pb2 import RecordDict as ProtoRecordDict
from flwr.server.superlink.linkstate.utils import create_message_error_unavailable_res_message
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from medfed.integrations.flower.app import client_app
from medfed.integrations.flower.settings import ServerSettings

SITES = ["adult-a", "adult-b", "adult-c"]
NODES = {101: "adult-a", 202: "adult-b", 303: "adult-c"}  # node ids are Flower's, unrelated to site order


class Interrupted(Exception):
    """The ServerApp process dies (a kill, a power cut) in the middle of a round."""


def wire_round_trip(content: RecordDict) -> RecordDict:
    """``content`` after a trip through Flower's protobuf wire format (bytes)."""
    return recorddict_from_proto(ProtoRecordDict.FromString(recorddict_to_proto(content).SerializeToString()))


class FakeGrid(Grid):
    """The Grid a ServerApp gets, with the ClientApp of each node called in-process.

    ``ignore``: node -> message types it never answers (a site that is down or too slow: no reply arrives);
    ``crash``: node -> message types whose ClientApp raises (Flower then replies with an error message);
    ``unavailable``: node -> message types it gets while its heartbeats have stopped (a crashed SuperNode): the
    SuperLink answers in its place, from its own node id, with Flower's ``NODE_UNAVAILABLE`` error (made by the
    SuperLink's own function);
    ``interrupt_round``: the fake raises :class:`Interrupted` when round N's train messages are sent.
    """

    def __init__(self, node_configs: Mapping[int, dict[str, Any]], *, ignore: Mapping[int, set[str]] | None = None,
                 crash: Mapping[int, set[str]] | None = None, unavailable: Mapping[int, set[str]] | None = None,
                 interrupt_round: int | None = None) -> None:
        self.contexts = {node: Context(run_id=1, node_id=node, node_config=dict(cfg), state=RecordDict(), run_config={})
                         for node, cfg in node_configs.items()}
        self.ignore = dict(ignore or {})
        self.crash = dict(crash or {})
        self.unavailable = dict(unavailable or {})
        self.interrupt_round = interrupt_round
        self.timeouts: list[float | None] = []
        self.sent: list[Message] = []
        self.replies: list[Message] = []
        self._waiting: dict[str, Message] = {}
        self._run = Run.create_empty(run_id=1)

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = str(uuid.uuid4())
            ids.append(message.metadata.message_id)
            self.sent.append(message)
            node, kind = message.metadata.dst_node_id, message.metadata.message_type
            if kind in self.ignore.get(node, set()):
                continue
            if kind in self.unavailable.get(node, set()):
                reply = create_message_error_unavailable_res_message(message.metadata, "node_unavail")
                self.replies.append(reply)
                self._waiting[message.metadata.message_id] = reply
                continue
            incoming = Message(wire_round_trip(message.content), metadata=copy.deepcopy(message.metadata))
            try:
                if kind in self.crash.get(node, set()):
                    raise RuntimeError("the ClientApp process was killed")
                reply = client_app(incoming, self.contexts[node])
                reply = Message(wire_round_trip(reply.content), metadata=reply.metadata)
            except Exception as err:  # noqa: BLE001 - what a SuperNode reports when its ClientApp raises
                reply = Message(Error(code=2, reason=f"{type(err).__name__}: {err}"), reply_to=incoming)
            self.replies.append(reply)
            self._waiting[message.metadata.message_id] = reply
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._waiting.pop(i) for i in message_ids if i in self._waiting]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        self.timeouts.append(timeout)
        assert timeout is not None and math.isfinite(timeout), "an unbounded wait would hang on a missing site"
        messages = list(messages)
        if self.interrupt_round is not None and any(
                m.metadata.message_type == "train" and m.metadata.group_id == str(self.interrupt_round) for m in messages):
            raise Interrupted(f"killed while sending round {self.interrupt_round}")
        return self.pull_messages(self.push_messages(messages))


@contextlib.contextmanager
def flower_server_identity() -> Iterator[None]:
    """What the SuperLink sets in a ServerApp process before ``main`` runs (Message() reads it)."""
    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1
    try:
        yield
    finally:
        TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved


def node_configs(federation: Mapping[str, Path], **extra: Any) -> dict[int, dict[str, Any]]:
    return {node: {"site-config": str(federation[site]), "site-name": site, **extra} for node, site in NODES.items()}


def settings(experiment: Path, out: Path, method: str, **run_config: Any) -> ServerSettings:
    return ServerSettings.from_run_config({"experiment": str(experiment), "method": method, "out": str(out),
                                           "sites": ",".join(SITES), "round-timeout": 30.0, "query-timeout": 5.0,
                                           "connect-timeout": 5.0, **run_config})
