#!/usr/bin/env bash
# Runs a command with the local services the project needs, started if need be:
#   - a PostgreSQL server: $TEST_DATABASE_URL if set; else one on 127.0.0.1:5432 if it answers
#     (as postgres:postgres, the usual CI service); else a private throwaway cluster under
#     .build/ (initdb/pg_ctl from Debian's postgresql package, installed if missing). As root,
#     the cluster runs as an unprivileged user, since PostgreSQL refuses to run as root.
#   - moto server (S3, Secrets Manager, Step Functions and the services its states call) from
#     the project venv, on a free loopback port (scripts/moto_server.py).
# It exports TEST_DATABASE_URL, AWS_ENDPOINT_URL, AWS_REGION, fake AWS credentials and
# TOTESYS_PYTHON (the venv's python), and for its own cluster, which runs with TLS,
# TEST_PG_CA_CERT (the CA that signed the server certificate); runs the command, then stops
# what it started.
#
# Usage: scripts/env.sh COMMAND [ARGS...]
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build="$root/.build"
mkdir -p "$build"
started_pg=""
started_moto=""
workdir=""

log() { printf '[env] %s\n' "$*" >&2; }

cleanup() {
  local status=$?
  if [[ -n "$started_moto" ]]; then
    kill "$started_moto" 2>/dev/null || true
    # Kept for a failed run only.
    if [[ "$status" == 0 ]]; then rm -f "$moto_log"; fi
  fi
  if [[ -n "$started_pg" ]]; then
    as_pg "$pg_bin/pg_ctl" -D "$workdir/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  if [[ -n "$workdir" ]]; then rm -rf "$workdir"; fi
  exit "$status"
}
trap cleanup EXIT INT TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# --- Python venv ---------------------------------------------------------------------------
"$root/scripts/venv.sh" "$root/requirements-dev.txt"
export TOTESYS_PYTHON="$root/.venv/bin/python"

# --- PostgreSQL ------------------------------------------------------------------------------
pg_user=""
as_pg() {
  if [[ -n "$pg_user" ]]; then (cd / && runuser -u "$pg_user" -- "$@"); else "$@"; fi
}

find_pg_bin() {
  local dir
  if command -v initdb >/dev/null && command -v pg_ctl >/dev/null; then
    dirname "$(readlink -f "$(command -v initdb)")"
    return
  fi
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [[ -n "$dir" && -x "$dir/initdb" ]]; then echo "$dir"; fi
}

pg_answers() {
  PGCONNECT_TIMEOUT=3 psql "$1" -qAtc 'SELECT 1' >/dev/null 2>&1
}

ensure_psql() {
  if ! command -v psql >/dev/null || [[ -z "$(find_pg_bin)" ]]; then
    log "installing PostgreSQL from Debian's packages"
    if [[ $(id -u) -ne 0 ]]; then
      log "not root: install the postgresql package yourself (sudo apt-get install postgresql)"
      exit 1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql postgresql-client >/dev/null
  fi
}

if [[ -n "${TEST_DATABASE_URL:-}" ]]; then
  log "PostgreSQL: using TEST_DATABASE_URL"
else
  ensure_psql
  default_url="postgres://postgres:postgres@127.0.0.1:5432/postgres"
  if pg_answers "$default_url"; then
    log "PostgreSQL: using the server on 127.0.0.1:5432"
    export TEST_DATABASE_URL="$default_url"
  else
    pg_bin=$(find_pg_bin)
    workdir=$(mktemp -d "$build/pg.XXXXXX")
    if [[ $(id -u) -eq 0 ]]; then
      pg_user=totesys-pg
      id "$pg_user" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$pg_user"
      chown "$pg_user" "$workdir"
      chmod 755 "$build"
      if ! runuser -u "$pg_user" -- test -w "$workdir"; then
        # The checkout is somewhere that user cannot reach (under /root, say).
        rm -rf "$workdir"
        workdir=$(mktemp -d /tmp/totesys-pg.XXXXXX)
        chown "$pg_user" "$workdir"
      fi
    fi
    port=$(free_port)
    log "PostgreSQL: starting a private cluster on 127.0.0.1:$port (${pg_user:-$(id -un)})"
    as_pg "$pg_bin/initdb" -D "$workdir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
    ssl_opts=""
    if command -v openssl >/dev/null; then
      # A throwaway CA and a server certificate for 127.0.0.1, so the TLS paths are tested.
      tls="$workdir/tls"
      mkdir -p "$tls"
      openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=totesys test CA" \
        -keyout "$tls/ca.key" -out "$tls/ca.crt" 2>/dev/null
      openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
        -keyout "$tls/server.key" -out "$tls/server.csr" 2>/dev/null
      printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n' >"$tls/ext"
      openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.crt" -CAkey "$tls/ca.key" \
        -CAcreateserial -days 2 -extfile "$tls/ext" -out "$tls/server.crt" 2>/dev/null
      chmod 600 "$tls/server.key"
      if [[ -n "$pg_user" ]]; then chown -R "$pg_user" "$tls"; fi
      ssl_opts="-c ssl=on -c ssl_cert_file=$tls/server.crt -c ssl_key_file=$tls/server.key"
      export TEST_PG_CA_CERT="$tls/ca.crt"
    fi
    as_pg "$pg_bin/pg_ctl" -D "$workdir/data" -l "$workdir/server.log" -w -t 60 start \
      -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$workdir \
          -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200 \
          $ssl_opts" >/dev/null
    started_pg=1
    export TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
  fi
fi

# --- moto server ---------------------------------------------------------------------------
if [[ -z "${AWS_ENDPOINT_URL:-}" ]]; then
  moto_port=$(free_port)
  moto_log="$build/moto-$moto_port.log"
  # MOTO_PORT: where moto's Step Functions executor calls Lambda, DynamoDB and SNS.
  MOTO_PORT="$moto_port" "$root/.venv/bin/python" "$root/scripts/moto_server.py" \
    -H 127.0.0.1 -p "$moto_port" >"$moto_log" 2>&1 &
  started_moto=$!
  export AWS_ENDPOINT_URL="http://127.0.0.1:$moto_port"
  # For make bench, which reports the CPU time moto spends beside the Lambdas'.
  export MOTO_PID=$started_moto
  for _ in $(seq 1 100); do
    if python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1]+'/moto-api/', timeout=1)" "$AWS_ENDPOINT_URL" 2>/dev/null; then
      break
    fi
    sleep 0.1
  done
  log "moto: $AWS_ENDPOINT_URL"
fi
export AWS_REGION="${AWS_REGION:-eu-west-2}"
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-testing}"
export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-testing}"
# Keep the SDK away from IMDS and shared config on developer machines.
export AWS_EC2_METADATA_DISABLED=true

"$@"
