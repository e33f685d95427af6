"""Benchmark the hot paths against the gRPC ceiling, gateways on a schedule, the nightly work.

    python -m scripts.bench                 # full run (~15 min), writes docs/benchmarks.md
    python -m scripts.bench --quick         # ~40 s smoke run at concurrency 1, prints only
    python -m scripts.bench watch           # decisions pushed to the control plane
    python -m scripts.bench --help

One file per job:

* `ceilings`: the no-op servers; the ceiling is a grpc.aio server of the same
  model as ours answering with a response ours gave, a thread-pool one runs
  beside it for the record;
* `load`: the load generator, closed loop at a fixed concurrency and open
  loop on a fixed schedule, a subprocess pinned to its own CPU;
* `http_load`: the Admin API's load generator, `GET /api/license` over
  keep-alive HTTP/1.1 connections, plaintext and HTTPS;
* `runner`: starts the real server (`python -m licensing_server`, a license installed)
  and the ceilings, pinned to one CPU, and drives them in interleaved rounds;
* `offline`: the nightly evaluation of 10,000 instances and the storage per
  instance-day, each in a process of its own;
* `report`: the markdown with the method, the figures and the targets;
* `watch`: the WatchEnforcement run (`python -m scripts.bench watch`):
  LocalDecider against the gRPC round trip, propagation of an Upload to a
  subscriber, CheckWrite with many idle watchers; `watchers` holds those;
* `cli`: the command line and the internal subcommands (`noop-server`,
  `load`, `load-http`, `open-loop`, `nightly-fill`, `nightly-eval`, `storage`,
  `hold-watchers`) that the runner spawns.
"""
