"""Run pyftpdlib with several users: python -m testbed.services.pyftpd_main --port P
--root DIR --user name:password [--user ...] [--passive-ports 60000-60100] [--debug].

pyftpdlib's own command line takes one user; scenarios need several (two users must never
share an SSH connection)."""

from __future__ import annotations

import argparse
import logging

from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.servers import FTPServer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--root", required=True)
    parser.add_argument("--user", action="append", default=[], help="name:password")
    parser.add_argument("--passive-ports", default="")
    parser.add_argument("--debug", action="store_true", help="log every command")
    parser.add_argument("--permit-foreign-addresses", action="store_true",
                        help="accept PORT/EPRT to another host (RFC 2577 says refuse)")
    parser.add_argument("--masquerade-address", default="",
                        help="announce this address in 227 replies (a server behind NAT)")
    args = parser.parse_args()
    authorizer = DummyAuthorizer()
    for spec in args.user:
        name, _, password = spec.partition(":")
        authorizer.add_user(name, password, args.root, perm="elradfmwMT")
    handler = FTPHandler
    handler.authorizer = authorizer
    handler.permit_foreign_addresses = args.permit_foreign_addresses
    if args.masquerade_address:
        handler.masquerade_address = args.masquerade_address
    if args.passive_ports:
        low, high = (int(p) for p in args.passive_ports.split("-"))
        handler.passive_ports = range(low, high + 1)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO)
    FTPServer((args.host, args.port), handler).serve_forever()


if __name__ == "__main__":
    main()
