#!/bin/sh
# First start of the compose database only (docker-entrypoint-initdb.d): a self-signed
# certificate in the data directory, and TLS on from the next start, so keel's
# KEEL_DATABASE_SSLMODE=require is met. Replace server.crt/server.key with your own to verify.
set -eu
cd "$PGDATA"
openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=postgres" \
    -keyout server.key -out server.crt 2>/dev/null
chmod 600 server.key
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -c "ALTER SYSTEM SET ssl = on"
