#!/usr/bin/env bash
# The Python SDK over TLS with bearer tokens: makes a throwaway CA and server certificate
# with openssl, points gRPC's default roots at the CA (GRPC_DEFAULT_SSL_ROOTS_FILE_PATH,
# the SDK's `secure_channel=True` uses the default roots), and runs the tests, which
# start a sidecar with --tls-cert/--tls-key/--auth-tokens-file.
#   PY_VENV     virtualenv to create/use (default: <repo>/.venv-e2e, shared with tests/python)
#   SIDECAR_BIN sidecar binary (default: target/release, then target/debug)
#   PYTHON      interpreter used to create the venv (default: python3)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${PY_VENV:-$root/.venv-e2e}"

# shellcheck source=tests/pysuite.sh
. "$root/tests/pysuite.sh"
python_venv "$venv" "$root/tests/python/requirements.txt"

certs="$(mktemp -d)"
trap 'rm -rf "$certs"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -keyout "$certs/ca.key" -out "$certs/ca.pem" -subj "/CN=durabletask test CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$certs/server.key" -out "$certs/server.csr" -subj "/CN=localhost" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$certs/ext"
openssl x509 -req -in "$certs/server.csr" -CA "$certs/ca.pem" -CAkey "$certs/ca.key" \
    -CAcreateserial -days 1 -extfile "$certs/ext" -out "$certs/server.pem" 2>/dev/null

export TLS_TEST_DIR="$certs"
export GRPC_DEFAULT_SSL_ROOTS_FILE_PATH="$certs/ca.pem"
cd "$root"
set +e
"$venv/bin/python" -m pytest "$here" -q -p no:cacheprovider --timeout=120 "$@"
status=$?
set -e
exit $status
