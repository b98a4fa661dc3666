#!/bin/sh
# Complement starts this at every container start (blueprints are committed
# and started again): it issues a TLS certificate for $SERVER_NAME signed by
# Complement's CA, writes the config and runs Hearth. The database in /data
# is kept between starts. See docs/COMPLEMENT.md.
set -eu

SERVER_NAME="${SERVER_NAME:-hs1}"
CA_DIR=/complement/ca
TLS_DIR=/etc/hearth/tls
CONFIG=/etc/hearth/hearth.toml

case "$SERVER_NAME" in
  *[!A-Za-z0-9.:_-]*) echo "entrypoint: unusable SERVER_NAME '$SERVER_NAME'" >&2; exit 1 ;;
esac

# Complement copies its CA into the container before starting it. Without it
# (a manual `docker run`), make a throwaway one so the image still starts.
if [ ! -f "$CA_DIR/ca.crt" ] || [ ! -f "$CA_DIR/ca.key" ]; then
  echo "entrypoint: no $CA_DIR/ca.crt and ca.key (not run by Complement?): making a throwaway CA" >&2
  mkdir -p "$CA_DIR"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=Throwaway test CA" \
    -keyout "$CA_DIR/ca.key" -out "$CA_DIR/ca.crt" 2>/dev/null
fi

# The leaf certificate. rustls checks the subjectAltName, not the CN.
host="${SERVER_NAME%:*}"
mkdir -p "$TLS_DIR"
cat > "$TLS_DIR/ext.cnf" <<EOF
basicConstraints = CA:FALSE
keyUsage = digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:$host
EOF
openssl req -new -newkey rsa:2048 -nodes -subj "/CN=$host" \
  -keyout "$TLS_DIR/server.key" -out "$TLS_DIR/server.csr" 2>/dev/null
openssl x509 -req -sha256 -days 2 -in "$TLS_DIR/server.csr" \
  -CA "$CA_DIR/ca.crt" -CAkey "$CA_DIR/ca.key" -set_serial "0x$(openssl rand -hex 15)" \
  -extfile "$TLS_DIR/ext.cnf" -out "$TLS_DIR/server.crt" 2>/dev/null
rm -f "$TLS_DIR/server.csr" "$TLS_DIR/ext.cnf"

# server_name is a top-level key, so it goes before the template's tables.
{
  printf 'server_name = "%s"\n\n' "$SERVER_NAME"
  cat /etc/hearth/complement.toml
} > "$CONFIG"

exec /usr/local/bin/hearth --config "$CONFIG" serve
