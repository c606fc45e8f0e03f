"""Which node is which site: nodes name their site in reply to a ``query`` message, asked with a bounded wait.

Mixed into :class:`~medfed.integrations.flower.server.MedfedStrategy`, which holds ``clients`` (the run's sites),
``node_sites``, ``site_info``, ``node_errors`` and the timeouts. Node ids never enter medfed's records.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Hashable, Iterable, Iterator, Mapping
from typing import TypeVar

from flwr.app import Message, MessageType
from flwr.serverapp import Grid

from medfed.errors import MedfedError
from medfed.integrations.flower import messages as wire
from medfed.integrations.flower.settings import _POLL_SECONDS
from medfed.sites.redact import error_text, scrub_message

logger = logging.getLogger("medfed.flower")


Key = TypeVar("Key", bound=Hashable)


def answered(replies: Iterable[Message], sent: Mapping[Key, Message]) -> Iterator[tuple[Key, Message]]:
    """Each reply with the key of the message it answers, matched by ``reply_to_message_id`` (Flower sets a sent
    message's id when it pushes it). Not by the replying node: when a node stops sending heartbeats, the SuperLink
    itself answers its messages with a ``NODE_UNAVAILABLE`` error from the SuperLink's own node id. A reply to
    nothing sent, or a second reply to the same message, is logged and skipped."""
    key_of = {message.metadata.message_id: key for key, message in sent.items()}
    seen: set[str] = set()
    for reply in replies:
        answers = reply.metadata.reply_to_message_id
        if answers not in key_of or answers in seen:
            logger.warning("ignored an unexpected reply from node %s", reply.metadata.src_node_id)
            continue
        seen.add(answers)
        yield key_of[answers], reply


def _reason(err: BaseException) -> str:
    """One line of at most :data:`~medfed.sites.redact.MESSAGE_LIMIT` characters (as the in-process runner records)."""
    return error_text(err)


class SiteNodes:
    """The node bookkeeping of a Flower run (see the module docstring)."""

    def refresh_nodes(self, grid: Grid) -> dict[str, int]:
        """Ask connected nodes not heard from yet which site they are; ``site -> node`` of the run's sites."""
        self._connected = list(grid.get_node_ids())
        connected = set(self._connected)
        for node in [n for n in self.node_sites if n not in connected]:
            del self.node_sites[node]
        unknown = [n for n in self._connected if n not in self.node_sites]
        served = set(self.site_nodes())
        if unknown and not (self.clients and served.issuperset(self.clients)):  # asks only while a site lacks a node
            queries = {node: Message(wire.query_content(), node, MessageType.QUERY, ttl=self.query_timeout,
                                     group_id="medfed-query") for node in unknown}
            for node, reply in answered(grid.send_and_receive(list(queries.values()), timeout=self.query_timeout),
                                        queries):
                if reply.has_error():
                    self.node_errors[node] = scrub_message(f"Flower error {reply.error.code}: {reply.error.reason}", [])
                    continue
                try:
                    info = wire.parse_site_reply(reply.content)
                except Exception as err:  # noqa: BLE001 - a malformed answer: the node is not used
                    self.node_errors[node] = _reason(err)
                    continue
                if info.error is not None:
                    self.node_errors[node] = info.error
                    logger.warning("node %s (site %s) cannot serve: %s", node, info.name or "?", info.error)
                    continue
                self.node_errors.pop(node, None)
                self.node_sites[node] = info.name
                self.site_info.setdefault(info.name, info)
                if self._fixed_clients and info.name not in self.clients:
                    logger.warning("node %s is site %s, which is not one of this run's sites (%s): not used",
                                   node, info.name, ", ".join(self.clients))
        return self.site_nodes()

    def site_nodes(self) -> dict[str, int]:
        """``site -> node`` over connected nodes, the first node that claimed a site serving it."""
        out: dict[str, int] = {}
        for node, site in self.node_sites.items():
            if site in out:
                if node not in self.node_errors:
                    self.node_errors[node] = f"site {site} is already served by node {out[site]}"
                    logger.warning("node %s also claims site %s (served by node %s): not used", node, site, out[site])
                continue
            if not self.clients or site in self.clients:
                out[site] = node
        return out

    def connect(self, grid: Grid, timeout: float) -> list[str]:
        """Wait (at most ``timeout`` seconds) until every site of the run has a node (``clients`` empty: until
        ``min_nodes`` sites have), then fix the run's sites; returns them."""
        deadline = time.monotonic() + timeout
        wanted = self.min_nodes or self.training.min_fit_clients
        while True:
            found = self.refresh_nodes(grid)
            done = all(s in found for s in self.clients) if self._fixed_clients else len(found) >= wanted
            left = deadline - time.monotonic()
            if done or left <= 0:
                break
            time.sleep(min(_POLL_SECONDS, left))
        if not self._fixed_clients:
            if not found:
                raise MedfedError(f"no SuperNode said which site it is within {timeout:g} s; nothing to train "
                                  f"(node errors: {self.node_errors or 'none'})")
            self.clients = sorted(found)
        missing = [s for s in self.clients if s not in found]
        if missing:
            logger.warning("sites without a connected node after %g s: %s (they count as unavailable)",
                           timeout, ", ".join(missing))
        return list(self.clients)
