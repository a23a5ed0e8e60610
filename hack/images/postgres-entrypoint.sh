#!/bin/sh
# Creates the database cluster in $PGDATA on the first start (a
# subdirectory of the volume: initdb must own it and set it to 0700), with
# the password of $POSTGRES_PASSWORD and the database $POSTGRES_DB, then runs
# PostgreSQL in the foreground. The root filesystem may be read-only: only
# $PGDATA, /var/run/postgresql and /tmp are written.
set -eu
if [ ! -s "$PGDATA/PG_VERSION" ]; then
	pwfile=$(mktemp)
	printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
	initdb --pgdata="$PGDATA" --username=postgres --pwfile="$pwfile" \
		--auth-local=trust --auth-host=scram-sha-256 --locale=C.UTF-8 --encoding=UTF8 >/dev/null
	rm -f "$pwfile"
	echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
	echo "CREATE DATABASE \"${POSTGRES_DB:-postgres}\"" | postgres --single -D "$PGDATA" postgres >/dev/null
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' -c unix_socket_directories=/var/run/postgresql
