"""The C{cpro-witness} command: run a witness server (docs/witness.md).

    cpro-witness [--listen HOST:PORT]... [--tls-listen HOST:PORT]...
                 [--tls-cert FILE --tls-key FILE] [--keys FILE]
                 [--forget-after S] [--stale-after S] [--log FILE] [--ready-file FILE]

Without any --listen or --tls-listen it serves HTTP on 127.0.0.1:8080 only:
nothing listens on all addresses unless asked (0.0.0.0:80 serves the
original's default). Exit codes as the daemon's (L{cpro.exitcodes}): 2 bad
options, 3 unusable keys, certificate or key file, 5 address in use, 6
permission denied (a port below 1024 without the right).
"""

import argparse
import errno
import json
import os
import sys
import time

from cpro import exitcodes
from cpro.protocols import witness as wp

DEFAULT_LISTEN = "127.0.0.1:8080"
MAX_KEYS_FILE = 1024 * 1024
MAX_KEY_FILE = 64 * 1024  # as the daemon's keyfile limit, order of magnitude


class SetupError(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


def parse_endpoint(text):
    """(host, port) of C{HOST:PORT} or C{[V6]:PORT}.

    @raise ValueError: anything else.
    """
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{text!r}: expected HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{text!r}: write an IPv6 address in brackets, [::1]:8080")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r}: bad port")
    return host, int(port)


def load_keys(path):
    """{cluster name: key} from a keys file.

    One cluster per line: C{NAME KEY} where KEY is the rest of the line (the
    text of the cluster's <key>), or C{NAME @FILE} to read the key from the
    cluster's keyfile (stripped, as the daemon does). Blank lines and lines
    starting with # are ignored.

    @raise SetupError: unreadable file, bad line, duplicate or empty key.
    """
    text = _read(path, MAX_KEYS_FILE, "keys file").decode("utf-8", "replace")
    keys = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, rest = line.partition(" ")
        rest = rest.strip()
        where = f"{path} line {number}"
        if not wp.valid_name(name):
            raise SetupError(exitcodes.CONFIG_INVALID, f"{where}: invalid cluster name {name!r}")
        if name in keys:
            raise SetupError(exitcodes.CONFIG_INVALID, f"{where}: cluster {name} given twice")
        if rest.startswith("@"):
            keyfile = os.path.join(os.path.dirname(path), rest[1:].strip())
            key = _read(keyfile, MAX_KEY_FILE, f"keyfile of cluster {name}").strip()
        else:
            key = rest.encode("utf-8")
        if not key:
            raise SetupError(exitcodes.CONFIG_INVALID, f"{where}: empty key for cluster {name}")
        keys[name] = key
    if not keys:
        raise SetupError(exitcodes.CONFIG_INVALID, f"{path}: no cluster key")
    return keys


def _read(path, limit, what):
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise SetupError(exitcodes.CONFIG_INVALID,
                         f"cannot read the {what} {path}: {e.strerror or e}") from None
    if len(data) > limit:
        raise SetupError(exitcodes.CONFIG_INVALID, f"the {what} {path} is larger than {limit} bytes")
    return data


def tls_options(cert_path, key_path):
    """Server TLS options from a PEM certificate (+ chain) file and a PEM key file."""
    from twisted.internet import ssl

    cert_data = _read(cert_path, MAX_KEYS_FILE, "TLS certificate")
    key_data = _read(key_path, MAX_KEYS_FILE, "TLS key")
    try:
        blocks = [b"-----BEGIN CERTIFICATE-----" + part
                  for part in cert_data.split(b"-----BEGIN CERTIFICATE-----")[1:]]
        if not blocks:
            raise ValueError(f"no PEM certificate in {cert_path}")
        certificate = ssl.PrivateCertificate.loadPEM(blocks[0] + b"\n" + key_data)
        chain = [ssl.Certificate.loadPEM(b).original for b in blocks[1:]]
        return ssl.CertificateOptions(privateKey=certificate.privateKey.original,
                                      certificate=certificate.original,
                                      extraCertChain=chain or None)
    except SetupError:
        raise
    except Exception as e:
        raise SetupError(exitcodes.CONFIG_INVALID,
                         f"unusable TLS certificate or key ({cert_path}, {key_path}): {e}") from None


def build_parser():
    p = argparse.ArgumentParser(
        prog="cpro-witness",
        description="Witness server for cpro clusters (witness heartbeat, httpnp target).")
    p.add_argument("--listen", action="append", default=[], metavar="HOST:PORT",
                   help=f"serve HTTP here (repeatable; default {DEFAULT_LISTEN} when neither "
                        "--listen nor --tls-listen is given)")
    p.add_argument("--tls-listen", action="append", default=[], metavar="HOST:PORT",
                   help="serve HTTPS here (repeatable; needs --tls-cert and --tls-key)")
    p.add_argument("--tls-cert", metavar="FILE", help="PEM certificate (then its chain)")
    p.add_argument("--tls-key", metavar="FILE", help="PEM private key")
    p.add_argument("--keys", metavar="FILE",
                   help="cluster keys: serve only these clusters and require signed requests "
                        "(lines 'NAME KEY' or 'NAME @KEYFILE'); without it any cluster name is "
                        "trusted")
    p.add_argument("--forget-after", type=float, default=3600.0, metavar="SECONDS",
                   help="forget a server silent this long (default 3600)")
    p.add_argument("--stale-after", type=float, default=90.0, metavar="SECONDS",
                   help="accept an older incarnation of a server silent this long "
                        "(default 90)")
    p.add_argument("--log", metavar="FILE", help="log here instead of standard error")
    p.add_argument("--ready-file", metavar="FILE",
                   help="once listening, write the bound ports here as JSON "
                        '{"http": [...], "https": [...]}')
    return p


def check_options(parser, opts):
    """(http endpoints, https endpoints); exits through the parser on a bad option."""
    try:
        http = [parse_endpoint(e) for e in opts.listen]
        https = [parse_endpoint(e) for e in opts.tls_listen]
    except ValueError as e:
        parser.error(str(e))
    if not http and not https:
        http = [parse_endpoint(DEFAULT_LISTEN)]
    if https and not (opts.tls_cert and opts.tls_key):
        parser.error("--tls-listen needs --tls-cert and --tls-key")
    if (opts.tls_cert or opts.tls_key) and not https:
        parser.error("--tls-cert/--tls-key given without --tls-listen")
    if not opts.forget_after > 0 or not opts.stale_after > 0:
        parser.error("--forget-after and --stale-after must be positive")
    return http, https


def listen(reactor, site, http, https, tls):
    """Listen on every endpoint; the ports (all or none).

    @raise SetupError: address in use or not local (5), permission denied (6).
    """
    from twisted.internet import error

    ports = []
    try:
        for (host, port), secure in [(e, False) for e in http] + [(e, True) for e in https]:
            if secure:
                ports.append(("https", reactor.listenSSL(port, site, tls, interface=host)))
            else:
                ports.append(("http", reactor.listenTCP(port, site, interface=host)))
    except error.CannotListenError as e:
        for _, p in ports:
            p.stopListening()
        code = (exitcodes.PERMISSION_DENIED
                if getattr(e.socketError, "errno", None) in (errno.EACCES, errno.EPERM)
                else exitcodes.ADDRESS_IN_USE)
        raise SetupError(code, f"cannot listen on {e.interface}:{e.port}: {e.socketError}") from None
    return ports


def main(argv=None):
    parser = build_parser()
    opts = parser.parse_args(argv)
    http, https = check_options(parser, opts)

    from twisted.internet import reactor
    from twisted.logger import Logger, globalLogBeginner, textFileLogObserver

    from cpro.witness.server import WitnessState, make_site

    log_file = open(opts.log, "a", buffering=1) if opts.log else sys.stderr
    globalLogBeginner.beginLoggingTo([textFileLogObserver(log_file)], redirectStandardIO=False)
    log = Logger("cpro.witness")
    try:
        keys = load_keys(opts.keys) if opts.keys else None
        tls = tls_options(opts.tls_cert, opts.tls_key) if https else None
        state = WitnessState(time.monotonic, keys=keys, forget_after=opts.forget_after,
                             stale_after=opts.stale_after)
        site = make_site(state, reactor)
        ports = listen(reactor, site, http, https, tls)
    except SetupError as e:
        log.error("cpro-witness cannot start: {error}", error=str(e))
        print(f"cpro-witness: {e}", file=sys.stderr)
        return e.code
    bound = {"http": [], "https": []}
    for scheme, port in ports:
        address = port.getHost()
        bound[scheme].append(address.port)
        log.info("cpro-witness serving {scheme} on {host}:{port}",
                 scheme=scheme, host=address.host, port=address.port)
    log.info("clusters: {which}", which=(", ".join(sorted(keys)) + " (signed requests only)")
             if keys else "any name (no keys: trust on name)")
    if opts.ready_file:
        # Written whole, then renamed: a reader never sees half of it.
        tmp = opts.ready_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump(bound, f)
        os.replace(tmp, opts.ready_file)
    reactor.run()
    log.info("cpro-witness stopped")
    return exitcodes.OK


if __name__ == "__main__":
    sys.exit(main())
