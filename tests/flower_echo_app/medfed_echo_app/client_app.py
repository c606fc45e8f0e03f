"""ClientApp: reply with this SuperNode's ``site-index`` (from --node-config).

Under the Simulation Engine there is no --node-config; Flower sets
``partition-id`` instead, which is used as the site index there.
"""

from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

app = ClientApp()


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Answer the ServerApp's query with ``site-index`` as a MetricRecord."""
    node_config = context.node_config
    site_index = int(node_config.get("site-index", node_config.get("partition-id", -1)))
    content = RecordDict({"echo": MetricRecord({"site-index": site_index})})
    return Message(content, reply_to=msg)
