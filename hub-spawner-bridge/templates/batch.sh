#!/bin/bash
{{!directives}}
# TRE session {{session_id}}: user {{user}}, project {{project}}.
# The job agent collects the session's secrets from the bridge with the one-time token on its
# standard input, starts the container and bridges the hub to it; it exits when the session ends.
set -euo pipefail
umask 077
export PATH=/usr/local/bin:/usr/bin:/bin
exec {{!agent_command}} run --bridge {{bridge_url}} --session {{session_id}} <<'TRE_PICKUP'
{{!pickup_token}}
TRE_PICKUP
