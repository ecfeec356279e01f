"""moto's server in a process of its own: ``python -m bench.moto_process``.

Prints its endpoint (``http://127.0.0.1:PORT``, a free port) on the first line of stdout, then
serves until its stdin is closed. On its own process moto does not share a GIL with the
sandbox, the workers' harness or the benchmark, as AWS shares nothing with UltraCart.
"""

from __future__ import annotations

import sys


def main() -> None:
    from moto.server import ThreadedMotoServer

    from bench.common import patch_moto_sqs_scans, quiet_servers
    from devstack.motolock import serialize_dynamodb

    quiet_servers()
    serialize_dynamodb()
    patch_moto_sqs_scans()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    print(f"http://{host}:{port}", flush=True)
    try:
        sys.stdin.read()  # returns when the parent closes our stdin (or exits)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
