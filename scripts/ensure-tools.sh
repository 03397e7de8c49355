#!/usr/bin/env bash
# Make sure the non-Python tools the test suite drives are present:
#   java (17+) and mvn: the real Kafka broker (jars from Maven Central)
#   go: validates docker-compose.yml with compose-go
#   promtool + prometheus: alert rules, /metrics lint, dashboard queries against a real Prometheus
#   initdb + postgres: the PostgreSQL store's tests
# Installs Debian's `prometheus` package when it is missing and we may use apt-get.
set -euo pipefail

missing=()
for tool in java mvn go; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian package prometheus (promtool, prometheus) ..." >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends prometheus >/dev/null; }
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus >/dev/null
  else
    missing+=("promtool/prometheus (Debian: apt-get install prometheus)")
  fi
fi
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  missing+=("PostgreSQL server binaries (Debian: apt-get install postgresql)")
fi
if [ ${#missing[@]} -gt 0 ]; then
  printf 'missing tools needed by the tests:\n' >&2
  printf '  - %s\n' "${missing[@]}" >&2
  exit 1
fi
