#!/usr/bin/env bash
# What the ACME tests need from the machine, for .ci/run (as root, with
# Debian's archive reachable):
#
#   tests/acme/pebble.sh install   apt-get install Debian's pebble (Let's
#                                  Encrypt's ACME test server) and python3-acme
#                                  (certbot's library, for the Debian-stack run);
#   tests/acme/pebble.sh check     start pebble once on loopback and fetch its
#                                  directory, so a broken pebble fails here with
#                                  a clear message rather than in every test.
#
# The tests start a Pebble of their own per test (tests/support/pebble.py):
# loopback ports, a fresh test CA, PEBBLE_VA_ALWAYS_VALID=0, -dnsserver at the
# test's DNS server, HTTP-01 validated against GopherPost's challenge
# listener.  Nothing is left running.
set -euo pipefail

install() {
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends pebble python3-acme
}

check() {
    # Debian's python3 with the cryptography that python3-acme brings.
    /usr/bin/python3 - <<'PYTHON'
import datetime, json, os, socket, ssl, subprocess, sys, tempfile, time, urllib.request

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
import ipaddress

with tempfile.TemporaryDirectory(prefix="gopherpost-pebble.") as directory:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(key, hashes.SHA256())
    )
    certPath, keyPath = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    with open(certPath, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(keyPath, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = os.path.join(directory, "pebble.json")
    with open(config, "w") as f:
        json.dump({"pebble": {"listenAddress": f"127.0.0.1:{port}", "managementListenAddress": "",
                              "certificate": certPath, "privateKey": keyPath,
                              "httpPort": 5002, "tlsPort": 5001}}, f)
    log = open(os.path.join(directory, "pebble.log"), "w+")
    process = subprocess.Popen(["pebble", "-config", config, "-strict", "false"], stdout=log,
                               stderr=subprocess.STDOUT, env={**os.environ, "PEBBLE_VA_ALWAYS_VALID": "0"})
    context = ssl.create_default_context(cafile=certPath)
    try:
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"https://127.0.0.1:{port}/dir", context=context, timeout=5) as r:
                    directoryDocument = json.load(r)
                break
            except OSError:
                time.sleep(0.1)
        else:
            log.seek(0)
            sys.exit(f"pebble did not serve its directory on 127.0.0.1:{port}:\n{log.read()}")
    finally:
        process.terminate()
        process.wait(timeout=10)
    if "newOrder" not in directoryDocument:
        sys.exit(f"pebble's directory has no newOrder: {directoryDocument}")
    print(f"pebble serves ACME on loopback (127.0.0.1:{port}, stopped)")
PYTHON
}

case ${1:-} in
install) install ;;
check) check ;;
*)
    echo "usage: $0 install|check" >&2
    exit 2
    ;;
esac
