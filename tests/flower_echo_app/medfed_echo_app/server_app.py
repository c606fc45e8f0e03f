"""ServerApp: query every connected SuperNode once, write the replies as JSON."""

import json
import time
from pathlib import Path

from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid, ServerApp

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Send one query per node, collect replies within ``reply-timeout``."""
    cfg = context.run_config
    out_path = Path(str(cfg["output-path"]))
    reply_timeout = float(cfg["reply-timeout"])
    min_nodes = int(cfg["min-nodes"])
    deadline = time.monotonic() + float(cfg["node-wait-timeout"])

    node_ids = sorted(grid.get_node_ids())
    while len(node_ids) < min_nodes and time.monotonic() < deadline:
        time.sleep(0.5)
        node_ids = sorted(grid.get_node_ids())

    messages = [
        Message(
            RecordDict({"cfg": ConfigRecord({"ping": 1})}),
            dst_node_id=node_id,
            message_type=MessageType.QUERY,
        )
        for node_id in node_ids
    ]
    started = time.monotonic()
    replies = list(grid.send_and_receive(messages, timeout=reply_timeout))

    received: dict[str, int] = {}
    errors: dict[str, str] = {}
    for reply in replies:
        src = str(reply.metadata.src_node_id)
        if reply.has_error():
            errors[src] = reply.error.reason
        else:
            received[src] = int(reply.content["echo"]["site-index"])
    missing = [str(n) for n in node_ids if str(n) not in received and str(n) not in errors]

    result = {
        "node_ids": [str(n) for n in node_ids],
        "received": received,
        "values": sorted(received.values()),
        "errors": errors,
        "missing": missing,
        "seconds": round(time.monotonic() - started, 3),
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(out_path.suffix + ".tmp")
    tmp.write_text(json.dumps(result, indent=2, sort_keys=True), encoding="utf-8")
    tmp.replace(out_path)
