"""Deephaven servers and client helpers, launched for resources and sandboxes alike.

One module per responsibility: `launch` (a server and our session on it: the handle,
readiness, session recreation, port retry), `server` (a local server: its command and
its PSK handover), `container` (a server container and its `deephaven.prop`), `output`
(a server's output, redacted and watched), `client` (the daemon's side of a client
helper). `worker.py` and `enterprise_worker.py` are the helpers themselves, and
`script_capture.py` the program a server's console runs a script in to capture its
output: standalone programs run under other interpreters, which import nothing from
this package.

Importing this package loads no Deephaven, gRPC or Arrow library: only the helpers do.
"""
