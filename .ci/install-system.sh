#!/usr/bin/env bash
# Installs the real peers the tests talk to (Debian packages). Idempotent:
# packages already present are not reinstalled. Never starts a daemon: the
# tests start their own instances on loopback ports.
set -euo pipefail
pkgs=(openssl curl swaks haproxy postfix dnsmasq-base redis-server dovecot-core dovecot-lmtpd maildrop spamd spamassassin python3 iproute2)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  echo "postfix postfix/mailname string mailroom.test" | debconf-set-selections
  # policy-rc.d keeps Debian from starting the daemons we install
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  rm -f /usr/sbin/policy-rc.d
fi
