"""medfed as a Flower App: ``server_app`` and ``client_app`` for ``[tool.flwr.app.components]``.

The app project is this folder (``pyproject.toml`` beside this file); its components point at this module of
the *installed* medfed, which every machine needs (``pip install medfed[flower]``: the SuperLink's and each
hospital's). The bundle Flower builds carries only ``pyproject.toml`` (``fab-exclude``), so what runs is the
medfed version each site installed, and the sites' data never moves: a SuperNode reads its own site config
(:mod:`medfed.integrations.flower.client`). The server trains one method of an experiment config per run
(:mod:`medfed.integrations.flower.server`); train the others with further runs (``--run-config method=...``)
into the same run directory.

Deployment across hospitals (flwr 1.42 command lines; ``flower-superlink --help``, ``flower-supernode
--help`` and ``flwr run --help`` list every option)::

    # 0. certificates: a CA (certs/ca.crt, ca.key) and the SuperLink's certificate for the name SuperNodes dial
    #    (certs/server.pem, server.key; loopback names are always added, the SuperLink's SuperExec dials it there)
    medfed flower-certs certs --host superlink.example.org
    #    at each hospital, its own key pair for node authentication (NIST P-384, OpenSSH format); only the .pub
    #    leaves the hospital (`--node NAME` above makes central pairs instead, for a trial in one organisation)
    ssh-keygen -t ecdsa -b 384 -N "" -f keys/hospital-a          # keys/hospital-a, keys/hospital-a.pub
    #    send certs/ca.crt to every hospital and to the operator; keep certs/ca.key offline

    # 1. the coordinating server (TLS on, only registered SuperNodes may connect, state kept on disk;
    #    medfed is installed there, so Flower need not install the app's dependencies)
    flower-superlink \
        --ssl-ca-certfile certs/ca.crt --ssl-certfile certs/server.pem --ssl-keyfile certs/server.key \
        --enable-supernode-auth --database state/superlink.db \
        --disable-runtime-dependency-installation --host 0.0.0.0 --port 8000

    # 2. the operator's CLI connection, in $FLWR_HOME/config.toml (default ~/.flwr/config.toml):
    #        [superlink]
    #        default = "hospitals"
    #        [superlink.hospitals]
    #        address = "superlink.example.org:8000"
    #        root-certificates = "/path/to/certs/ca.crt"
    #    then register each hospital's public key:
    flwr supernode register keys/hospital-a.pub hospitals --name hospital-a

    # 3. at each hospital, one SuperNode naming its own site config (a medfed sites/*.yaml with its data):
    flower-supernode \
        --superlink superlink.example.org:8000 --root-certificates certs/ca.crt \
        --auth-supernode-private-key keys/hospital-a \
        --node-config "site-config='/data/medfed/sites/hospital_a.yaml' site-name='hospital-a'"
    #    (add share-case-records=false to send only this site's suppressed metrics, never per-case records)

    # 4. start a run from the operator's machine (paths are on the SuperLink machine; give absolute ones):
    flwr run medfed/integrations/flower hospitals --stream --run-config \
        'experiment="/srv/medfed/tasks/chest_xray.yaml" method="fedavg" out="/srv/medfed/reports" sites="hospital-a,hospital-b,hospital-c"'

    # 5. after an interruption (SuperLink or ServerApp stopped), continue from the last round's checkpoint:
    flwr run medfed/integrations/flower hospitals --stream --run-config \
        'experiment="/srv/medfed/tasks/chest_xray.yaml" method="fedavg" out="/srv/medfed/reports" sites="hospital-a,hospital-b,hospital-c" resume=true'

    # 6. other methods of the same experiment, then the usual report:
    flwr run medfed/integrations/flower hospitals --run-config '... method="fedprox"'
    medfed report /srv/medfed/reports/<experiment name>

Who may reach port 8000 matters: in flwr 1.42 the Fleet, Control and Runtime APIs share it, and the Control
API (``flwr run``, ``flwr supernode register``, ``flwr log``) authenticates no one unless Flower's OIDC plugin is
enabled (``FLWR_OIDC_ENABLED=1``). SuperNode authentication stops unregistered nodes, not an unregistered
operator. Restrict the port with a firewall to the hospitals' and the operator's addresses; a hospital can
also run only apps signed by keys it trusts (``flower-supernode --trusted-entities FILE``).

``flwr ls hospitals``, ``flwr log <run-id> hospitals`` and ``flwr stop <run-id> hospitals`` follow a run. For
a quick try on one machine, ``flower-superlink --insecure`` and ``flower-supernode --insecure --superlink
127.0.0.1:8000 --port 9095 --node-config ...`` (one distinct ``--port`` per SuperNode) replace steps 0-3, with
``insecure = true`` in the connection instead of ``root-certificates``.
"""

from __future__ import annotations

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

server_app = ServerApp()
client_app = ClientApp()

# Flower starts one ClientApp process per message: each handler imports only what its message needs (a query
# reads the site's tables, without torch's and MONAI's import cost; training and evaluation need them).


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    from medfed.integrations.flower.server_run import run_server

    run_server(grid, context)


@client_app.train()
def train(message: Message, context: Context) -> Message:
    from medfed.integrations.flower.client import handle_train

    return handle_train(message, context)


@client_app.evaluate()
def evaluate(message: Message, context: Context) -> Message:
    from medfed.integrations.flower.client import handle_evaluate

    return handle_evaluate(message, context)


@client_app.query()
def query(message: Message, context: Context) -> Message:
    from medfed.integrations.flower.node_site import handle_query

    return handle_query(message, context)
