#!/bin/bash
# SPDX-License-Identifier: BSD-2-Clause
#
# mta-postfix.sh - the shared scenario list (scenarios.sh) through a real
# Postfix: a private instance on loopback (lib.sh), SASL through a stand-in
# for Dovecot's auth socket, a private Redis, one milter.
#
# Needs root (Postfix's master), postfix, redis-server, python3; skips (77)
# without them.  TAP on stdout.  Runs in about 15 s.

# shellcheck source-path=SCRIPTDIR source=scenarios.sh
. "$(dirname "${BASH_SOURCE[0]}")/scenarios.sh"

mta_setup postfix
redis_start || pm_bail "cannot start Redis"
mta_start || pm_bail "cannot start Postfix"
mta_auth_start || pm_bail "cannot start the stand-in auth service"

scenarios_run

assert_milter_stop "SIGTERM: the milter exits with status 0 after every scenario"
mta_assert_no_sanitizer_reports
pm_finish
